"""Evaluation metrics: the ones `config.METRICS[task]` names, overall and per slice value.

    evaluate("classification", y, proba, frame, ["origin"])
    -> {"roc_auc": 0.71, ..., "origin=EWR/roc_auc": 0.69, ...}

Rows without a label are dropped first (labels mature late; a NaN label is "not known
yet", not a class). Classification is binary: labels 0/1, predictions the probability of 1
(or an (n, 2) `predict_proba` array). A metric that is undefined on the rows at hand (AUC
with one class present, R² with a constant target) is left out rather than reported as NaN.

sklearn and numpy are imported inside `evaluate`: the gate code may import this module's
constants from a DAG file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flywheel.config import METRICS

if TYPE_CHECKING:
    import pandas as pd

# A slice value with fewer labelled rows than this gets no metrics: on a handful of rows
# they are noise, and gates or dashboards would read them as signal.
MIN_SLICE_ROWS = 30
MISSING_VALUE = "__missing__"  # slice value for rows whose slice column is null


def slice_key(column: str, value: object, metric: str) -> str:
    return f"{column}={value}/{metric}"


def evaluate(
    task: str,
    y_true: Any,
    y_pred_or_proba: Any,
    frame: pd.DataFrame | None = None,
    slices: Sequence[str] = (),
    min_slice_rows: int = MIN_SLICE_ROWS,
) -> dict[str, float]:
    """Metrics overall, then `"<column>=<value>/<metric>"` for each slice column's values.

    `frame` holds the slice columns, row-aligned with `y_true` (positionally).
    """
    import numpy as np

    if task not in METRICS:
        raise ValueError(f"task must be one of {', '.join(METRICS)}, got {task!r}")
    y = np.asarray(y_true, dtype=np.float64).ravel()
    pred = np.asarray(y_pred_or_proba, dtype=np.float64)
    if task == "classification" and pred.ndim == 2:
        if pred.shape[1] != 2:
            raise ValueError(
                f"binary classification expects (n, 2) probabilities, got {pred.shape}"
            )
        pred = pred[:, 1]
    pred = pred.ravel()
    if len(pred) != len(y):
        raise ValueError(f"{len(y)} labels but {len(pred)} predictions")
    if frame is not None and len(frame) != len(y):
        raise ValueError(f"{len(y)} labels but the slice frame has {len(frame)} rows")

    labelled = ~np.isnan(y)
    y, pred = y[labelled], pred[labelled]
    if task == "classification" and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"classification labels must be 0/1, found {np.unique(y)[:10]}")
    if np.isnan(pred).any():
        raise ValueError("predictions contain NaN")
    if len(y) == 0:
        raise ValueError("no labelled rows to evaluate")

    out = _metrics(task, y, pred)
    for column in slices:
        if frame is None or column not in frame.columns:
            raise ValueError(f"slice column '{column}' is not in the evaluation frame")
        # Null slice values form a slice of their own (a key must be a string).
        values = frame[column]
        keys = values.astype(str).where(values.notna(), MISSING_VALUE).to_numpy()[labelled]
        for value in sorted(set(keys)):
            rows = keys == value
            # Skipped on purpose: too few rows for a stable metric (see MIN_SLICE_ROWS), or,
            # for classification, only one class present (AUC and AP are undefined, and the
            # rest would compare the model against a constant).
            if rows.sum() < min_slice_rows:
                continue
            if task == "classification" and len(np.unique(y[rows])) < 2:
                continue
            for metric, score in _metrics(task, y[rows], pred[rows]).items():
                out[slice_key(column, value, metric)] = score
    return out


def _metrics(task: str, y: Any, pred: Any) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    scores: dict[str, float] = {}
    if task == "classification":
        p = np.clip(pred, 0.0, 1.0)
        both = len(np.unique(y)) == 2
        if both:
            scores["roc_auc"] = m.roc_auc_score(y, p)
            scores["average_precision"] = m.average_precision_score(y, p)
        scores["log_loss"] = m.log_loss(y, p, labels=[0.0, 1.0])
        scores["brier"] = m.brier_score_loss(y, p, labels=[0.0, 1.0])
        scores["accuracy"] = m.accuracy_score(y, (p >= 0.5).astype(np.float64))
    else:
        scores["rmse"] = float(np.sqrt(m.mean_squared_error(y, pred)))
        scores["mae"] = m.mean_absolute_error(y, pred)
        if len(y) >= 2 and np.ptp(y) > 0:
            scores["r2"] = m.r2_score(y, pred)
    # The config's order and names; nothing it does not know about.
    return {name: float(scores[name]) for name in METRICS[task] if name in scores}
