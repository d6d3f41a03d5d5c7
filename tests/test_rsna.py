"""RSNA labels (duplicates, conflicts, missing rows), Kaggle layouts, the two split protocols."""

import numpy as np
import pytest

from ichflax import tasks
from ichflax.data import rsna


def _csv(path, rows, header="ID,Label"):
  path.write_text(header + "\n" + "".join(f"{r}\n" for r in rows))
  return path


def _image_rows(image_id, labels):
  return [f"{image_id}_{name},{y}" for name, y in zip(tasks.LABELS, labels)]


def test_read_labels_tolerates_identical_duplicates(tmp_path):
  rows = (_image_rows("ID_a1", [0, 1, 0, 0, 0, 1]) + _image_rows("ID_b2", [0] * 6)
          + ["ID_a1_any,1", "ID_a1_epidural,0"])  # the real file repeats some rows
  table = rsna.read_labels(_csv(tmp_path / "stage_2_train.csv", rows))
  assert table.image_ids == ["ID_a1", "ID_b2"]
  np.testing.assert_array_equal(table.labels, [[0, 1, 0, 0, 0, 1], [0] * 6])
  assert table.labels.dtype == np.int32 and table.problems == []


def test_conflicting_and_missing_rows_are_reported_and_left_out(tmp_path):
  rows = (_image_rows("ID_ok", [1, 0, 0, 0, 0, 1]) + _image_rows("ID_conf", [0] * 6)
          + ["ID_conf_subdural,1"] + _image_rows("ID_short", [0] * 6)[:4])
  table = rsna.read_labels(_csv(tmp_path / "l.csv", rows))
  assert table.image_ids == ["ID_ok"]
  assert table.problems == ["ID_conf: conflicting duplicate rows for subdural (0 and 1)",
                            "ID_short: missing label rows for subdural, any"]


@pytest.mark.parametrize("rows,header,match", [
    ([], "id;label", "header 'ID,Label'"),
    (["ID_a1_epidural,2"], "ID,Label", r"line 2: expected 'ID_<hex>_<type>,<0\|1>'"),
    (["ID_a1_bleed,1"], "ID,Label", "line 2"),
    (["ID_a1_any,1"], "ID,Label", "no image has all six label rows"),
])
def test_unusable_label_files(tmp_path, rows, header, match):
  with pytest.raises(rsna.LabelError, match=match):
    rsna.read_labels(_csv(tmp_path / "l.csv", rows, header))


def test_missing_label_file(tmp_path):
  with pytest.raises(rsna.LabelError, match="label file not found"):
    rsna.read_labels(tmp_path / "nope.csv")


def test_find_layout_stage1_stage2_and_nested(tmp_path):
  s1 = tmp_path / "s1"
  (s1 / "stage_1_train_images").mkdir(parents=True)
  _csv(s1 / "stage_1_train.csv", [])
  assert rsna.find_layout(s1) == (s1 / "stage_1_train_images", s1 / "stage_1_train.csv")
  kaggle = tmp_path / "dl" / "rsna-intracranial-hemorrhage-detection"
  (kaggle / "stage_2_train").mkdir(parents=True)
  _csv(kaggle / "stage_1_train.csv", [])
  _csv(kaggle / "stage_2_train.csv", [])
  assert rsna.find_layout(tmp_path / "dl") == (kaggle / "stage_2_train",
                                               kaggle / "stage_2_train.csv")
  (tmp_path / "empty").mkdir()
  with pytest.raises(rsna.LabelError, match="no RSNA layout found"):
    rsna.find_layout(tmp_path / "empty")
  with pytest.raises(rsna.LabelError, match="not a folder"):
    rsna.find_layout(tmp_path / "missing")


