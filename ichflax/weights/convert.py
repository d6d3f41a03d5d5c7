"""Convert official ImageNet ResNet50 weights (Keras h5, torchvision state dict) to orbax.

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

from ichflax.models.resnet import STAGE_BLOCKS, ResNet50

META_FILE = "ichflax_backbone.json"
STATE_DIR = "state"
# Layers a reference file may carry that a backbone does not use (the ImageNet classifier).
IGNORED_LAYERS = {"keras": {"predictions"}, "torchvision": {"fc"}}
IGNORED_TENSORS = {"num_batches_tracked"}
# Reference tensor name -> our nnx variable name, per layer kind.
TENSOR_NAMES = {
    "keras": {"conv": {"kernel": "kernel", "bias": "bias"},
              "bn": {"gamma": "scale", "beta": "bias", "moving_mean": "mean",
                     "moving_variance": "var"}},
    "torchvision": {"conv": {"weight": "kernel"},
                    "bn": {"weight": "scale", "bias": "bias", "running_mean": "mean",
                           "running_var": "var"}},
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


class ConversionError(ValueError):
  """The input is not a ResNet50 weights file we can convert; the message says why."""


@dataclasses.dataclass(frozen=True)
class Layer:
  """One conv or BatchNorm of our ResNet50 and its name in each reference."""

  path: tuple[str | int, ...]
  kind: str  # "conv" | "bn"
  keras: str
  torchvision: str


def layer_table() -> list[Layer]:
  """Every weighted layer of ResNet50 in network order, with both references' names."""
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
        "ResNet50 .pth state dict or a .safetensors export of one")
  try:
    return fmt, variant, reader(path)
  except ConversionError:
    raise
  except Exception as e:  # h5py, torch and safetensors each raise their own errors
    raise ConversionError(f"{path.name} looks like {fmt} but could not be read ({e}); the file "
                          "may be truncated or damaged: fetch it again") from e


def _map_tensors(layers: dict[str, dict[str, np.ndarray]], variant: str,
                 expected: dict) -> dict:
  """Fill our nested state dict from reference layers, refusing the first layer that differs."""
  names = TENSOR_NAMES[variant]
  state = jax.tree.map(lambda _: None, expected)
  used = set()
  for layer in layer_table():
    ref_name = getattr(layer, variant)
    if ref_name not in layers:
      ours = ".".join(map(str, layer.path))
      raise ConversionError(f"layer {ref_name!r} is missing from the file: not a complete "
                            f"{variant} ResNet50 (it fills our {ours})")
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
      value = tensors[ref_tensor].astype(np.float32)
      if variant == "torchvision" and ours == "kernel":
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      want = tuple(target[ours].shape)
      if value.shape != want:
        raise ConversionError(f"layer {ref_name!r}: tensor {ref_tensor!r} has shape "
                              f"{value.shape}, expected {want}")
      out[ours] = value
  extra = sorted(set(layers) - used - IGNORED_LAYERS[variant])
  if extra:
    raise ConversionError(f"layer {extra[0]!r} is not part of a {variant} ResNet50 "
                          f"({len(extra)} unexpected layers); is this another architecture?")
  return state


def _abstract_backbone(variant: str, dtype=jnp.float32):
  model = nnx.eval_shape(lambda: ResNet50(variant, rngs=nnx.Rngs(0), dtype=dtype))
  return nnx.split(model)


def _sha256(path: Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def convert(input_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
  """Convert a reference weights file into an orbax backbone checkpoint at out_dir."""
  src, out = Path(input_path), Path(out_dir)
  if not src.is_file():
    raise ConversionError(f"{src}: no such file; fetch it first (python -m ichflax.weights "
                          "fetch keras|torchvision)")
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise ConversionError(f"{out} already exists; choose a new --out or delete it")
  fmt, variant, layers = read_reference(src)
  _, abstract = _abstract_backbone(variant)
  state = _map_tensors(layers, variant, abstract.to_pure_dict())
  info = BackboneInfo(variant=variant, source_file=src.name, source_sha256=_sha256(src),
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


def read_metadata(ckpt_dir: str | os.PathLike) -> BackboneInfo:
  path = Path(ckpt_dir) / META_FILE
  if not path.is_file():
    raise ConversionError(f"{ckpt_dir} is not a converted backbone (no {META_FILE}); make one "
                          "with: python -m ichflax.weights convert WEIGHTS_FILE --out DIR")
  return BackboneInfo(**json.loads(path.read_text()))


def load_backbone(ckpt_dir: str | os.PathLike, dtype=jnp.float32) -> ResNet50:
  """The converted ResNet50 (train mode; call .eval() for inference), params in float32."""
  graphdef, abstract = _abstract_backbone(read_metadata(ckpt_dir).variant, dtype)
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(Path(ckpt_dir).absolute() / STATE_DIR, abstract.to_pure_dict())
  nnx.replace_by_pure_dict(abstract, jax.tree.map(jnp.asarray, restored))
  return nnx.merge(graphdef, abstract)
