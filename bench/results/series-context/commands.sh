#!/bin/bash
# How bench/results/series-context/ was made: 2-core Intel Xeon, no GPU, 2026-12-04; phantom data
# only. The two slice runs shared the CPU with other jobs: their wall times are not comparable.
set -e
python -m ichflax.data phantom --out RAW0 --slices 1500 --matrix 256 --per-series 15 --seed 0
python -m ichflax.data build --rsna RAW0 --out DATA --draw by-patient --stored-size 128   # -> DS0
python -m ichflax.train --task multilabel --data DS0 --context 1 --workdir runs/k1          # cpu-demo
python -m ichflax.train --task multilabel --data DS0 --context 3 --workdir runs/k3
python -m ichflax.train --sequence-from runs/k1 --workdir runs/k1-seq    # k1-seq-report.md
python -m ichflax.train --sequence-from runs/k3 --workdir runs/k3-seq    # k3-seq-report.md
python -m ichflax.data phantom --out RAW1 --slices 1500 --matrix 256 --per-series 15 --seed 1
python -m ichflax.data build --rsna RAW1 --out HELD --draw by-patient --stored-size 128   # -> DS1
python bench/series_context.py --stages runs/k1-seq runs/k3-seq --series ONE_15_SLICE_SERIES_OF_RAW1 \
    --held-out DS1 --out side_by_side.json
for K in 1 3; do
  python bench/train_throughput.py --modes compute --trainable all --image-size 96 --batch-sizes 16 \
      --dtype fp32 --stored-size 128 --context $K --steps 5 --repeats 3 --task multilabel \
      --no-cost-analysis --json train_step_k$K.json
done
