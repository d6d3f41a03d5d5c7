"""Sim-to-sim: a checkpoint on held-out synthetic subjects, through the serving path.

    python -m bench.sim_to_sim --checkpoint checkpoints/multilabel --data DIR [--json P]

DIR is an RSNA-format folder written by `python -m ichflax.data phantom` (any seed, e.g. one
made with `--wide`: other kernels, thicker slices, other fields of view than training's). Each
DICOM goes through `Predictor.predict` as an upload would (scope, domain, calibrated
probabilities, Grad-CAM box). Reported per output: ROC AUC over every slice (out-of-domain ones
revealed) and over the answered ones; the answer rate; sensitivity and specificity of `any` at
the checkpoint's operating point; the box hit rate: the share of bleeding slices whose box
holds some of the planted blood (masks in `stage_2_masks/`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ichflax import tasks
from ichflax.data import builders, phantom, rsna, synth
from ichflax.evaluation import metrics
from ichflax.serving.predictor import Predictor


def _masks(root: Path) -> dict[str, np.ndarray]:
  """image id -> uint8 (H, W) subtype bitmask, from every series' npz."""
  out = {}
  for f in sorted((root / synth.MASKS_DIR).glob("*.npz")):
    with np.load(f) as z:
      out.update(zip(z["ids"].tolist(), z["subtypes"]))
  return out


def _box_hit(box, mask: np.ndarray) -> bool:
  return box is not None and bool(mask[box.y0:box.y1, box.x0:box.x1].any())


def evaluate(checkpoint: str, root: Path, limit: int | None = None, batch: int = 32,
             only: set[str] | None = None) -> dict:
  """`only`: these image ids alone (e.g. a built dataset's test split)."""
  table = rsna.read_labels(rsna.find_layout(root)[1])
  keep = [k for k, i in enumerate(table.image_ids) if only is None or i in only][:limit]
  ids, labels = [table.image_ids[k] for k in keep], table.labels[keep]
  masks = _masks(root)
  predictor = Predictor.from_checkpoint(checkpoint)
  outputs = predictor.labels
  probs, status, hits = [], [], []
  for start in range(0, len(ids), batch):
    chunk = ids[start:start + batch]
    preds = predictor.predict([root / phantom.IMAGES_DIR / f"{i}.dcm" for i in chunk])
    for k, (image_id, p) in enumerate(zip(chunk, preds), start):
      probs.append([p.probabilities.get(o, np.nan) for o in outputs])
      status.append(p.status)
      if labels[k, tasks.ANY]:
        hits.append(_box_hit(p.box, masks[image_id] > 0))
  probs, status = np.array(probs, np.float64), np.array(status)
  y = labels[:, [tasks.LABELS.index(o) for o in outputs]]
  ok = status == "ok"
  result = {"slices": len(ids), "answered": float(ok.mean()),
            "status": {s: int((status == s).sum()) for s in np.unique(status)},
            "positives": {o: int(y[:, k].sum()) for k, o in enumerate(outputs)},
            "auc_all": {}, "auc_answered": {}}
  for k, o in enumerate(outputs):
    scored = ~np.isnan(probs[:, k])
    result["auc_all"][o] = metrics.roc_auc(y[scored, k], probs[scored, k])
    result["auc_answered"][o] = metrics.roc_auc(y[ok, k], probs[ok, k]) if ok.any() else None
  if "any" in outputs:
    k = outputs.index("any")
    threshold = predictor.specs[0].operating_points()["any"]
    scored = ~np.isnan(probs[:, k])
    cm = metrics.confusion_matrix(y[scored, k], (probs[scored, k] >= threshold).astype(int), 2)
    sens, spec = metrics.sensitivity_specificity(cm)
    result["any_at_operating_point"] = {"threshold": threshold, "sensitivity": sens,
                                        "specificity": spec}
  result["box_hit_rate"] = float(np.mean(hits)) if hits else None
  return result


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--checkpoint", default="checkpoints/multilabel")
  p.add_argument("--data", type=Path, required=True, help="RSNA-format synthetic folder")
  p.add_argument("--limit", type=int, default=None, help="at most this many slices")
  p.add_argument("--test-split-of", type=Path, default=None, metavar="TFDS_DIR",
                 help="only the slices of this dataset's test split (built from --data)")
  p.add_argument("--json", type=Path, default=None, help="also write the result here")
  args = p.parse_args()
  only = (set(builders.read_meta(args.test_split_of, "test")["image_id"])
          if args.test_split_of else None)
  result = evaluate(args.checkpoint, args.data, args.limit, only=only)
  text = json.dumps(result, indent=1, default=float)
  print(text)
  if args.json:
    args.json.write_text(text + "\n")


if __name__ == "__main__":
  main()
