"""Convert official ImageNet weights (Keras h5, torchvision state dicts) to orbax backbones.

ResNet50 comes from Keras (v1) or torchvision (v1.5); EfficientNet-B0 and ConvNeXt-Tiny from
torchvision, whose architecture is recognised from the state dict's layer names.

Every tensor is matched by name and shape against our ResNet50 before anything is written, so a
wrong file is refused with the first layer that does not fit, and the checkpoint directory
appears only once complete (written to a temporary sibling, then renamed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ichflax.models import backbones, convnext, efficientnet
from ichflax.models.classifier import reseed
from ichflax.models.resnet import STAGE_BLOCKS
from ichflax.spec import backbone_named

META_FILE = "ichflax_backbone.json"
STATE_DIR = "state"
# Layers a reference file may carry that a backbone does not use (the ImageNet classifier).
IGNORED_LAYERS = {"keras": {"predictions"},
                  "torchvision": {"fc", "classifier.0", "classifier.1", "classifier.2"}}
IGNORED_TENSORS = {"num_batches_tracked"}
# Reference tensor name -> our nnx variable name, per layer kind.
TENSOR_NAMES = {
    "keras": {"conv": {"kernel": "kernel", "bias": "bias"},
              "bn": {"gamma": "scale", "beta": "bias", "moving_mean": "mean",
                     "moving_variance": "var"}},
    "torchvision": {"conv": {"weight": "kernel"},
                    "conv_bias": {"weight": "kernel", "bias": "bias"},
                    "linear": {"weight": "kernel", "bias": "bias"},
                    "bn": {"weight": "scale", "bias": "bias", "running_mean": "mean",
                           "running_var": "var"},
                    "ln": {"weight": "scale", "bias": "bias"},
                    "layer_scale": {"layer_scale": "layer_scale"}},
}
# A torchvision state dict's architecture, from a layer only it has.
SIGNATURES = {"layer4.2.conv3": "resnet50", "features.7.0.block.3.1": "efficientnet_b0",
              "features.7.2.block.5": "convnext_tiny"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


class ConversionError(ValueError):
  """The input is not a weights file we can convert; the message says why."""


@dataclasses.dataclass(frozen=True)
class Layer:
  """One weighted layer of our backbone and its name in each reference (None: not there)."""

  path: tuple[str | int, ...]
  kind: str  # a key of TENSOR_NAMES[variant]
  keras: str | None
  torchvision: str


def layer_table(arch: str = "resnet50") -> list[Layer]:
  """Every weighted layer of a backbone in network order, with its references' names."""
  return {"resnet50": _resnet50, "efficientnet_b0": _efficientnet_b0,
          "convnext_tiny": _convnext_tiny}[arch]()


def _resnet50() -> list[Layer]:
  table = [Layer(("conv1",), "conv", "conv1_conv", "conv1"),
           Layer(("bn1",), "bn", "conv1_bn", "bn1")]
  for s, blocks in enumerate(STAGE_BLOCKS):
    for b in range(blocks):
      ours, keras, torch = (f"layer{s + 1}", b), f"conv{s + 2}_block{b + 1}", f"layer{s + 1}.{b}"
      for i in (1, 2, 3):
        table.append(Layer(ours + (f"conv{i}",), "conv", f"{keras}_{i}_conv", f"{torch}.conv{i}"))
        table.append(Layer(ours + (f"bn{i}",), "bn", f"{keras}_{i}_bn", f"{torch}.bn{i}"))
      if b == 0:
        table.append(Layer(ours + ("conv_proj",), "conv", f"{keras}_0_conv",
                           f"{torch}.downsample.0"))
        table.append(Layer(ours + ("bn_proj",), "bn", f"{keras}_0_bn", f"{torch}.downsample.1"))
  return table


def _torch_only(path: tuple, kind: str, name: str) -> Layer:
  return Layer(path, kind, None, name)


