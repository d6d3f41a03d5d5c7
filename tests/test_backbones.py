"""Every backbone through the whole path: a tiny training run, calibration (domain statistics of
its own feature width), the Predictor with Grad-CAM and its box, export, and the paper recipe's
normalisation-only filter. ResNet50's own path is covered by the other serving tests."""

from __future__ import annotations

import _synth_data
import jax
import numpy as np
import pytest
from flax import nnx
from test_predictor import check_prediction, png_bytes, write_dicom

from ichflax import checkpoint, models, tasks
from ichflax.config import AugmentConfig, TrainConfig
from ichflax.data import image, phantom
from ichflax.models import backbones
from ichflax.serving import predictor as predictor_lib
from ichflax.spec import BACKBONES
from ichflax.training import loop as train
from ichflax.trust import calibrate, verdict

OTHERS = ("efficientnet_b0", "convnext_tiny")
FEATURES = {"efficientnet_b0": 1280, "convnext_tiny": 768}


def test_every_named_backbone_is_built_with_its_feature_width():
  assert tuple(BACKBONES) == ("resnet50", *OTHERS)
  for arch, width in {"resnet50": 2048, **FEATURES}.items():
    variant = "keras" if arch == "resnet50" else "torchvision"
    model = nnx.eval_shape(lambda a=arch, v=variant: backbones.build(a, v, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda a=arch, v=variant: backbones.build(a, v, rngs=nnx.Rngs(0))(
        jax.numpy.zeros((1, 64, 64, 3))))
    assert out.shape == (1, 2, 2, width) and model.features == width and model.arch == arch
  with pytest.raises(ValueError, match="comes in the torchvision variant"):
    backbones.build("convnext_tiny", "keras", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("arch", OTHERS)
def test_bn_head_trains_only_the_normalisation_layers_and_the_head(arch):
  model = models.build_classifier("binary", "torchvision", rngs=nnx.Rngs(0), arch=arch)
  trained = nnx.state(model, models.trainable_filter("bn-head"))
  paths = [p for p, _ in nnx.to_flat_state(trained)]
  backbone = [p for p in paths if p[0] == "backbone"]
  norm = "bn" if arch == "efficientnet_b0" else "ln"
  assert backbone and all(any(str(k).startswith(norm) for k in p) for p in backbone)
  assert {p[-1] for p in backbone} == {"scale", "bias"}  # no kernel, no layer scale
  assert any(p[0] == "head" for p in paths)


@pytest.fixture(scope="module", params=OTHERS)
def trained(request, tmp_path_factory):
  """A real checkpoint of each backbone: multilabel, full recipe, 64 px, 2 steps, calibrated."""
  root = tmp_path_factory.mktemp(request.param)
  dataset = _synth_data.build(root / "data", num=120, size=64)
  cfg = TrainConfig(task="multilabel", data=dataset, trainable="all", epochs=1, batch_size=8,
                    image_size=64, limit=16, workdir=str(root / "run"), progress_bar=False,
                    draw="by-patient", augment=AugmentConfig(enabled=False), checkpoint_every=0,
                    backbone=request.param)
  step_dir = checkpoint.resolve(train.run(cfg)["checkpoint"])
  assert calibrate.main([str(step_dir), "--data", str(dataset)]) == 0
  return request.param, step_dir


def test_a_backbone_trains_calibrates_serves_and_exports(trained, tmp_path):
  arch, step_dir = trained
  spec = checkpoint.layout.spec_at(step_dir)
  assert (spec.backbone, spec.variant) == (arch, "torchvision")
  assert spec.domain_threshold is not None and BACKBONES[arch] in spec.describe()
  predictor = predictor_lib.Predictor.from_checkpoint(step_dir)
  rng = np.random.default_rng(0)
  bleed = phantom.make_slice(rng, 64, (tasks.SUBTYPES.index("subdural"),))
  dcm = write_dicom(tmp_path / "bleed.dcm", bleed.hu)
  picture = predictor.load(png_bytes(image.window(bleed.hu, *image.WINDOWS["brain"])), "b.png")
  preds = predictor.predict([predictor.load(dcm), picture])
  for p in preds:
    assert p.status in verdict.STATUSES
    check_prediction(p, (64, 64), predictor.labels)
    assert p.cam is not None and p.cam.shape == (64, 64)
  exported = checkpoint.export_inference(step_dir, tmp_path / "export")
  again = predictor_lib.Predictor.from_checkpoint(exported).predict([predictor.load(dcm)])[0]
  for k, v in preds[0].probabilities.items():  # bfloat16 weights: close, not equal
    assert abs(again.probabilities[k] - v) < 0.05, k
