"""Checkpoints: the on-disk layout (`layout`), reading for inference (`load`), export and
migration (`export`), the Hub (`hub`) and its model card (`card`). Training's saving and
resuming live with the loop, in `ichflax.training.checkpoints`."""

from ichflax.checkpoint.export import export_inference, migrate
from ichflax.checkpoint.layout import (
  CHECKPOINTS,
  DOMAIN,
  SPEC,
  STATE,
  TRAINED,
  CheckpointError,
  is_lean,
  model_state,
)
from ichflax.checkpoint.load import (
  load_inference,
  read_config,
  read_domain,
  read_progress,
  read_series,
  read_spec,
  resolve,
  restore_model,
  write_series,
  write_trust,
)

__all__ = ["CHECKPOINTS", "DOMAIN", "SPEC", "STATE", "TRAINED", "CheckpointError",
           "export_inference", "is_lean", "load_inference", "migrate", "model_state",
           "read_config", "read_domain", "read_progress", "read_series", "read_spec",
           "resolve", "restore_model", "write_series", "write_trust"]
