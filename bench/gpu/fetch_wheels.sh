#!/usr/bin/env bash
# Downloads, on a machine with PyPI access, the wheels bench/gpu/run.sh installs on a GPU box
# that has no internet. Only what that box lacks travels (its image already holds jax, flax,
# optax, orbax, torch, torchvision, numpy, pillow, protobuf, pyarrow, absl-py, etils, ...; see
# /work/.library/device/KINDS.md): the data stack (TFDS, array_record, grain, pydicom) and their
# pure-Python needs, pinned to the versions this repo is tested with. Python 3.12, x86-64.
#   bash bench/gpu/fetch_wheels.sh            # -> .whl/ (ignored by git), < 64 MiB
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.whl
PY=${PYTHON:-python3}
WHEELS=(
  tensorflow-datasets==4.9.10 array-record==0.8.6 grain==0.2.18 pydicom==3.0.2
  dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2
  portpicker==1.6.0
)
# Published only as a source archive: built here into a pure-Python wheel.
SDIST_ONLY=(promise==2.3)
mkdir -p "$DEST"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DEST" "${SDIST_ONLY[@]}"
du -sh "$DEST"
ls "$DEST"
