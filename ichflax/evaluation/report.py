"""Run reports in JSON and Markdown: the paper's Tables 1-4 beside ours, and the curves.

Every figure in a report names its data: ours (the phantom or RSNA, from the dataset's info) and
the paper's (RSNA stage 1). Research and education use only; not a medical device.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ichflax import tasks
from ichflax.evaluation import metrics, paper
from ichflax.jsonable import jsonable
from ichflax.progress import EpochRecord
from ichflax.spec import ModelSpec

DISCLAIMER = "Research and education use only; not a medical device."


def build(spec: ModelSpec, history: Sequence[EpochRecord], test: dict, *,
          config: dict | None = None, extra: dict | None = None) -> dict:
  """The report as a dict: curves, start/end table, test metrics, paper figures if any."""
  task = tasks.get_task(spec.task)
  start, end = history[0], history[-1]
  table = {
      "loss": {"train": (start.train_loss, end.train_loss),
               "validation": (start.val_loss, end.val_loss), "test": test["loss"]},
      "accuracy": {"train": (start.train_accuracy, end.train_accuracy),
                   "validation": (start.val_accuracy, end.val_accuracy),
                   "test": test["accuracy"]},
  }
  out = {"task": task.name, "class_names": list(task.class_names), "data": spec.data,
         "spec": spec.to_json(), "epochs": len(history), "table": table, "test": test,
         "history": [dataclasses.asdict(h) for h in history], "config": config or {},
         "disclaimer": DISCLAIMER, **(extra or {})}
  if task.name in paper.RESULTS:
    out["paper"] = paper_figures(task.name)
  return out


def paper_figures(task_name: str) -> dict:
  """The paper's published figures plus the ones its confusion matrix implies."""
  ref = paper.RESULTS[task_name]
  cm = np.asarray(ref["confusion"])
  derived: dict[str, Any] = {"accuracy": float(np.trace(cm) / cm.sum())}
  if task_name == "binary":
    derived["sensitivity"], derived["specificity"] = metrics.sensitivity_specificity(cm)
  else:
    derived["per_class_sensitivity"] = dict(zip(tasks.SUBTYPES, metrics.per_class_sensitivity(cm)))
  return {**ref, "data": paper.DATA, "table_derived": derived}


def markdown(report: dict) -> str:
  """Human-readable report; the paper's columns appear only for the paper's two tasks."""
  ref = report.get("paper")
  n = report["test"].get("n", "?")
  lines = [f"# ichflax {report['task']} report", "",
           f"Ours: **{report['data']}**, {report['epochs']} epochs, test n = {n}.",
           f"Preset: **{report['config'].get('preset') or 'none'}**; {tested_line(report)}"]
  if ref:
    note = ("Different data: compare the shape, not the decimals." if "phantom" in report["data"]
            else "Same source, our own draw of the split.")
    lines.append(f"Paper: **{ref['data']}**. {note}")
  lines += [f"*{DISCLAIMER}*", "", "## Loss and accuracy, start -> end (paper Tables 1/3)", ""]
  head = "| | ours | paper |" if ref else "| | ours |"
  lines += [head, "|---|---|---|" if ref else "|---|---|"]
  for quantity in ("loss", "accuracy"):
    for split in ("train", "validation", "test"):
      row = f"| {quantity}, {split} | {_span(report['table'][quantity][split])} |"
      if ref:
        row += f" {_span(ref[quantity][split])} |"
      lines.append(row)
  lines += ["", "Train figures are epoch means in train mode (dropout, augmentation), as Keras "
            "reports them; validation and test are in eval mode.", ""]
  lines += _confusion_section(report, ref)
  lines += _metric_section(report, ref)
  if report.get("calibration"):
    lines += ["", *calibration_section(report["calibration"])]
  return "\n".join(lines) + "\n"


