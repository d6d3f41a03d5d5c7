"""How the checkpoint's checks answer pictures: phantom slices as people export them, and
pictures that are not CT slices (`bench/pictures.py`), through the Predictor as the page runs it.

    python bench/picture_rates.py [--checkpoint checkpoints/multilabel] [--subjects 6] [--json P]

Per kind of picture: the share ok, out of domain (features or shape) and out of scope, over
fresh anatomy-phantom subjects (a seed no dataset uses), and the same slices as DICOM beside them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, pictures
from ichflax.data import ct_writer, items
from ichflax.serving import predictor as predictor_lib

SEED = 4242


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", default=str(common.ROOT / "checkpoints" / "multilabel"))
  p.add_argument("--subjects", type=int, default=6)
  p.add_argument("--levels", type=int, default=8)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  predictor = predictor_lib.Predictor.from_checkpoint(args.checkpoint)
  slices = pictures.phantom_hu(SEED, args.subjects, args.levels, 512)
  kinds: dict[str, list] = collections.defaultdict(list)
  with tempfile.TemporaryDirectory() as tmp:
    for i, hu in enumerate(slices):
      path = Path(tmp) / f"s{i}.dcm"
      ct_writer.write_ct(path, hu, items.SliceGeometry(f"ID_{i}", "ID_st", "ID_se", i + 1, i),
                         patient_id="PHANTOM")
      kinds["DICOM (the same slices)"].append(predictor.load(path))
      for name, picture in pictures.exports(hu).items():
        kinds[name].append(picture)
    for name, (picture, _) in pictures.not_ct(slices[len(slices) // 2]).items():
      kinds[f"not CT: {name}"].append(picture)
    kinds["not CT: two slices side by side"] = [pictures.side_by_side(hu) for hu in slices[::4]]
    kinds["not CT: dark bar chart"].append(pictures.dark_chart())
    rows = []
    for name, items_ in kinds.items():
      counts = collections.Counter(r.status for r in predictor.predict(items_, gradcam_on=False))
      rows.append({"kind": name, "n": len(items_),
                   **{s: counts[s] / len(items_) for s in ("ok", "out_of_domain", "out_of_scope")}})
      print(f"| {name} | {len(items_)} | {rows[-1]['ok']:.2f} | {rows[-1]['out_of_domain']:.2f} "
            f"| {rows[-1]['out_of_scope']:.2f} |", flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps({"machine": common.machine_info(), "rows": rows},
                                          indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
