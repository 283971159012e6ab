"""Drift and performance of a monitoring window, measured with Evidently 0.7.

    result, files = check_window(cfg, reference, current, out_dir, "flight_delay v3: 2013-07")
    result.data_drift, result.drifted, result.prediction_score, result.performance

`reference` is the champion's snapshot (its holdout rows, labels known), `current` the
window's prediction log (labels may still be NaN: not matured yet). Both carry the monitored
columns (`cfg.monitored_features()`), the model's score (`prediction_log.PREDICTION`) and the
label column. The report compares, per monitored column, the two distributions; the model's
score is compared the same way (its own threshold); and, once enough labels have matured,
the window's performance on those rows is computed with `flywheel.metrics.evaluate`, so the
numbers are the ones training recorded for the champion.

Why distances and pinned methods (not Evidently's defaults): Evidently picks a method per
column from the size of the reference. Up to 1,000 rows it runs p-value tests
(Kolmogorov-Smirnov for numbers, chi-squared or a z-test for categories, drift when
p < 0.05); above that it switches to the normed Wasserstein and Jensen-Shannon distances
with a 0.1 threshold. Left to choose, a small window would be judged by another test, on
another scale, than a large one. And a p-value test is never a choice here: at the
10^4-10^5 rows of a month it calls a shift of 2% of a standard deviation, or a category
share moving by one point, "significant", so every window and nearly every column would
drift (tests/unit/test_drift.py shows it on 200,000 rows). A distance measures how far the
distribution moved, whatever the sample size: the methods and thresholds come from
`monitoring.drift` and must be distances (`DISTANCES`).

The Evidently report (HTML + its own JSON) is saved next to `drift.json`, the
`DriftResult`, which is read back from the report's JSON by `extract`, a pure function.
Heavy imports (Evidently, pandas, numpy) happen inside the functions: DAG files may import
this module.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.config import Config

# The score column; defined in runspec (stdlib only), re-exported by prediction_log.
from flywheel.runspec import PREDICTION

if TYPE_CHECKING:
    import pandas as pd
    from evidently.core.report import Snapshot

# Evidently methods that return a distance (drift when score >= threshold, the same rule
# Evidently applies to them). Wasserstein is numeric-only; the rest also take categories.
CATEGORICAL_DISTANCES = frozenset({"jensenshannon", "hellinger", "kl_div", "psi"})
DISTANCES = CATEGORICAL_DISTANCES | {"wasserstein"}

# How Evidently names the metric types in its JSON (`config.type` ends with these).
VALUE_DRIFT = "ValueDrift"
DRIFTED_COLUMNS_COUNT = "DriftedColumnsCount"

FILES = {"html": "report.html", "json": "report.json", "drift": "drift.json"}


class DriftInputError(ValueError):
    """The frames cannot be compared; the message names the column or frame at fault."""


@dataclass(frozen=True)
class DriftResult:
    """One window against its reference. `scores` and `thresholds` cover the monitored
    columns (not the model's score, which has its own `prediction_*` fields)."""

    scores: dict[str, float]
    thresholds: dict[str, float]
    drifted: list[str]  # monitored columns with score >= threshold, largest score first
    share: float  # len(drifted) / len(scores)
    prediction_score: float | None  # None: the frames carry no prediction column
    prediction_drifted: bool
    performance: dict[str, float] | None  # None: fewer than min_labelled matured labels
    labelled_rows: int
    rows: dict[str, int]  # {"reference": n, "current": n} compared, after sampling
    data_drift: bool  # share >= drift_share

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (plain floats, ints, strings, lists and dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        return cls(**data)


# --- pure parts ---------------------------------------------------------------------


def _check_methods(cfg: Config) -> None:
    spec = cfg.monitoring.drift
    if spec.num_method not in DISTANCES:
        raise DriftInputError(
            f"monitoring.drift.num_method: {spec.num_method!r} is not a distance "
            f"({', '.join(sorted(DISTANCES))}); p-value tests flag every large window"
        )
    if spec.cat_method not in CATEGORICAL_DISTANCES:
        raise DriftInputError(
            f"monitoring.drift.cat_method: {spec.cat_method!r} is not a distance for "
            f"categories ({', '.join(sorted(CATEGORICAL_DISTANCES))})"
        )


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def extract(cfg: Config, report: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(scores, thresholds) per column from an Evidently snapshot's dict (`Snapshot.dict()`,
    or its JSON loaded): every `ValueDrift` metric, i.e. the monitored columns and, when the
    report has it, the prediction column. Raises if a monitored column has no score."""
    metrics = report.get("metrics") if isinstance(report, dict) else None
    if not isinstance(metrics, list):
        raise ValueError("not an Evidently snapshot dict: no 'metrics' list")
    scores: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    for metric in metrics:
        config: dict[str, Any] = metric.get("config") or {}
        if str(config.get("type", "")).rsplit(":", 1)[-1] != VALUE_DRIFT:
            continue
        column = config.get("column")
        value: Any = metric.get("value")
        threshold: Any = config.get("threshold")
        if not isinstance(column, str):
            raise ValueError(f"ValueDrift metric without a column: {config}")
        if not (_finite(value) and _finite(threshold)):
            raise ValueError(
                f"ValueDrift for '{column}': score {value!r} / threshold {threshold!r} "
                "are not both finite numbers"
            )
        scores[column], thresholds[column] = float(value), float(threshold)
    missing = [c for c in cfg.monitored_features() if c not in scores]
    if missing:
        raise ValueError(f"the report has no drift score for monitored columns {missing}")
    return scores, thresholds


def summarize(
    cfg: Config,
    scores: dict[str, float],
    thresholds: dict[str, float],
    performance: dict[str, float] | None,
    labelled_rows: int,
    rows: dict[str, int],
) -> DriftResult:
    """The window's verdict from `extract`'s output (pure)."""
    monitored = cfg.monitored_features()
    own = {c: scores[c] for c in monitored}
    limits = {c: thresholds[c] for c in monitored}
    drifted = sorted((c for c in monitored if own[c] >= limits[c]), key=lambda c: (-own[c], c))
    share = len(drifted) / len(own) if own else 0.0
    pred_score = scores.get(PREDICTION)
    pred_limit = thresholds.get(PREDICTION, cfg.monitoring.drift.prediction_threshold)
    return DriftResult(
        scores=own,
        thresholds=limits,
        drifted=drifted,
        share=share,
        prediction_score=pred_score,
        prediction_drifted=pred_score is not None and pred_score >= pred_limit,
        performance=performance,
        labelled_rows=labelled_rows,
        rows=dict(rows),
        data_drift=share >= cfg.monitoring.drift.drift_share,
    )


# --- frames -------------------------------------------------------------------------


def sample(frame: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most `max_rows` rows, drawn without replacement with a fixed seed and kept in
    their original order; the frame itself when it is small enough."""
    import numpy as np

    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if len(frame) <= max_rows:
        return frame
    picked = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
    return frame.iloc[picked]


def _categorical(cfg: Config, reference: pd.DataFrame) -> list[str]:
    """Monitored columns compared as categories: the configured ones and any non-number."""
    import pandas as pd

    return [
        c
        for c in cfg.monitored_features()
        if c in cfg.training.categorical
        or not pd.api.types.is_numeric_dtype(reference[c])
        or pd.api.types.is_bool_dtype(reference[c])
    ]


def _validate(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame) -> bool:
    """Raise `DriftInputError` naming what is wrong; True when both carry predictions."""
    import pandas as pd

    _check_methods(cfg)
    label, prediction = cfg.label.name, PREDICTION
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DriftInputError(f"the {side} data is a {type(frame).__name__}, not a DataFrame")
        if frame.empty:
            raise DriftInputError(
                f"the {side} window is empty ({len(frame)} rows): nothing to compare"
            )
        missing = [c for c in [*cfg.monitored_features(), label] if c not in frame.columns]
        if missing:
            raise DriftInputError(f"the {side} data lacks columns {missing}")
    has_pred = [prediction in f.columns for f in (reference, current)]
    if any(has_pred) and not all(has_pred):
        side = "reference" if not has_pred[0] else "current"
        raise DriftInputError(f"the {side} data lacks column '{prediction}' (the other has it)")
    compared = [*cfg.monitored_features(), *([prediction] if all(has_pred) else [])]
    categorical = _categorical(cfg, reference)
    for side, frame in (("reference", reference), ("current", current)):
        empty = [c for c in compared if frame[c].isna().all()]
        if empty:
            raise DriftInputError(
                f"the {side} data has no values at all in {empty}: a broken join or feature? "
                "(a distribution needs values on both sides)"
            )
        not_numbers = [
            c
            for c in compared
            if c not in categorical and not pd.api.types.is_numeric_dtype(frame[c])
        ]
        if not_numbers:
            raise DriftInputError(f"the {side} data has non-numeric values in {not_numbers}")
    if cfg.task == "classification":
        for side, frame in (("reference", reference), ("current", current)):
            values = pd.to_numeric(frame[label], errors="coerce")
            bad = frame[label].notna() & ~values.isin([0, 1])
            if bad.any():
                shown = frame.loc[bad, label].unique()[:5].tolist()
                raise DriftInputError(f"the {side} labels '{label}' must be 0/1, found {shown}")
    return all(has_pred)


def _labelled(cfg: Config, frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame[cfg.label.name].notna()]


# --- the report ---------------------------------------------------------------------


def _drift_report(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame, pred: bool) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    spec = cfg.monitoring.drift
    monitored = cfg.monitored_features()
    categorical = _categorical(cfg, reference)
    numeric = [c for c in monitored if c not in categorical]
    extra = [PREDICTION] if pred else []
    definition = DataDefinition(
        numerical_columns=[*numeric, *extra], categorical_columns=categorical
    )

    def prepare(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[[*monitored, *extra]].copy()
        if categorical:
            out[categorical] = out[categorical].astype("string")
        out[[*numeric, *extra]] = out[[*numeric, *extra]].astype("float64")
        return out.reset_index(drop=True)

    items: list[Any] = [
        # Over the monitored columns only, so Evidently's own DriftedColumnsCount share is
        # the window's share; the model's score is watched next to it, with its threshold.
        DataDriftPreset(
            columns=monitored,
            num_method=spec.num_method,
            cat_method=spec.cat_method,
            num_threshold=spec.num_threshold,
            cat_threshold=spec.cat_threshold,
            drift_share=spec.drift_share,
        )
    ]
    if pred:
        items.append(
            ValueDrift(
                column=PREDICTION, method=spec.num_method, threshold=spec.prediction_threshold
            )
        )
    return Report(items, include_tests=True).run(
        current_data=Dataset.from_pandas(prepare(current), data_definition=definition),
        reference_data=Dataset.from_pandas(prepare(reference), data_definition=definition),
    )


def _performance_report(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame) -> Any:
    """Evidently's quality preset on labelled rows only (it cannot take NaN labels)."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    label, prediction = cfg.label.name, PREDICTION
    preset: Any
    if cfg.task == "classification":
        definition = DataDefinition(
            numerical_columns=[prediction],
            classification=[
                BinaryClassification(target=label, prediction_probas=prediction, pos_label=1)
            ],
        )
        preset, dtype = ClassificationPreset(), "int64"
    else:
        definition = DataDefinition(
            numerical_columns=[label, prediction],
            regression=[Regression(target=label, prediction=prediction)],
        )
        preset, dtype = RegressionPreset(), "float64"

    def prepare(frame: pd.DataFrame) -> Any:
        out = frame[[label, prediction]].astype({label: dtype, prediction: "float64"})
        return Dataset.from_pandas(out.reset_index(drop=True), data_definition=definition)

    return Report([preset]).run(
        current_data=prepare(current),
        reference_data=prepare(reference) if len(reference) else None,
    )


def _merge(snapshots: list[Any]) -> Snapshot:
    """One snapshot holding the sections of several (one HTML page, one JSON).

    Why several runs: a Report runs on one current dataset, and the sections need different
    rows. Drift compares every row of the window; quality only the labelled ones (Evidently
    builds its label set from the target column's values, NaN included)."""
    from evidently.core.report import Snapshot
    from evidently.core.serialization import SnapshotModel

    models = [s.to_snapshot_model() for s in snapshots]
    first = models[0]
    return Snapshot.load_model(
        SnapshotModel(
            report=first.report,
            name=first.name,
            timestamp=first.timestamp,
            metadata={k: v for m in models for k, v in m.metadata.items()},
            tags=[t for m in models for t in m.tags],
            metric_results={k: v for m in models for k, v in m.metric_results.items()},
            top_level_metrics=[i for m in models for i in m.top_level_metrics],
            widgets=[w for m in models for w in m.widgets],
            tests_widgets=[w for m in models for w in m.tests_widgets],
        )
    )


def _has_performance(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame) -> bool:
    labelled = _labelled(cfg, current)
    if len(labelled) < cfg.monitoring.performance.min_labelled:
        return False
    if cfg.task == "classification":
        # Evidently's ROC curves need both classes on each side.
        return bool(
            labelled[cfg.label.name].nunique() == 2
            and _labelled(cfg, reference)[cfg.label.name].nunique() in (0, 2)
        )
    return True


def build_report(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame) -> Snapshot:
    """The Evidently snapshot of `current` against `reference`, as they are (no sampling).

    Drift: `DataDriftPreset` over the monitored columns with the configured distances and
    thresholds, plus `ValueDrift` on the prediction column (threshold
    `prediction_threshold`). Performance: Evidently's classification (or regression) preset
    on the labelled rows of both sides, when the window has at least `min_labelled` of them.
    """
    pred = _validate(cfg, reference, current)
    sections = [_drift_report(cfg, reference, current, pred)]
    if pred and _has_performance(cfg, reference, current):
        sections.append(
            _performance_report(cfg, _labelled(cfg, reference), _labelled(cfg, current))
        )
    return _merge(sections)


def _performance(cfg: Config, current: pd.DataFrame, pred: bool) -> dict[str, float] | None:
    from flywheel.metrics import evaluate

    labelled = _labelled(cfg, current)
    if not pred or len(labelled) < cfg.monitoring.performance.min_labelled:
        return None
    return evaluate(cfg.task, labelled[cfg.label.name], labelled[PREDICTION])


def _write(path: Path, text: str) -> str:
    """Atomic: a reader sees the previous file or the new one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return str(path)


def _html(snapshot: Snapshot, title: str) -> str:
    """Evidently's standalone page, with `title` as the page's title (its tab name)."""
    import html

    page: str = snapshot.get_html_str(as_iframe=False)
    return page.replace("<head>", f"<head>\n<title>{html.escape(title)}</title>", 1)


def check_window(
    cfg: Config, reference: pd.DataFrame, current: pd.DataFrame, out_dir: Path, title: str
) -> tuple[DriftResult, dict[str, str]]:
    """Sample both sides to `monitoring.drift.max_rows`, run the report, and save
    `report.html`, `report.json` (Evidently's JSON) and `drift.json` (the `DriftResult`) in
    `out_dir` (`title` names the HTML page). Returns the result and the paths, keyed
    "html", "json" and "drift"."""
    pred = _validate(cfg, reference, current)
    max_rows = cfg.monitoring.drift.max_rows
    reference, current = sample(reference, max_rows), sample(current, max_rows)
    snapshot = build_report(cfg, reference, current)
    snapshot.set_name(title)
    report_json = snapshot.json()
    scores, thresholds = extract(cfg, json.loads(report_json))
    result = summarize(
        cfg,
        scores,
        thresholds,
        performance=_performance(cfg, current, pred),
        labelled_rows=len(_labelled(cfg, current)),
        rows={"reference": len(reference), "current": len(current)},
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "html": _write(out_dir / FILES["html"], _html(snapshot, title)),
        "json": _write(out_dir / FILES["json"], report_json),
        "drift": _write(out_dir / FILES["drift"], json.dumps(result.as_dict(), indent=2)),
    }
    return result, files