def _random_labels(n, seed=0):
  """RSNA-like: mostly normal; positives with one or two subtypes."""
  rng = np.random.default_rng(seed)
  labels = np.zeros((n, 6), np.int32)
  bleed = rng.random(n) < 0.6
  labels[bleed, rng.integers(0, 5, n)[bleed]] = 1
  two = bleed & (rng.random(n) < 0.2)
  labels[two, rng.integers(0, 5, n)[two]] = 1
  labels[:, tasks.ANY] = labels[:, :5].max(axis=1)
  return labels


def test_paper_protocol_sizes_groups_and_disjointness():
  labels = _random_labels(30000)
  split = rsna.balanced_split(labels, 2000, seed=3)
  sizes = {s: np.bincount(g, minlength=6).tolist() for s, (_, g) in split.items()}
  assert sizes == {"train": [1440] * 6, "validation": [160] * 6, "test": [400] * 6}
  every = np.concatenate([i for i, _ in split.values()])
  assert len(every) == len(set(every.tolist())) == 12000  # no image in two splits or classes
  for idx, group in split.values():
    sub = group < tasks.NO_HEMORRHAGE_GROUP
    assert (labels[idx[sub], group[sub]] == 1).all()  # drawn from its class's folder
    assert (labels[idx[~sub], tasks.ANY] == 0).all()
  again = rsna.balanced_split(labels, 2000, seed=3)
  assert all((again[s][0] == split[s][0]).all() for s in rsna.SPLITS)
  assert not (rsna.balanced_split(labels, 2000, seed=4)["test"][0] == split["test"][0]).all()


def test_paper_protocol_too_few_images_says_what_to_do():
  labels = _random_labels(300)
  most = rsna.max_per_class(labels)
  assert most > 3
  assert len(rsna.balanced_split(labels, most)["train"][0]) > 0
  with pytest.raises(ValueError, match=f"use --per-class {most} or less"):
    rsna.balanced_split(labels, most + 1)
  with pytest.raises(ValueError, match="at least 3"):
    rsna.balanced_split(labels, 2)


def test_full_protocol_splits_by_study():
  studies = [f"ID_s{i // 7}" for i in range(700)]  # 100 studies of 7 slices
  split = rsna.by_patient_split(studies, seed=1)
  every = np.concatenate([i for i, _ in split.values()])
  assert sorted(every.tolist()) == list(range(700))
  by_split = {s: {studies[i] for i in idx} for s, (idx, _) in split.items()}
  assert [len(by_split[s]) for s in rsna.SPLITS] == [80, 10, 10]
  assert not (by_split["train"] & by_split["test"] or by_split["train"] & by_split["validation"]
              or by_split["validation"] & by_split["test"])
  assert all((g == tasks.NO_GROUP).all() for _, g in split.values())
  # Unknown studies: each image is its own unit.
  assert sum(len(i) for i, _ in rsna.by_patient_split([""] * 30).values()) == 30
  with pytest.raises(ValueError, match="needs at least 3"):
    rsna.by_patient_split(["ID_a", "ID_a", "ID_b"])


def test_count_by_group_names_classes():
  assert rsna.count_by_group([0, 0, 5, -1]) == {"epidural": 2, "no hemorrhage": 1, "all": 1}


def test_full_split_by_patient_draws_as_by_study_when_each_patient_has_one_study():
  studies = [f"ID_s{i % 12:02d}" for i in range(60)]
  patients = [f"p{(i % 12) * 7 % 12}" for i in range(60)]  # one patient per study, other names
  assert _as_lists(rsna.by_patient_split(studies, seed=3, patient_keys=patients)) == _as_lists(
      rsna.by_patient_split(studies, seed=3))
  shared = [f"p{(i % 12) // 2}" for i in range(60)]  # two studies each: kept together
  split = rsna.by_patient_split(studies, seed=3, patient_keys=shared)
  where: dict[str, set] = {}
  for s, (indices, _) in split.items():
    for k in indices.tolist():
      where.setdefault(shared[k], set()).add(s)
  assert len(where) == 6 and all(len(v) == 1 for v in where.values()), where


def _as_lists(split):
  return {s: i.tolist() for s, (i, _) in split.items()}
