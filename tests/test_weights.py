"""Conversion parity against the real Keras and torchvision backbones (ResNet50s,
EfficientNet-B0, ConvNeXt-Tiny) on random weights, and refusals."""

import shutil
import sys

import _weights_refs as refs
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ichflax.weights import ConversionError, convert, load_backbone, read_metadata
from ichflax.weights.__main__ import main

# max |diff| / max |ref| in float32, about 2x the largest measured on the 2-core dev box
# (docs/weights.md and 2026-11-27): Keras 6.6e-7 / 8.8e-7 at 1x224x224 (4.2e-7 at 2x64x64),
# torchvision 3.1e-6 / 2.5e-6 at 1x224x224 (1.9e-6 at 2x64x64). Was 1e-4 for both. The other
# torchvision backbones measured 4.7e-7 (EfficientNet-B0) and 1.2e-6 (ConvNeXt-Tiny) at 224,
# 8.9e-7 / 1.2e-6 at 2x64x64 (2026-12-04): the bound, 1e-5, holds them with room.
TOLERANCE = {"keras": 2e-6, "torchvision": 5e-6, "efficientnet_b0": 1e-5, "convnext_tiny": 1e-5}
NEW_ARCHS = ("efficientnet_b0", "convnext_tiny")
_forward = nnx.jit(lambda model, x: model(x))  # one compile per variant and shape, shared


@pytest.fixture(scope="module")
def keras_ref(tmp_path_factory):
  h5 = tmp_path_factory.mktemp("keras") / "resnet50_notop.h5"
  return h5, refs.keras_reference(h5)


@pytest.fixture(scope="module")
def torch_ref(tmp_path_factory):
  d = tmp_path_factory.mktemp("torch")
  pth, st = d / "resnet50.pth", d / "resnet50.safetensors"
  return pth, st, refs.torch_reference(pth, st)


@pytest.fixture(scope="module", params=NEW_ARCHS)
def other_ref(request, tmp_path_factory):
  """A random torchvision EfficientNet-B0 / ConvNeXt-Tiny saved as .pth and .safetensors."""
  d = tmp_path_factory.mktemp(request.param)
  pth, st = d / f"{request.param}.pth", d / f"{request.param}.safetensors"
  return request.param, pth, st, refs.torch_reference(pth, st, arch=request.param)


def _features(ckpt) -> dict[str, np.ndarray]:
  model = load_backbone(ckpt)
  model.eval()
  out = {k: np.asarray(_forward(model, x)) for k, x in refs.inputs().items()}
  out["params"] = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return out


def _check_parity(name, ours, ref):
  assert ours["params"] == ref["params"], "parameter count differs from the reference"
  for size in refs.SIZES:
    diff, rel = refs.relative_error(ours[size], ref[size])
    print(f"\n{name} parity at {size}: max|diff| {diff:.3g}, max|diff|/max|ref| {rel:.3g}")
    assert ours[size].shape == ref[size].shape
    limit = TOLERANCE[name.split()[0]]
    assert rel <= limit, f"{name} at {size}: relative error {rel:.3g} > {limit}"


def test_keras_h5_parity_via_cli(keras_ref, tmp_path, capsys):
  h5, ref = keras_ref
  out = tmp_path / "keras_backbone"
  assert main(["convert", str(h5), "--out", str(out)]) == 0
  assert "ResNet50 keras" in capsys.readouterr().out
  info = read_metadata(out)
  assert info.variant == "keras" and info.source_format == "keras-h5"
  assert info.source_file == h5.name and len(info.source_sha256) == 64
  with capsys.disabled():
    _check_parity("keras", _features(out), ref)


def test_keras_names_with_colon_zero(keras_ref, tmp_path):
  """The official file names tensors 'conv1_conv/kernel:0'; Keras 3 writes 'conv1_conv/kernel'."""
  h5, _ = keras_ref
  tagged = tmp_path / "tagged.h5"
  shutil.copy(h5, tagged)
  with h5py.File(tagged, "r+") as f:
    for name in f.attrs["layer_names"]:  # Keras 3 writes str, the official file bytes
      group = f[name]
      names = list(group.attrs["weight_names"])
      for n in names:
        group.move(n, n + ":0")
      group.attrs["weight_names"] = [(n + ":0").encode() for n in names]
  plain = nnx.state(load_backbone(convert(h5, tmp_path / "plain")))
  colon = nnx.state(load_backbone(convert(tagged, tmp_path / "colon")))
  jax.tree.map(np.testing.assert_array_equal, plain, colon)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_parity(torch_ref, tmp_path, fmt, capsys):
  pth, st, ref = torch_ref
  out = convert(pth if fmt == "pth" else st, tmp_path / fmt)
  info = read_metadata(out)
  assert info.variant == "torchvision"
  assert info.source_format == {"pth": "torch-pth", "safetensors": "safetensors"}[fmt]
  with capsys.disabled():
    _check_parity(f"torchvision ({fmt})", _features(out), ref)


def test_other_backbones_parity_via_cli(other_ref, tmp_path, capsys):
  """The architecture is recognised from the .pth's names; features equal `model.features`."""
  arch, pth, _, ref = other_ref
  assert main(["convert", str(pth), "--out", str(tmp_path / "ckpt")]) == 0
  assert arch in capsys.readouterr().out
  info = read_metadata(tmp_path / "ckpt")
  assert (info.arch, info.variant, info.source_format) == (arch, "torchvision", "torch-pth")
  with capsys.disabled():
    _check_parity(arch, _features(tmp_path / "ckpt"), ref)


