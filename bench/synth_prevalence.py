"""Share of synthetic slices positive per subtype (what `synth.write_rsna` labels).

Why: the subject-level draw (`synth.sample_subtypes`) sets prevalence only indirectly; a
subject's bleed covers some of its slices. This renders whole series (scanner drawn as in
`write_rsna`, small matrix: labels use areas in mm^2) and counts labelled slices.
Usage: python -m bench.synth_prevalence [--subjects 20] [--positive 0.75] [--size 128]
"""

from __future__ import annotations

import argparse

import numpy as np

from ichflax import tasks
from ichflax.data import synth


def prevalence(subjects: int, positive: float, size: int, seed: int = 0) -> dict[str, float]:
  """Share of slices positive per label, and of slices in positive subjects (`in_positive`)."""
  labels, in_positive = [], []
  for index in range(subjects):
    rng = np.random.default_rng([seed, index, 25])
    subject = synth.make_subject(rng, synth.sample_subtypes(rng, positive))
    scanner = synth.Scanner.sample(rng, subject.head_mm)
    slices, _ = synth.render_series(subject, scanner, size, rng)
    y = np.array([s.labels for s in slices])
    labels.append(y)
    if subject.subtypes:
      in_positive.append(y[:, tasks.ANY])
  y = np.concatenate(labels)
  table = {name: float(y[:, i].mean()) for i, name in enumerate(tasks.LABELS)}
  table["in_positive"] = float(np.concatenate(in_positive).mean()) if in_positive else 0.0
  table["slices"] = float(len(y))
  return table


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--subjects", type=int, default=20)
  p.add_argument("--positive", type=float, default=0.75, help="share of positive subjects")
  p.add_argument("--size", type=int, default=128)
  args = p.parse_args()
  for name, value in prevalence(args.subjects, args.positive, args.size).items():
    print(f"{name:18s} {value:.3f}")


if __name__ == "__main__":
  main()