def tested_line(report: dict) -> str:
  """Which checkpoint the test figures come from (the paper's code tested its last epoch)."""
  epoch = report.get("best_epoch", "?")
  if report.get("tested") == "final":
    return f"tested: the **final** model (epoch {epoch}), as the paper's code did."
  return f"tested: the **best** checkpoint by validation (epoch {epoch})."


RELIABILITY_PNG = "reliability.png"
RISK_COVERAGE_PNG = "risk_coverage.png"


def calibration_section(c: dict) -> list[str]:
  """Temperatures, ECE before/after, operating points, and the training-domain check."""
  rel, dom = c["reliability"], c["domain"]
  out = ["## Calibration, operating points and training domain (fitted on validation)", "",
         f"Data: **{c['data']}**. Temperature scaling per output by validation NLL "
         f"({fmt(c['nll']['before'])} -> {fmt(c['nll']['after'])}); expected calibration error "
         f"(ECE, {len(rel['before']['count'])} bins, every slice x output) on validation "
         f"**{fmt(rel['before']['ece'])} -> {fmt(rel['after']['ece'])}**"]
  if "test" in c:
    out[-1] += f", on test {fmt(c['test']['ece']['before'])} -> {fmt(c['test']['ece']['after'])}"
  out[-1] += f". Reliability diagram: `{RELIABILITY_PNG}`."
  out += ["", f"Operating point per output: the highest threshold on the calibrated probability "
          f"whose validation sensitivity reaches {fmt(c['target_sensitivity'])}. The paper's "
          "tables stay at 0.5.", ""]
  where = "test" if "test" in c else "validation"
  out += [f"| output | temperature | threshold | {where} sens / spec at 0.5 | "
          f"{where} sens / spec at the operating point |", "|---|---|---|---|---|"]
  for label, t in c["temperatures"].items():
    at5, op = c[where]["at_0.5"][label], c[where]["at_operating_point"][label]
    out.append(f"| {label} | {fmt(t)} | {fmt(c['thresholds'][label])} | "
               f"{fmt(at5['sensitivity'])} / {fmt(at5['specificity'])} | "
               f"{fmt(op['sensitivity'])} / {fmt(op['specificity'])} |")
  flagged = f"validation {fmt(dom['validation_flagged'])}"
  if "test_flagged" in dom:
    flagged += f", test {fmt(dom['test_flagged'])}"
  out += ["", f"Training domain: pooled backbone features of the {dom['train_n']} training slices, "
          f"a Gaussian with {dom['components']} principal directions plus one shared residual "
          f"variance, and a Gaussian of the stored images' statistics (head size, bone, tissue "
          f"brightness, contrast, texture); each threshold = the {dom['percentile']:g}th "
          f"percentile of its validation scores ({fmt(dom['threshold'])}, "
          f"{fmt(dom.get('image_threshold'))}). Out of domain when either is passed; fraction "
          f"flagged: {flagged}."]
  if "picture_threshold" in dom:
    shown = f"validation {fmt(dom['validation_pictures_flagged'])}"
    if "test_pictures_flagged" in dom:
      shown += f", test {fmt(dom['test_pictures_flagged'])}"
    out += ["", "PNG/JPG pictures are judged by the features and, instead of the image "
            "statistics, by the distance to their nearest training slices in window-free shape "
            "statistics (head fraction, air along the edge, largest part, skull ring, fill of "
            f"the outline, tissue inside the skull; threshold {fmt(dom['picture_threshold'])}). "
            f"The same slices as brain-window pictures, fraction flagged: {shown}."]
  if c.get("risk_coverage"):
    out += ["", "Risk-coverage on validation: withholding the slices farthest from the training "
            "domain (by the larger of the two scores). `--domain-percentile P` withholds "
            "~(100 - P) % of slices like these; accuracy over every label at the operating "
            f"points, AUC of `any` (or the mean over outputs). Plot: `{RISK_COVERAGE_PNG}`.", "",
            "| withheld | percentile | answered | accuracy | AUC |", "|---|---|---|---|---|"]
    out += [f"| {100 * r['withheld']:g} % | {r['percentile']:g} | {fmt(r['coverage'])} | "
            f"{fmt(r['accuracy'])} | {fmt(r['auc'])} |" for r in c["risk_coverage"]]
  return out


