"""torchvision ResNet50 training-step baselines, timed like ichflax's step in the same run.

A reference only (imported lazily by bench/train_throughput.py, never by ichflax): the figure a
user compares against is what they would write in PyTorch today — channels_last, bf16 autocast,
eager or `torch.compile`, fused Adam on CUDA, and bn-head (only BatchNorm + the head learn, the
paper's trainable) or all (full fine-tuning).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchvision
from torch import nn

from bench import common


def paper_head(num_outputs: int, dropout: float, width: int = 256) -> nn.Module:
  """The paper's head after global average pooling: Dense(256, ReLU) -> Dropout -> BN -> Dense."""
  return nn.Sequential(nn.Linear(2048, width), nn.ReLU(inplace=True), nn.Dropout(dropout),
                       nn.BatchNorm1d(width), nn.Linear(width, num_outputs))


def build(trainable: str, num_outputs: int, dropout: float) -> nn.Module:
  """ResNet50 (random init: speed does not depend on the values) with the paper's head."""
  model = torchvision.models.resnet50(weights=None)
  model.fc = paper_head(num_outputs, dropout)
  if trainable == "bn-head":  # Frozen convs: autograd then skips their weight gradients.
    for module in model.modules():
      is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
      for p in module.parameters(recurse=False):
        p.requires_grad_(is_norm)
    for p in model.fc.parameters():
      p.requires_grad_(True)
  elif trainable != "all":
    raise ValueError(f"trainable must be 'bn-head' or 'all', got {trainable!r}")
  return model


def bench_train(*, trainable: str, image_size: int, batch_size: int, dtype: str, compile_: bool,
                warmup: int, repeats: int, steps_per_repeat: int, num_outputs: int = 1,
                dropout: float = 0.4, seed: int = 0) -> common.Row:
  """images/s of one torchvision training step on a random batch already on the device."""
  torch.manual_seed(seed)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  model = build(trainable, num_outputs, dropout).to(device).to(memory_format=torch.channels_last)
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.Adam(params, lr=1e-4, fused=device.type == "cuda")
  if compile_:
    torch._dynamo.reset()
  net = torch.compile(model) if compile_ else model
  x = torch.randn(batch_size, 3, image_size, image_size, device=device)
  x = x.contiguous(memory_format=torch.channels_last)
  y = torch.randint(0, 2, (batch_size, num_outputs), device=device).float()
  loss_fn = nn.BCEWithLogitsLoss()
  bf16 = dtype == "bf16"

  def step() -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(net(x).float(), y)
    loss.backward()
    opt.step()
    return loss

  def sync(loss: torch.Tensor) -> Any:
    if device.type == "cuda":
      torch.cuda.synchronize()
    return loss.item()

  timing = common.time_steps(step, sync, warmup=warmup, repeats=repeats,
                             steps_per_repeat=steps_per_repeat)
  loss = sync(step())
  del net, model, opt, x, y
  if device.type == "cuda":  # hand the memory back: jax runs next in the same process
    torch.cuda.empty_cache()
  note = f"torch {torch.__version__}, {device.type}, channels_last"
  if not math.isfinite(loss):
    note += ", NON-FINITE LOSS"
  return common.row_from_timing(
      timing, bench="train", framework="torch",
      impl="torch.compile" if compile_ else "eager", mode="compute", trainable=trainable,
      image_size=image_size, batch_size=batch_size, dtype=dtype, note=note)


def device_name() -> str:
  return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