def test_other_backbones_refuse_what_does_not_fit(other_ref, tmp_path):
  from safetensors.numpy import load_file, save_file
  arch, _, st, _ = other_ref
  state = load_file(st)
  layer = "features.3.0.block.1.1" if arch == "efficientnet_b0" else "features.3.1.block.2"
  save_file({k: v for k, v in state.items() if not k.startswith(layer + ".")},
            tmp_path / "missing.safetensors")
  _assert_refused(tmp_path / "missing.safetensors", tmp_path / "a", f"'{layer}' is missing")
  other = NEW_ARCHS[1 - NEW_ARCHS.index(arch)]
  with pytest.raises(ConversionError, match="'features.0.0' holds tensors"):
    convert(st, tmp_path / "b", arch=other)  # asked for as the other architecture
  with pytest.raises(ConversionError, match="unknown backbone 'densenet'"):
    convert(st, tmp_path / "c", arch="densenet")
  assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_load_backbone_compute_dtype(torch_ref, tmp_path):
  _, st, _ = torch_ref
  model = load_backbone(convert(st, tmp_path / "ckpt"), dtype=jnp.bfloat16)
  model.eval()
  assert model.variant == "torchvision"
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model))} == {np.dtype("float32")}
  assert model.conv1.dtype == model.layer4[2].bn3.dtype == jnp.bfloat16


def _assert_refused(src, out, match):
  with pytest.raises(ConversionError, match=match):
    convert(src, out)
  assert not out.exists()
  assert not list(out.parent.glob(f".{out.name}*")), "a temporary checkpoint was left behind"


def test_keras_missing_layer_refused(keras_ref, tmp_path):
  h5, _ = keras_ref
  bad = tmp_path / "missing.h5"
  shutil.copy(h5, bad)
  with h5py.File(bad, "r+") as f:
    del f["conv3_block2_2_bn"]
    f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n != "conv3_block2_2_bn"]
  _assert_refused(bad, tmp_path / "out", "'conv3_block2_2_bn' is missing")


def test_keras_swapped_tensor_refused(keras_ref, tmp_path):
  h5, _ = keras_ref
  bad = tmp_path / "swapped.h5"
  shutil.copy(h5, bad)
  with h5py.File(bad, "r+") as f:
    other = np.asarray(f["conv3_block1_1_conv/conv3_block1_1_conv/kernel"])  # 1x1 kernel
    del f["conv3_block1_2_conv/conv3_block1_2_conv/kernel"]
    f["conv3_block1_2_conv/conv3_block1_2_conv/kernel"] = other
  _assert_refused(bad, tmp_path / "out", r"'conv3_block1_2_conv'.*shape \(1, 1, 256, 128\)")


def test_torch_missing_and_swapped_refused(torch_ref, tmp_path):
  from safetensors.numpy import load_file, save_file
  _, st, _ = torch_ref
  state = load_file(st)
  missing = {k: v for k, v in state.items() if not k.startswith("layer2.1.bn2.")}
  save_file(missing, tmp_path / "missing.safetensors")
  _assert_refused(tmp_path / "missing.safetensors", tmp_path / "a", "'layer2.1.bn2' is missing")
  swapped = dict(state)
  swapped["layer3.0.conv1.weight"], swapped["layer3.0.conv2.weight"] = (
      state["layer3.0.conv2.weight"], state["layer3.0.conv1.weight"])
  save_file(swapped, tmp_path / "swapped.safetensors")
  _assert_refused(tmp_path / "swapped.safetensors", tmp_path / "b", "'layer3.0.conv1'.*shape")
  extra = dict(state, **{"layer3.6.conv1.weight": state["layer3.5.conv1.weight"]})
  save_file(extra, tmp_path / "deeper.safetensors")
  _assert_refused(tmp_path / "deeper.safetensors", tmp_path / "c", "'layer3.6.conv1' is not part")


def test_crash_while_writing_leaves_nothing(torch_ref, tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  _, st, _ = torch_ref

  def disk_full(*args, **kwargs):
    raise OSError("No space left on device")

  monkeypatch.setattr(ocp.StandardCheckpointer, "save", disk_full)
  with pytest.raises(OSError, match="No space"):
    convert(st, tmp_path / "out")
  assert list(tmp_path.iterdir()) == []


def test_unusable_inputs_refused(torch_ref, tmp_path, monkeypatch, capsys):
  pth, st, _ = torch_ref
  text = tmp_path / "notes.txt"
  text.write_text("not weights")
  _assert_refused(text, tmp_path / "a", "not a format we convert")
  _assert_refused(tmp_path / "absent.h5", tmp_path / "b", "no such file")
  truncated = tmp_path / "truncated.safetensors"
  truncated.write_bytes(st.read_bytes()[:100_000])
  _assert_refused(truncated, tmp_path / "d", "could not be read .*truncated")
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "keep.txt").write_text("user data")
  with pytest.raises(ConversionError, match="already exists"):
    convert(st, taken)
  assert (taken / "keep.txt").read_text() == "user data"
  monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
  assert main(["convert", str(pth), "--out", str(tmp_path / "c")]) == 1
  err = capsys.readouterr().err
  assert "needs torch" in err and ".safetensors" in err
  assert not (tmp_path / "c").exists()


def test_load_backbone_needs_a_converted_dir(tmp_path):
  with pytest.raises(ConversionError, match="python -m ichflax.weights convert"):
    load_backbone(tmp_path)