def write_calibration(summary: dict, out_dir: str | Path, task_name: str) -> dict[str, Path]:
  """calibration.json, calibration.md and the reliability diagram, for `ichflax.calibrate`."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {"json": out_dir / "calibration.json", "md": out_dir / "calibration.md",
           "reliability_png": out_dir / RELIABILITY_PNG}
  paths["json"].write_text(json.dumps(jsonable(summary), indent=1))
  paths["md"].write_text("\n".join([f"# ichflax {task_name} calibration", "", f"*{DISCLAIMER}*",
                                    "", *calibration_section(summary)]) + "\n")
  _plot_reliability(summary, paths["reliability_png"], task_name)
  if summary.get("risk_coverage"):
    paths["risk_coverage_png"] = out_dir / RISK_COVERAGE_PNG
    _plot_risk_coverage(summary["risk_coverage"], paths["risk_coverage_png"], task_name)
  return paths


def _plot_risk_coverage(rows: list[dict], path: Path, task_name: str) -> None:
  """Accuracy and AUC of the answered validation slices against the share answered."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=100)
  coverage = [r["coverage"] for r in rows]
  for key in ("accuracy", "auc"):
    ax.plot(coverage, [r[key] for r in rows], marker="o", label=key)
  ax.set(xlabel="share of validation slices answered", ylabel="on the answered slices",
         title=f"{task_name}: risk-coverage (validation)")
  ax.invert_xaxis()
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _plot_reliability(summary: dict, path: Path, task_name: str) -> None:
  """A reliability diagram PNG: observed frequency against predicted probability, before/after."""
  before, after = summary["reliability"]["before"], summary["reliability"]["after"]
  import matplotlib  # Plotting only when a report is written
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=100)
  ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
  for name, r in (("before", before), ("after", after)):
    used = [i for i, c in enumerate(r["count"]) if c]
    ax.plot([r["confidence"][i] for i in used], [r["frequency"][i] for i in used], marker="o",
            label=f"{name} (ECE {r['ece']:.3f})")
  ax.set(xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1),
         title=f"{task_name}: validation reliability")
  ax.legend(loc="upper left", fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _confusion_section(report: dict, ref: dict | None) -> list[str]:
  names = (["no", "yes"] if len(report["test"]["confusion"]) == 2 and report["task"] != "subtype"
           else list(report["class_names"]))
  title = "## Test confusion matrix (paper Tables 2/4), rows actual, columns predicted"
  if report["task"] == "multilabel":
    title += " - `any` label"
  out = [title, "", "Ours:", "", *_matrix(report["test"]["confusion"], names)]
  if ref:
    out += ["", "Paper:", "", *_matrix(ref["confusion"], names)]
  return out + [""]


def _metric_section(report: dict, ref: dict | None) -> list[str]:
  test = report["test"]
  out = ["## Test metrics", "", f"- ROC AUC: {fmt(test.get('auc'))}"]
  if "rsna_log_loss" in test:
    out.append(f"- RSNA weighted log loss (`any` x2): {fmt(test['rsna_log_loss'])} (RSNA 2019 "
               f"winning private score {paper.RSNA_2019_WINNING_LOG_LOSS}, on RSNA's own test set)")
  if "sensitivity" in test:
    out += ["", "Sensitivity / specificity (ours computed from our confusion matrix):", "",
            "| | ours | paper, text | paper, from its Table 2 |" if ref else "| | ours |",
            "|---|---|---|---|" if ref else "|---|---|"]
    for key in ("sensitivity", "specificity"):
      row = f"| {key} | {fmt(test[key])} |"
      if ref:
        row += f" {fmt(ref['text'][key])} | {fmt(ref['table_derived'][key])} |"
      out.append(row)
  if "per_class_sensitivity" in test:
    out += ["", "Per-class sensitivity (ours computed from our confusion matrix):", "",
            "| class | ours | paper, text | paper, from its Table 4 |" if ref and
            "per_class_sensitivity" in ref["text"] else "| class | ours |",
            "|---|---|---|---|" if ref and "per_class_sensitivity" in ref["text"] else "|---|---|"]
    for name, value in test["per_class_sensitivity"].items():
      row = f"| {name} | {fmt(value)} |"
      if ref and "per_class_sensitivity" in ref["text"]:
        row += (f" {fmt(ref['text']['per_class_sensitivity'][name])} |"
                f" {fmt(ref['table_derived']['per_class_sensitivity'][name])} |")
      out.append(row)
  if "per_class_auc" in test:
    out += ["", "Per-class ROC AUC: " + ", ".join(
        f"{k} {fmt(v)}" for k, v in test["per_class_auc"].items())]
  if "series" in test:  # a series scores its highest slice, positive when any slice is
    out += ["", f"Per-series ROC AUC ({test['series']['n']} series, highest slice): " + ", ".join(
        f"{k} {fmt(v)}" for k, v in test["series"]["auc"].items())]
  return out


def plot_curves(history: Sequence[dict], out_dir: Path, task_name: str) -> list[Path]:
  """accuracy.png and loss.png per epoch, train and validation (the paper's Figures 2-5)."""
  import matplotlib  # Plotting only when a report is written
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  epochs = [h["epoch"] for h in history]
  paths = []
  for quantity in ("accuracy", "loss"):
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for split, key in (("train", f"train_{quantity}"), ("validation", f"val_{quantity}")):
      ax.plot(epochs, [h[key] for h in history], marker="o", label=split)
    ax.set(xlabel="epoch", ylabel=quantity, title=f"{task_name}: {quantity} per epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / f"{quantity}.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
  return paths


def write(report: dict, out_dir: str | Path) -> dict[str, Path]:
  """report.json, report.md and the curve PNGs under out_dir."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
  paths["json"].write_text(json.dumps(jsonable(report), indent=1))
  paths["md"].write_text(markdown(report))
  paths["accuracy_png"], paths["loss_png"] = plot_curves(report["history"], out_dir,
                                                         report["task"])
  if report.get("calibration"):
    paths["reliability_png"] = out_dir / RELIABILITY_PNG
    _plot_reliability(report["calibration"], paths["reliability_png"], report["task"])
  return paths


def sweep_table(rows: Sequence[dict], metric: str, higher_is_better: bool) -> str:
  """One Markdown table of a grid search, best first by the validation metric."""
  def key(row):
    value = row.get(metric)
    if value is None or math.isnan(value):
      return (1, 0.0)  # failed or unscored runs last
    return (0, -value if higher_is_better else value)
  rows = sorted(rows, key=key)
  params = sorted({k for r in rows for k in r["params"]})
  lines = [f"| rank | {' | '.join(params)} | {metric} | test accuracy | workdir |",
           "|" + "---|" * (len(params) + 4)]
  for i, r in enumerate(rows, 1):
    values = " | ".join(str(r["params"].get(p, "")) for p in params)
    lines.append(f"| {i} | {values} | {fmt(r.get(metric))} | {fmt(r.get('test_accuracy'))} |"
                 f" {r.get('workdir', '')} |")
  return "\n".join(lines) + "\n"


def _matrix(cm, names: Sequence[str]) -> list[str]:
  lines = ["| actual \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  lines += [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
            for name, row in zip(names, cm)]
  return lines


def _span(value) -> str:
  if isinstance(value, (tuple, list)):
    return f"{fmt(value[0])} -> {fmt(value[1])}"
  return fmt(value)


def fmt(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  return f"{value:.3f}" if isinstance(value, float) else str(value)
