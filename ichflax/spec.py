"""`ModelSpec`: everything inference needs to use a checkpoint exactly as training did.

It is saved as its own checkpoint item beside the weights and read as attributes by the
Predictor, the demo, the report and `checkpoint export`, so serving can never guess at what a
model was trained on or how its inputs were made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ichflax import flags, tasks

Window = tuple[float, float]  # (center, width) in HU
# "backbone": the variant's own ImageNet normalisation; "rescale": x / 255 only, as the paper's
# code fed its ImageNet ResNet50 (models.preprocess.normalize).
NORMALIZATIONS = ("backbone", "rescale")
# Backbones by name (`ichflax.models.backbones` builds them), as people read them.
BACKBONES = {"resnet50": "ResNet50", "efficientnet_b0": "EfficientNet-B0",
             "convnext_tiny": "ConvNeXt-Tiny"}
# Stored image -> model size: "antialiased" bilinear, or "nearest" (Keras load_img's PIL default).
RESIZES = ("antialiased", "nearest")


def backbone_named(arch: str, variant: str) -> str:
  """How reports, cards and the page name a backbone."""
  return f"ResNet50 {variant}" if arch == "resnet50" else BACKBONES[arch]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What a checkpoint's weights compute and on what inputs (no training-loop state)."""

  task: str
  class_names: tuple[str, ...]
  variant: str  # weight layout: ResNet50 "keras" (v1) or "torchvision" (v1.5); others torchvision
  image_size: int  # model input side, pixels
  stored_size: int  # side of the stored uint8 slice the model input is resized from
  windows: tuple[Window, ...]  # CT windows, one per stored channel
  dropout: float
  trainable: str  # "bn-head" (BatchNorm + head trained) or "all"
  data: str  # a sentence naming the training data (reports and model cards quote it)
  normalization: str = "backbone"
  stored_dtype: str = "float32"  # parameters as saved (exports may be bfloat16)
  resize: str = "antialiased"  # stored -> model size (RESIZES)
  backbone: str = "resnet50"  # models.BACKBONES; checkpoints before there were others: ResNet50
  # Slices per input (2.5D, `ichflax.data.context`): the slice and its neighbours in series
  # order as channels, slice-major; 1: the slice alone.
  context: int = 1
  # Fitted on the validation split after training (`ichflax.calibrate`); empty/None before, and
  # then probabilities are served as the logits give them and the verdict uses 0.5.
  temperatures: tuple[float, ...] = ()  # one per output: served logits are divided by it
  thresholds: tuple[float, ...] = ()  # operating point per output, on calibrated probabilities
  target_sensitivity: float | None = None  # the validation sensitivity the thresholds reach
  domain_threshold: float | None = None  # out-of-domain score above which inputs are refused
  domain_percentile: float | None = None  # of the validation scores that set domain_threshold
  domain_image_threshold: float | None = None  # the same for the image statistics' score
  domain_picture_threshold: float | None = None  # the same for a picture's shape statistics

  def __post_init__(self):
    tasks.get_task(self.task)  # raises for an unknown task
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"unknown normalisation {self.normalization!r}: choose one of "
                       f"{', '.join(NORMALIZATIONS)}")
    if self.backbone not in BACKBONES:
      raise ValueError(f"unknown backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}")
    if self.context < 1 or self.context % 2 == 0:
      raise ValueError(f"context {self.context}: use an odd number of slices (1, 3, 5 ...)")
    if self.resize not in RESIZES:
      raise ValueError(f"unknown resize {self.resize!r}: choose one of {', '.join(RESIZES)}")
    object.__setattr__(self, "class_names", tuple(self.class_names))
    object.__setattr__(self, "windows", tuple((float(c), float(w)) for c, w in self.windows))
    for name in ("temperatures", "thresholds"):
      values = tuple(float(v) for v in getattr(self, name) or ())
      if values and len(values) != len(self.outputs):
        raise ValueError(f"{len(values)} {name} for {len(self.outputs)} outputs")
      object.__setattr__(self, name, values)

  @property
  def outputs(self) -> tuple[str, ...]:
    """The model's outputs as RSNA labels: the binary task's one output is `any`."""
    return tasks.get_task(self.task).outputs

  @property
  def calibrated(self) -> bool:
    return bool(self.temperatures)

  def operating_points(self) -> dict[str, float]:
    """Threshold per output label: the fitted operating points, else 0.5."""
    return dict(zip(self.outputs, self.thresholds or (0.5,) * len(self.outputs)))

  @property
  def channels(self) -> int:
    return len(self.windows)

  @property
  def input_mode(self) -> str:
    """"grey": one grey channel (the paper's PNG, or the brain window); "windows": three."""
    return "grey" if self.channels == 1 else "windows"

  @property
  def synthetic(self) -> bool:
    return "phantom" in self.data.lower()

  def data_named(self) -> str:
    """The training data in words, saying "not patients" once when it is synthetic."""
    data = self.data or "unrecorded data"
    return data + (" (not patients)" if self.synthetic and "not patients" not in data else "")

  def describe(self) -> str:
    """One line for people: what it predicts, on which backbone, trained on what."""
    return (f"{self.task} model ({', '.join(self.outputs)}), {self.backbone_named()} at "
            f"{self.image_size} px, trained on {self.data or 'unrecorded data'}")

  def backbone_named(self) -> str:
    """'ResNet50 keras', 'EfficientNet-B0': ResNet50 names its weight layout too."""
    return backbone_named(self.backbone, self.variant)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> ModelSpec:
    """Reads a saved spec; fields added later take their defaults, unknown keys are ignored,
    old names (`recipe: full`) read as today's."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in flags.upgrade(d).items() if k in names})

  def replace(self, **changes) -> ModelSpec:
    return dataclasses.replace(self, **changes)
