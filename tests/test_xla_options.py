"""The CPU compile options: the programs that use them really drop YNNPACK, compute the same
thing, and a jaxlib that refuses them still runs (with its defaults)."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ichflax.xla import options as xla_options

YNN = "__ynn_fusion"  # how jaxlib 0.10 marks a fusion handed to YNNPACK in the compiled HLO


def _conv_relu(x, w):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y).mean(axis=(1, 2))


@pytest.fixture
def conv_inputs():
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.float32),
          jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32))


def test_cpu_programs_drop_ynnpack_and_compute_the_same(conv_inputs):
  assert jax.default_backend() == "cpu"
  assert xla_options.compiler_options() == xla_options.CPU_OPTIONS
  default = jax.jit(_conv_relu).lower(*conv_inputs).compile()
  tuned = xla_options.jit(_conv_relu).lower(*conv_inputs).compile()
  if YNN not in default.as_text():
    pytest.skip("this jaxlib does not use YNNPACK fusions on this CPU: nothing to drop")
  assert YNN not in tuned.as_text()
  # Measured: max |difference| 0 to 5e-7 on outputs of size ~1 (summation order only).
  np.testing.assert_allclose(tuned(*conv_inputs), default(*conv_inputs), rtol=1e-5, atol=1e-6)


def test_a_jaxlib_that_refuses_the_option_compiles_with_its_defaults(monkeypatch, caplog,
                                                                     conv_inputs):
  xla_options.compiler_options.cache_clear()
  monkeypatch.setattr(xla_options, "CPU_OPTIONS", {"xla_cpu_option_no_jaxlib_has": ""})
  try:
    with caplog.at_level(logging.WARNING, logger="ichflax.xla.options"):
      assert xla_options.compiler_options() is None
      out = xla_options.jit(_conv_relu)(*conv_inputs)
    assert "does not take the CPU compile options" in caplog.text
    np.testing.assert_allclose(out, jax.jit(_conv_relu)(*conv_inputs), rtol=1e-5, atol=1e-6)
  finally:
    xla_options.compiler_options.cache_clear()  # the next caller asks with the real options


def test_donation_passes_through(conv_inputs):
  step = xla_options.jit(lambda x, w: (x * 2, w), donate_argnums=(0,))
  x = jnp.array(conv_inputs[0])
  step(x, conv_inputs[1])
  assert x.is_deleted()
