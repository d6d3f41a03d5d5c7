"""Compile options per program: on a CPU, XLA's own convolutions instead of YNNPACK's.

jaxlib 0.10 hands convolutions and the elementwise work around them to YNNPACK on CPU by
default. On the 2-core EPYC dev box (AVX2) that made a batch-1 ResNet50 forward at 224 px
slower than torchvision eager, and XLA's own convolutions faster than both (figures, machine
and command: docs/benchmarks.md, "CPU serving"). The option is set per jitted program, not in
XLA_FLAGS, so it touches nothing else in the process and a jaxlib that does not know it (the
option is experimental) compiles with its defaults instead of failing to start.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import jax

log = logging.getLogger(__name__)

# An empty list overrides the default set of YNNPACK fusion types: none.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options() -> dict[str, str] | None:
  """`CPU_OPTIONS` when the default backend is a CPU and this jaxlib takes them, else None.

  Asked once per process with a one-op program, so a refused option costs a log line, not a
  failed compile of the real model.
  """
  if jax.default_backend() != "cpu":
    return None
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS)(1)
  except jax.errors.JaxRuntimeError as e:
    log.warning("this jaxlib does not take the CPU compile options %s (%s): compiling with its "
                "defaults, slower on CPU", CPU_OPTIONS, e)
    return None
  return dict(CPU_OPTIONS)


def jit(fn: Callable, **jit_kwargs) -> Callable:
  """`jax.jit(fn, **jit_kwargs)` compiled with `compiler_options()`."""
  return jax.jit(fn, compiler_options=compiler_options(), **jit_kwargs)