def _efficientnet_b0() -> list[Layer]:
  """torchvision: features.0 stem, features.1-7 MBConv stages (block.i sub-layers), features.8."""
  table = [_torch_only(("stem",), "conv", "features.0.0"),
           _torch_only(("bn_stem",), "bn", "features.0.1")]
  for i, stage in enumerate(efficientnet.STAGES):
    for j in range(stage.blocks):
      ours, torch = ("stages", i, j), f"features.{i + 1}.{j}.block"
      parts = [] if stage.expand == 1 else [("expand", "bn_expand")]
      parts += [("depthwise", "bn_depthwise"), ("se_reduce", "se_expand"),
                ("project", "bn_project")]
      for k, (a, b) in enumerate(parts):
        if a == "se_reduce":  # torchvision's SqueezeExcitation: fc1, fc2 (convs with bias)
          table += [_torch_only(ours + (a,), "conv_bias", f"{torch}.{k}.fc1"),
                    _torch_only(ours + (b,), "conv_bias", f"{torch}.{k}.fc2")]
        else:  # Conv2dNormActivation: 0 conv, 1 BatchNorm
          table += [_torch_only(ours + (a,), "conv", f"{torch}.{k}.0"),
                    _torch_only(ours + (b,), "bn", f"{torch}.{k}.1")]
  return table + [_torch_only(("top_conv",), "conv", "features.8.0"),
                  _torch_only(("bn_top",), "bn", "features.8.1")]


def _convnext_tiny() -> list[Layer]:
  """torchvision: features.0 stem, odd features stages of CNBlocks, even ones downsamples."""
  table = [_torch_only(("stem",), "conv_bias", "features.0.0"),
           _torch_only(("ln_stem",), "ln", "features.0.1")]
  for s, depth in enumerate(convnext.DEPTHS):
    if s:
      down = ("downsamples", s - 1)
      table += [_torch_only(down + ("ln",), "ln", f"features.{2 * s}.0"),
                _torch_only(down + ("conv",), "conv_bias", f"features.{2 * s}.1")]
    for j in range(depth):
      ours, torch = ("stages", s, j), f"features.{2 * s + 1}.{j}"
      table += [_torch_only(ours + ("depthwise",), "conv_bias", f"{torch}.block.0"),
                _torch_only(ours + ("ln",), "ln", f"{torch}.block.2"),
                _torch_only(ours + ("fc1",), "linear", f"{torch}.block.3"),
                _torch_only(ours + ("fc2",), "linear", f"{torch}.block.5"),
                _torch_only(ours, "layer_scale", torch)]
  return table


def _text(name) -> str:
  return name.decode() if isinstance(name, bytes) else str(name)


def _read_keras_h5(path: Path) -> dict[str, dict[str, np.ndarray]]:
  """Legacy Keras h5 (the official notop file, or Keras 3's legacy writer), ':0' or not."""
  with h5py.File(path, "r") as f:
    root = f.get("model_weights", f)
    if "layer_names" not in root.attrs:
      if "layers" in root:
        raise ConversionError(
            f"{path.name} is a Keras 3 '.weights.h5' file, whose tensors are named by layer "
            "class, not by ResNet50 layer; convert the official notop file instead "
            "(python -m ichflax.weights fetch keras)")
      raise ConversionError(f"{path.name} is an HDF5 file without Keras layer names; expected "
                            "the Keras ResNet50 weights file (legacy h5 layout)")
    layers = {}
    for name in map(_text, root.attrs["layer_names"]):
      if name not in root:
        raise ConversionError(f"layer {name!r} is listed in {path.name} but has no weights "
                              "group: the file is damaged; fetch it again")
      group = root[name]
      tensors = {}
      for wname in map(_text, group.attrs.get("weight_names", [])):
        tensors[wname.rsplit("/", 1)[-1].removesuffix(":0")] = np.asarray(group[wname])
      if tensors:
        layers[name] = tensors
  return layers


