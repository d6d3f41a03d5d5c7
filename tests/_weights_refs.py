"""Reference ResNet50s (Keras 3 on JAX, torchvision) with random weights, for parity tests.

BatchNorm statistics and affine parameters are randomised so that a mapping mistake (mean and
variance swapped, a missed transpose) changes the output instead of hiding behind 0 / 1.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

SIZES = {"224": (1, 224), "small": (2, 64)}  # name -> (batch, side)


def inputs(seed: int = 0) -> dict[str, np.ndarray]:
  """Normalised-scale float32 NHWC batches, one per size."""
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=(b, s, s, 3)).astype(np.float32) for k, (b, s) in SIZES.items()}


def relative_error(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
  """(max |diff|, max |diff| / max |ref|)."""
  diff = float(np.max(np.abs(np.asarray(ours, np.float64) - ref)))
  return diff, diff / float(np.max(np.abs(ref)))


def keras_h5(h5_path, seed: int = 0, input_shape=None):
  """Save a random Keras ResNet50 notop in the legacy h5 layout (as the official file is saved);
  BatchNorm statistics and affine parameters and conv biases randomised. Returns the model."""
  import h5py
  import keras
  from keras.src.legacy.saving import legacy_h5_format

  assert keras.backend.backend() == "jax", "set KERAS_BACKEND=jax before importing keras"
  keras.utils.set_random_seed(seed)
  model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=input_shape)
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                         rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)])
    elif isinstance(layer, keras.layers.Conv2D):
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape)])
  with h5py.File(h5_path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  return model


def keras_reference(h5_path, seed: int = 0) -> dict[str, np.ndarray]:
  """Save a random Keras ResNet50 notop (`keras_h5`); return its outputs per size."""
  model = keras_h5(h5_path, seed)
  # predict() jits the whole network: quicker here than Keras's op-by-op eager call.
  outputs = {k: model.predict(x, batch_size=len(x), verbose=0) for k, x in inputs(seed).items()}
  outputs["params"] = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  return outputs


def torch_reference(pth_path, safetensors_path, seed: int = 0,
                    arch: str = "resnet50") -> dict[str, np.ndarray]:
  """Save a random torchvision `arch` as .pth and .safetensors; return NHWC features per size.

  Besides BatchNorm, biases, LayerNorm affines and ConvNeXt's layer scale are randomised: at
  their initial 0 / 1 / 1e-6 a swapped or missed tensor would not show in the output.
  """
  import safetensors.torch
  import torch
  import torchvision

  torch.manual_seed(seed)
  model = getattr(torchvision.models, arch)(weights=None)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
      elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
        m.bias.normal_(0, 0.05)
      if hasattr(m, "layer_scale"):
        m.layer_scale.uniform_(0.5, 1.5)
  model.eval()
  state = model.state_dict()
  torch.save(state, pth_path)
  safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, safetensors_path)
  features = (torch.nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc
              if arch == "resnet50" else model.features)
  outputs = {"params": sum(p.numel() for p in features.parameters())}
  with torch.no_grad():
    for k, x in inputs(seed).items():
      y = features(torch.from_numpy(x).permute(0, 3, 1, 2))
      outputs[k] = y.permute(0, 2, 3, 1).numpy()
  return outputs
