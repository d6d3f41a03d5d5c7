"""The paper's published figures as data (RSNA stage 1, its protocol), for side-by-side reports.

Source: the paper's Tables 1-4 and its text, summarised in docs/paper.md. The text's
sensitivity/specificity disagree with its own confusion matrices; both are kept here, and the
table-derived ones are computed from the matrices by `ichflax.evaluation.metrics`, never typed in.
"""

from __future__ import annotations

DATA = "RSNA ICH stage 1 (the paper's protocol: 1600/400 per class, 128 px PNG resized to 224)"

BINARY = {
    "loss": {"train": (0.45, 0.30), "validation": (0.35, 0.26), "test": 0.27},
    "accuracy": {"train": (0.81, 0.88), "validation": (0.83, 0.89), "test": 0.89},
    # Table 2, rows actual (no, yes), columns predicted.
    "confusion": [[227, 173], [87, 1913]],
    "text": {"sensitivity": 0.92, "specificity": 0.72},
}

SUBTYPE = {
    "loss": {"train": (1.79, 1.17), "validation": (1.50, 1.11), "test": 1.14},
    "accuracy": {"train": (0.26, 0.51), "validation": (0.37, 0.56), "test": 0.53},
    # Table 4, order epidural, intraparenchymal, intraventricular, subarachnoid, subdural.
    "confusion": [[225, 32, 9, 54, 80],
                  [43, 189, 86, 54, 28],
                  [25, 68, 235, 47, 25],
                  [47, 29, 30, 219, 75],
                  [84, 13, 18, 80, 205]],
    "text": {"per_class_sensitivity": {"epidural": 0.53, "intraparenchymal": 0.57,
                                       "intraventricular": 0.62, "subarachnoid": 0.48,
                                       "subdural": 0.50}},
}

RESULTS = {"binary": BINARY, "subtype": SUBTYPE}
# Field context for the multilabel task (RSNA 2019 private leaderboard, a different test set).
RSNA_2019_WINNING_LOG_LOSS = 0.04383