def _group_state_dict(state: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """'layer1.0.conv1.weight' -> {'layer1.0.conv1': {'weight': ...}}."""
  layers: dict[str, dict[str, np.ndarray]] = {}
  for key, value in state.items():
    layer, _, tensor = key.rpartition(".")
    if tensor not in IGNORED_TENSORS:
      layers.setdefault(layer, {})[tensor] = np.asarray(value)
  return layers


def _read_torch(path: Path) -> dict[str, dict[str, np.ndarray]]:
  try:
    import torch
  except ImportError:
    raise ConversionError(
        f"{path.name} is a PyTorch pickle (.pth), which needs torch to read; install torch, or "
        "on a machine that has it save the state dict as .safetensors "
        "(safetensors.torch.save_file(torch.load(path), 'resnet50.safetensors')) and convert "
        "that") from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, dict):
    raise ConversionError(f"{path.name} holds a {type(state).__name__}, not a state dict")
  return _group_state_dict({k: v.float().numpy() for k, v in state.items()})


def _read_safetensors(path: Path) -> dict[str, dict[str, np.ndarray]]:
  from safetensors.numpy import load_file
  return _group_state_dict(load_file(path))


def detect_arch(layers: dict[str, dict[str, np.ndarray]], variant: str) -> str:
  """The backbone a reference's layers belong to (Keras files: ResNet50)."""
  if variant == "keras":
    return "resnet50"
  for layer, arch in SIGNATURES.items():
    if layer in layers:
      return arch
  raise ConversionError(f"the state dict's layers ({', '.join(sorted(layers)[:3])}, ...) are "
                        f"none of {', '.join(backbones.BACKBONES)} as torchvision names them; "
                        "is this another architecture?")


def read_reference(path: Path) -> tuple[str, str, dict[str, dict[str, np.ndarray]]]:
  """(format, variant, {layer: {tensor: array}}) of a weights file, detected from its bytes."""
  with open(path, "rb") as f:
    head = f.read(16)
  if head.startswith(_HDF5_MAGIC):
    fmt, variant, reader = "keras-h5", "keras", _read_keras_h5
  elif head.startswith(_ZIP_MAGIC):
    fmt, variant, reader = "torch-pth", "torchvision", _read_torch
  elif len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header size, then JSON
    fmt, variant, reader = "safetensors", "torchvision", _read_safetensors
  else:
    raise ConversionError(
        f"{path.name} is not a format we convert: expected the Keras notop .h5, a torchvision "
        "state dict (.pth) of one of our backbones or a .safetensors export of one")
  try:
    return fmt, variant, reader(path)
  except ConversionError:
    raise
  except Exception as e:  # h5py, torch and safetensors each raise their own errors
    raise ConversionError(f"{path.name} looks like {fmt} but could not be read ({e}); the file "
                          "may be truncated or damaged: fetch it again") from e


def _map_tensors(layers: dict[str, dict[str, np.ndarray]], variant: str, arch: str,
                 expected: dict) -> dict:
  """Fill our nested state dict from reference layers, refusing the first layer that differs."""
  names = TENSOR_NAMES[variant]
  state = jax.tree.map(lambda _: None, expected)
  used = set()
  model = backbone_named(arch, variant)
  for layer in layer_table(arch):
    ref_name = getattr(layer, variant)
    if ref_name not in layers:
      ours = ".".join(map(str, layer.path))
      raise ConversionError(f"layer {ref_name!r} is missing from the file: not a complete "
                            f"{model} (it fills our {ours})")
    used.add(ref_name)
    wanted = names[layer.kind]
    tensors = layers[ref_name]
    if set(tensors) != set(wanted):
      raise ConversionError(f"layer {ref_name!r} holds tensors {sorted(tensors)}, expected "
                            f"{sorted(wanted)}")
    target, out = expected, state
    for key in layer.path:
      target, out = target[key], out[key]
    for ref_tensor, ours in wanted.items():
      value = _our_layout(tensors[ref_tensor].astype(np.float32), variant, layer.kind, ours)
      want = tuple(target[ours].shape)
      if value.shape != want:
        raise ConversionError(f"layer {ref_name!r}: tensor {ref_tensor!r} has shape "
                              f"{value.shape}, expected {want}")
      out[ours] = value
  extra = sorted(set(layers) - used - IGNORED_LAYERS[variant])
  if extra:
    raise ConversionError(f"layer {extra[0]!r} is not part of a {model} "
                          f"({len(extra)} unexpected layers); is this another architecture?")
  return state


