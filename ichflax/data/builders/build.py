"""Build TFDS datasets from the phantom, an RSNA download or the paper's PNG folders.

A build has two stages. (1) Every source file is converted, in parallel worker processes, into
a cached PNG of the model image under `<out>/_work/` (a re-run skips files already done, so an
interrupted build resumes; a bad file is skipped and listed in the report). (2) A TFDS builder
writes the splits as array_record. Beside the TFDS files we keep a small labels side file per
split, so `read.read_meta` never decodes an image, and `ichflax.json` for `read.dataset_info`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from ichflax import parallel, tasks
from ichflax.data import convert, image, phantom, rsna, synth
from ichflax.data.builders.read import INFO_FILE, REPORT_FILE, DataError, resolve
from ichflax.data.builders.tfds_builders import BUILDERS, VERSION, Record

CACHE_ENV = "ICHFLAX_DATA_DIR"
DEFAULT_CACHE = "data_cache"
PAPER_PER_CLASS = 2000
# Folder names accepted for the paper's PNG classes (case-insensitive).
PNG_FOLDERS = {**{name: g for g, name in enumerate(tasks.SUBTYPES)},
               **dict.fromkeys(("no", "normal", "none", "no_hemorrhage", "negative"),
                               tasks.NO_HEMORRHAGE_GROUP)}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_POOL_MIN_FILES = 64  # below this, worker start-up costs more than it saves
log = logging.getLogger("ichflax.data.builders")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """How slices are stored and split."""

  size: int = 256  # stored image side, pixels
  windows: int = 3  # 3: brain, subdural, bone as RGB; 1: the paper-style brain window
  draw: str = "balanced"  # rsna.DRAWS: per class, 80:20 then 90:10; or by-patient: every slice
  per_class: int | None = None  # balanced, paper-code; None: 2000 (RSNA, PNG) or phantom's most
  seed: int = 0  # random seed of the split draw
  workers: int | None = None  # conversion processes; None: one per CPU core
  # Share of images stored after a JPEG round trip (quality 30-95, fixed per image): serving
  # meets JPEG exports, a synthetic set has none.
  jpeg_share: float = 0.0

  def __post_init__(self):
    if self.draw not in rsna.DRAWS:
      raise DataError(f"unknown draw {self.draw!r}: choose one of {', '.join(rsna.DRAWS)}")
    if self.size < 8:
      raise DataError(f"size {self.size} is too small: use at least 8 (e.g. 256)")
    image.windows_for(self.windows)  # raises for anything but 3 or 1
    if not 0 <= self.jpeg_share <= 1:
      raise DataError(f"JPEG share must be in [0, 1], got {self.jpeg_share}")

  def jpeg_quality(self, image_id: str) -> int | None:
    """This image's JPEG quality, or None: drawn from its id, so rebuilds store the same."""
    h = int(hashlib.sha256(image_id.encode()).hexdigest()[:12], 16)
    return 30 + (h // 1000) % 66 if h % 1000 < self.jpeg_share * 1000 else None


@dataclasses.dataclass(frozen=True)
class _Item:
  source: str
  image_id: str
  labels: np.ndarray  # (6,)
  test: bool = False  # in a class folder's test/ subfolder: the test split as given


def cache_dir() -> Path:
  """Where `prepare` keeps built datasets: $ICHFLAX_DATA_DIR, else ./data_cache."""
  return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _write_side_files(dataset_dir: Path, plan: dict[str, list[Record]], info: dict,
                      report: list[str]) -> None:
  for split, records in plan.items():
    np.savez(dataset_dir / f"meta-{split}.npz",
             labels=np.array([r.labels for r in records], np.int32).reshape(-1, 6),
             group=np.array([r.group for r in records], np.int32),
             image_id=np.array([r.image_id for r in records], str),
             study_id=np.array([r.study_id for r in records], str),
             series_id=np.array([r.series_id for r in records], str),
             position=np.array([r.position for r in records], np.float64),
             instance=np.array([r.instance for r in records], np.int64))
  (dataset_dir / REPORT_FILE).write_text(
      f"# ichflax build report for {dataset_dir}\n# {len(report)} items skipped\n"
      + "".join(f"{line}\n" for line in report))
  (dataset_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class _Draw:
  """How a build's draw splits its items; every draw choice of a build is made here.

  The balanced and paper-code draws take per class before anything is converted (and again
  around files that fail, so classes stay balanced); `by-patient` splits every usable file by
  patient (else study) after conversion.
  Class folders with `test/` subfolders give the test split as it is (per-class draws).
  """

  name: str  # rsna.DRAWS
  labels: np.ndarray  # (N, 6)
  groups: np.ndarray  # (N,) the folder each item would be drawn for
  is_test: np.ndarray  # (N,) bool: in a class folder's test/ subfolder
  per_class: int | None
  seed: int

  @classmethod
  def of(cls, cfg: BuildConfig, kind: str, items: list[_Item]) -> _Draw:
    labels = np.stack([it.labels for it in items])
    per_class = None
    if cfg.draw == "balanced":
      per_class = cfg.per_class or (rsna.max_per_class(labels) if kind == "phantom"
                                    else PAPER_PER_CLASS)
    elif cfg.draw == "paper-code":  # a cap, as the authors' parser used it: never too many
      per_class = cfg.per_class or PAPER_PER_CLASS
    groups = np.where(labels[:, tasks.ANY] == 1, labels[:, :tasks.ANY].argmax(1),
                      tasks.NO_HEMORRHAGE_GROUP)
    return cls(cfg.draw, labels, groups, np.array([it.test for it in items]), per_class,
               cfg.seed)

  @property
  def before_conversion(self) -> bool:
    return self.name != "by-patient"

  def split(self, pool: np.ndarray, study_ids: list[str] | None = None,
            patient_keys: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split name -> (item indices, their groups), drawn from the items in `pool`; the
    by-patient draw keeps each patient (else study) in one split."""
    if not self.before_conversion:
      split = rsna.by_patient_split(study_ids, self.seed, patient_keys=patient_keys)
    elif self.is_test.any():
      split = rsna.given_test_split(self.groups[pool], self.is_test[pool], self.seed)
    elif self.name == "balanced":
      split = rsna.balanced_split(self.labels[pool], self.per_class, self.seed)
    else:
      split = rsna.paper_code_split(self.labels[pool], self.per_class, self.seed)
    return {s: (pool[i], g) for s, (i, g) in split.items()}


def _convert_drawn(draw: _Draw, convert_items: Callable[[list[int]], list[convert.Result]]
                   ) -> tuple[dict[int, convert.Result], dict[str, tuple[np.ndarray, np.ndarray]]]:
  """(conversion result per converted item, the split): converts only what the split needs."""
  n = len(draw.labels)
  if not draw.before_conversion:
    results = dict(enumerate(convert_items(list(range(n)))))
    ok = np.array([i for i in range(n) if not results[i].error], int)
    # By patient where the files name one, else by study: no patient's scans in two splits.
    return results, draw.split(ok, [results[i].study_id for i in ok.tolist()],
                               [results[i].patient_key for i in ok.tolist()])
  results: dict[int, convert.Result] = {}
  usable = np.ones(n, bool)
  failed = [-1]
  while failed:  # ends: a round with failures marks at least one more file unusable
    drawn = draw.split(np.flatnonzero(usable))
    chosen = set(np.concatenate([i for i, _ in drawn.values()]).tolist())
    todo = sorted(chosen - results.keys())
    results.update(zip(todo, convert_items(todo)))
    failed = [i for i in chosen if results[i].error]
    usable[failed] = False
  return results, drawn


def _build(kind: str, items: list[_Item], out: Path, cfg: BuildConfig, name: str,
           description: str, report: list[str], file_kind: str = "dicom", *,
           source: Path) -> Path:
  """Convert (cached), split, write TFDS + side files; returns the dataset dir.

  `report`: what the caller already skipped; conversion failures are listed after it. The
  image cache is kept per source folder: two sources may share image ids, never images.
  """
  builder_cls = BUILDERS[kind]
  dataset_dir = out / builder_cls.name / name / VERSION
  if (dataset_dir / INFO_FILE).exists():
    log.info("using the existing dataset %s", dataset_dir)
    return dataset_dir
  if not items:
    raise DataError(f"{description}: no usable images found")
  jpeg = f"_jpg{round(cfg.jpeg_share * 100)}" if cfg.jpeg_share else ""
  work = (out / "_work" / builder_cls.name / f"s{cfg.size}_w{cfg.windows}{jpeg}"
          / _source_key(source))
  work.mkdir(parents=True, exist_ok=True)
  windows = image.windows_for(cfg.windows)
  draw = _Draw.of(cfg, kind, items)
  if draw.is_test.any():
    log.info("%s: the test/ subfolders are the test split; every other image trains or "
             "validates (no per-class draw)", description)

  def convert_items(todo: list[int]) -> list[convert.Result]:
    jobs = [convert.Job(items[i].source, os.fspath(work / f"{items[i].image_id}.png"),
                        file_kind, cfg.size, windows, cfg.jpeg_quality(items[i].image_id))
            for i in todo]
    return parallel.map_ordered(convert.run, jobs, workers=cfg.workers,
                                serial_below=_POOL_MIN_FILES, chunksize=16, desc="convert",
                                unit="files")

  start = time.perf_counter()
  results, drawn = _convert_drawn(draw, convert_items)
  seconds = time.perf_counter() - start
  failed = {i for i, r in results.items() if r.error}
  problems = [*report, *(f"{items[i].source}: {results[i].error}" for i in sorted(failed))]
  plan = {split: [Record(results[i].target, tuple(int(v) for v in items[i].labels), int(g),
                         items[i].image_id, results[i].study_id, results[i].series_id,
                         results[i].position, results[i].instance)
                  for i, g in zip(idx.tolist(), groups.tolist()) if i not in failed]
          for split, (idx, groups) in drawn.items()}
  empty = [split for split, records in plan.items() if not records]
  if empty:
    raise DataError(f"{description}: split {', '.join(empty)} would be empty (too few usable "
                    "files); first problems: " + "; ".join(problems[:3] or ["none"]))
  _fit_splits_in_memory(plan, description)
  tfds.disable_progress_bar()
  builder = builder_cls(plan=plan, size=cfg.size, channels=cfg.windows, data_dir=os.fspath(out),
                        config=tfds.core.BuilderConfig(name=name), file_format="array_record")
  builder.download_and_prepare()
  info = {"source": kind, "data": description, "draw": cfg.draw, "size": cfg.size,
          "channels": cfg.windows,
          "windows": [list(w) for w in windows] if file_kind == "dicom" else None,
          "per_class": draw.per_class, "seed": cfg.seed,
          "splits": {s: len(r) for s, r in plan.items()},
          "groups": {s: rsna.count_by_group([r.group for r in recs]) for s, recs in plan.items()},
          "skipped": len(problems), "report": REPORT_FILE,
          "convert_files_per_s": round(len(results) / max(seconds, 1e-9), 1)}
  _write_side_files(Path(builder.data_dir), plan, info, problems)
  log.info("built %s: %s; %d files in %.1fs (%s files/s); %d skipped%s", builder.data_dir,
           info["splits"], len(results), seconds, info["convert_files_per_s"], len(problems),
           f", listed in {Path(builder.data_dir) / REPORT_FILE}" if problems else "")
  return Path(builder.data_dir)


def _fit_splits_in_memory(plan: dict[str, list[Record]], description: str) -> None:
  """TFDS spills a split over 1 GB to disk through tf.io.gfile, i.e. TensorFlow, which ichflax
  does not install (a 9000-slice 256 px build failed so): hold splits in memory up to half the
  RAM instead, and say so before the work when a split is larger still."""
  from tensorflow_datasets.core import shuffle
  limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
  shuffle.MAX_MEM_BUFFER_SIZE = max(shuffle.MAX_MEM_BUFFER_SIZE, limit)
  for split, records in plan.items():
    size = sum(os.path.getsize(r.png) for r in records)
    if size > shuffle.MAX_MEM_BUFFER_SIZE:
      raise DataError(f"{description}: the {split} split holds {size / 2**30:.1f} GiB of images, "
                      f"more than half this machine's memory ({limit / 2**30:.1f} GiB), which "
                      "TFDS needs to write it without TensorFlow: build on a machine with more "
                      "memory, a smaller --size, or install tensorflow-cpu for the build only")


def _source_key(path: Path) -> str:
  """Short stable name of a source folder, so that another folder never reuses its builds."""
  return "src" + hashlib.sha256(os.fspath(path.resolve()).encode()).hexdigest()[:8]


def _config_name(cfg: BuildConfig, prefix: str = "") -> str:
  parts = [prefix, cfg.draw.replace("-", "_"), f"s{cfg.size}", f"w{cfg.windows}",
           f"pc{cfg.per_class}" if cfg.draw != "by-patient" and cfg.per_class else "",
           f"jpg{round(cfg.jpeg_share * 100)}" if cfg.jpeg_share else "",
           f"seed{cfg.seed}"]
  return "_".join(p for p in parts if p)


def build_rsna(root: str | os.PathLike, out: str | os.PathLike, cfg: BuildConfig = BuildConfig(),
               *, prefix: str = "") -> Path:
  """An RSNA-format folder (Kaggle layout: CSV + images folder) -> TFDS dataset dir.

  A folder written by the phantom is built as `ich_phantom`, so its results say "synthetic".
  """
  images, csv_path = rsna.find_layout(root)
  kind = "phantom" if (images.parent / phantom.MARKER).exists() else "rsna"
  table = rsna.read_labels(csv_path)
  report = list(table.problems)
  names = os.listdir(images)
  # DICOMs (the Kaggle download), or the seed's set: the same CSV beside ID_*.png (grey 128 px,
  # Kaggle "rsna_stage1_png_128"), read as pictures that are already windowed.
  suffix = next((x for x in (".dcm", ".png") if any(n.lower().endswith(x) for n in names)), None)
  if suffix is None:
    raise DataError(f"{images}: no .dcm or .png images in the images folder")
  file_kind = "dicom" if suffix == ".dcm" else "image"
  on_disk = {n[:-4] for n in names if n.lower().endswith(suffix)}
  items = []
  for image_id, labels in zip(table.image_ids, table.labels):
    if image_id in on_disk:
      items.append(_Item(os.fspath(images / f"{image_id}{suffix}"), image_id, labels))
    else:
      report.append(f"{images / (image_id + suffix)}: file missing (labelled in "
                    f"{csv_path.name})")
  unlabelled = len(on_disk) - len(items)
  if unlabelled:
    log.info("%d %s files in %s have no labels and are not used", unlabelled, suffix, images)
  what = "PNG " if file_kind == "image" else ""
  if kind == "phantom":  # the marker says which generator: the anatomical one or the old
    maker = "anatomy-based " if "ichflax.data.synth" in (
        images.parent / phantom.MARKER).read_text() else ""
    description = (f"{maker}synthetic phantom ({len(items)} {what}slices, "
                   f"{images.parent.resolve()})")
  else:
    description = f"RSNA {what}folder {images.parent.resolve()}"
  # A phantom's prefix already names its folder (count, seed); a user's folder gets its key.
  name = _config_name(cfg, prefix or _source_key(images.parent))
  return _build(kind, items, Path(out), cfg, name, description, report, file_kind,
                source=images.parent)


def build_png(root: str | os.PathLike, out: str | os.PathLike,
              cfg: BuildConfig = BuildConfig()) -> Path:
  """The paper's PNG folders (one per subtype plus "no") -> TFDS dataset dir.

  A class folder's `test/` subfolder, when the folders have one, is the test split as given;
  any other subfolder is listed in the build report as not used.
  """
  root = Path(root)
  folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
  found = {PNG_FOLDERS[n]: p for n, p in folders.items() if n in PNG_FOLDERS}
  if len(found) < 6:
    raise DataError(f"{root}: expected one folder per class ({', '.join(tasks.SUBTYPES)} and "
                    f"no/normal), found {sorted(folders) or 'none'}")
  items, report = [], []
  for n in sorted(set(folders) - set(PNG_FOLDERS)):
    log.info("folder %s is not a class name and is not used", folders[n])
  for group, folder in sorted(found.items()):
    labels = np.zeros(6, np.int32)
    if group < tasks.NO_HEMORRHAGE_GROUP:
      labels[[group, tasks.ANY]] = 1
    for path in sorted(folder.iterdir()):
      test = path.is_dir() and path.name.lower() == "test"
      for file in sorted(path.iterdir()) if test else [path]:
        if file.suffix.lower() in _IMAGE_SUFFIXES and file.is_file():
          items.append(_Item(os.fspath(file), f"{group}_{'test_' * test}{file.stem}", labels,
                             test))
        elif file.is_dir():
          report.append(f"{file}: a subfolder, not used (only a class folder's test/ is read)")
        else:
          report.append(f"{file}: not a PNG/JPG image, not used")
  tested = {g for g, f in found.items()
            if any(p.is_dir() and p.name.lower() == "test" for p in f.iterdir())}
  if tested and len(tested) < len(found):
    missing = sorted(found[g].name for g in set(found) - tested)
    raise DataError(f"{root}: some class folders have a test/ subfolder but {', '.join(missing)} "
                    "not: give every class a test/ subfolder, or none (then the test split is "
                    "drawn)")
  return _build("png", items, Path(out), cfg, _config_name(cfg, _source_key(root)),
                f"PNG folders {root.resolve()}", report, file_kind="image", source=root)


def build_phantom(out: str | os.PathLike, cfg: BuildConfig = BuildConfig(), *, num: int = 3000,
                  phantom_seed: int = 0) -> Path:
  """Generate (once) anatomy-based synthetic series under `out`, then build them as ich_phantom.

  Slices are rendered at twice the stored side (at least 256 px), as a real 512 matrix is
  stored at 256: the dataset holds what serving makes of a real series.
  """
  out = Path(out)
  size = max(2 * cfg.size, 256)
  raw = out / "synth_rsna" / f"n{num}_s{size}_seed{phantom_seed}"
  if not (raw / phantom.CSV_NAME).exists():  # the CSV is written last: its presence = complete
    log.info("generating %d synthetic slices in %s", num, raw)
    # At least ~12 series, so that even a small set splits by study into train, validation
    # and test; up to 40 slices a series (a head at 5 mm) for large sets.
    synth.write_rsna(raw, num, seed=phantom_seed, size=size, workers=cfg.workers,
                     per_series=max(3, min(40, num // 12)))
  return build_rsna(raw, out, cfg, prefix=f"n{num}_sy{phantom_seed}")


def prepare(data: str | os.PathLike | None = None, *, size: int = 256, windows: int = 3,
            draw: str = "balanced", per_class: int | None = None, seed: int = 0,
            num: int = 3000, out: str | os.PathLike | None = None,
            workers: int | None = None) -> str:
  """A dataset dir ready for `open_split`: builds on first use, then reuses it.

  data: None or "phantom" (the synthetic default, `num` slices), a built TFDS dir, an RSNA
  folder, or the paper's PNG folders. Built data goes to `out` (default `cache_dir()`).
  """
  cfg = BuildConfig(size, windows, draw, per_class, seed, workers)
  out = Path(out) if out else cache_dir()
  if data is None or data == "phantom":
    return os.fspath(build_phantom(out, cfg, num=num))
  path = Path(data)
  if not path.exists():
    raise DataError(f"{path}: no such folder; give a TFDS dataset dir, an RSNA folder, the "
                    "paper's PNG folders, or leave data unset for the synthetic phantom")
  if (path / "dataset_info.json").exists():
    return os.fspath(path)
  try:
    rsna.find_layout(path)
  except rsna.LabelError:
    if path.is_dir() and any(p.name.lower() in PNG_FOLDERS for p in path.iterdir()):
      return os.fspath(build_png(path, out, cfg))
    return os.fspath(resolve(path))  # a folder above a built dataset, or a clear error
  log.info("%s is an RSNA download, not a built dataset: building it into %s (set "
           "$ICHFLAX_DATA_DIR or run `python -m ichflax.data build` to choose where; later runs "
           "reuse it)", path, out)
  return os.fspath(build_rsna(path, out, cfg))


__all__ = ("BuildConfig", "build_phantom", "build_png", "build_rsna", "cache_dir", "prepare")