def _our_layout(value: np.ndarray, variant: str, kind: str, ours: str) -> np.ndarray:
  """A torchvision tensor in flax's layout (Keras's already is)."""
  if variant != "torchvision":
    return value
  if ours == "kernel":  # conv OIHW -> HWIO (depthwise too), linear (out, in) -> (in, out)
    return value.T if kind == "linear" else value.transpose(2, 3, 1, 0)
  if kind == "layer_scale":  # torchvision keeps it (C, 1, 1) to broadcast over NCHW
    return value.reshape(-1)
  return value


def _abstract_backbone(arch: str, variant: str, dtype=jnp.float32):
  """(graphdef, weights, RNG streams) of an abstract backbone: only the weights are stored (the
  streams are stochastic depth's, reseeded when loaded)."""
  model = nnx.eval_shape(lambda: backbones.build(arch, variant, rngs=nnx.Rngs(0), dtype=dtype))
  return nnx.split(model, nnx.Not(nnx.RngState), ...)


def _sha256(path: Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def convert(input_path: str | os.PathLike, out_dir: str | os.PathLike,
            arch: str | None = None) -> Path:
  """Convert a reference weights file into an orbax backbone checkpoint at out_dir.

  `arch`: the backbone the file must be (default: recognised from its layer names).
  """
  src, out = Path(input_path), Path(out_dir)
  if not src.is_file():
    raise ConversionError(f"{src}: no such file; fetch it first (python -m ichflax.weights "
                          "fetch NAME)")
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise ConversionError(f"{out} already exists; choose a new --out or delete it")
  fmt, variant, layers = read_reference(src)
  found = detect_arch(layers, variant) if arch is None else arch
  try:
    backbones.check(found, variant)
  except ValueError as e:
    raise ConversionError(f"{src.name}: {e}") from None
  _, abstract, _ = _abstract_backbone(found, variant)
  state = _map_tensors(layers, variant, found, abstract.to_pure_dict())
  info = BackboneInfo(variant=variant, arch=found, source_file=src.name,
                      source_sha256=_sha256(src),
                      source_format=fmt,
                      stored_values=int(sum(v.size for v in jax.tree.leaves(state))))
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(tmp / STATE_DIR, state)
    (tmp / META_FILE).write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n")
    tmp.rename(out)  # replaces an empty out dir, checked above
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
  """Where a converted backbone came from, saved beside its weights."""

  variant: str
  source_file: str
  source_sha256: str
  source_format: str  # "keras-h5", "torch-pth" or "safetensors"
  stored_values: int
  arch: str = backbones.DEFAULT  # conversions before other backbones existed were ResNet50s


def read_metadata(ckpt_dir: str | os.PathLike) -> BackboneInfo:
  path = Path(ckpt_dir) / META_FILE
  if not path.is_file():
    raise ConversionError(f"{ckpt_dir} is not a converted backbone (no {META_FILE}); make one "
                          "with: python -m ichflax.weights convert WEIGHTS_FILE --out DIR")
  return BackboneInfo(**json.loads(path.read_text()))


def load_backbone(ckpt_dir: str | os.PathLike, dtype=jnp.float32) -> nnx.Module:
  """The converted backbone (train mode; call .eval() for inference), params in float32."""
  info = read_metadata(ckpt_dir)
  graphdef, abstract, rngs = _abstract_backbone(info.arch, info.variant, dtype)
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(Path(ckpt_dir).absolute() / STATE_DIR, abstract.to_pure_dict())
  nnx.replace_by_pure_dict(abstract, jax.tree.map(jnp.asarray, restored))
  return nnx.merge(graphdef, abstract, reseed(rngs, jax.random.key(0)))
