"""Evaluation metrics: the config's metrics with sklearn's values, overall and per slice,
NaN labels dropped, and slices too small or with one class left out (not reported as NaN)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from flywheel.config import METRICS
from flywheel.metrics import MIN_SLICE_ROWS, MISSING_VALUE, evaluate


@pytest.fixture(scope="module")
def scored() -> pd.DataFrame:
    """Labels, probabilities with real signal, and two slice columns."""
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n).astype(float)
    proba = np.clip(0.5 * y + rng.uniform(0, 0.6, n), 0, 1)
    origin = rng.choice(["EWR", "JFK", "LGA"], n)
    return pd.DataFrame({"y": y, "p": proba, "origin": origin, "carrier": "AA"})


def test_classification_matches_sklearn(scored: pd.DataFrame) -> None:
    y, p = scored["y"], scored["p"]
    got = evaluate("classification", y, p)
    assert list(got) == list(METRICS["classification"])
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p))
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, p))
    assert got["brier"] == pytest.approx(sk.brier_score_loss(y, p))
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, p >= 0.5))
    assert got["average_precision"] == pytest.approx(sk.average_precision_score(y, p))


def test_predict_proba_columns_are_accepted(scored: pd.DataFrame) -> None:
    p = scored["p"].to_numpy()
    two = np.column_stack([1 - p, p])
    assert evaluate("classification", scored["y"], two) == evaluate(
        "classification", scored["y"], p
    )
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        evaluate("classification", scored["y"], np.column_stack([p, p, p]))


def test_regression_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    got = evaluate("regression", y, pred)
    assert list(got) == list(METRICS["regression"])
    assert got["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(y, pred)))
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    assert got["r2"] == pytest.approx(sk.r2_score(y, pred))


def test_slices_match_metrics_on_the_subset(scored: pd.DataFrame) -> None:
    got = evaluate("classification", scored["y"], scored["p"], scored, ["origin", "carrier"])
    for origin in ("EWR", "JFK", "LGA"):
        part = scored[scored["origin"] == origin]
        assert got[f"origin={origin}/roc_auc"] == pytest.approx(
            sk.roc_auc_score(part["y"], part["p"])
        )
        assert f"origin={origin}/brier" in got
    # One carrier: its slice is the whole set.
    assert got["carrier=AA/log_loss"] == pytest.approx(got["log_loss"])


def test_nan_labels_are_dropped(scored: pd.DataFrame) -> None:
    y = scored["y"].copy()
    y.iloc[::7] = np.nan
    kept = y.notna()
    got = evaluate("classification", y, scored["p"], scored, ["origin"])
    want = evaluate(
        "classification", y[kept], scored["p"][kept], scored[kept].reset_index(), ["origin"]
    )
    assert got == pytest.approx(want)
    assert not any(math.isnan(v) for v in got.values())


def test_single_class_and_small_slices_are_skipped(scored: pd.DataFrame) -> None:
    frame = scored.copy()
    frame["group"] = "big"
    # A slice with only negatives: AUC is undefined there, so the slice gets no metrics.
    negatives = frame.index[frame["y"] == 0][:100]
    frame.loc[negatives, "group"] = "all_negative"
    # A slice one row below the minimum, with both classes.
    positives = frame.index[frame["y"] == 1][:10]
    more_negatives = frame.index[frame["y"] == 0][100 : 100 + MIN_SLICE_ROWS - 11]
    frame.loc[positives.append(more_negatives), "group"] = "tiny"
    assert (frame["group"] == "tiny").sum() == MIN_SLICE_ROWS - 1
    got = evaluate("classification", frame["y"], frame["p"], frame, ["group"])
    assert "group=big/roc_auc" in got
    assert not [k for k in got if k.startswith(("group=all_negative/", "group=tiny/"))]


def test_missing_slice_values_form_their_own_slice(scored: pd.DataFrame) -> None:
    frame = scored.copy()
    frame["origin"] = frame["origin"].astype(object)
    frame.loc[frame.index[:200], "origin"] = None
    got = evaluate("classification", frame["y"], frame["p"], frame, ["origin"])
    assert f"origin={MISSING_VALUE}/roc_auc" in got


def test_single_class_overall_leaves_out_rank_metrics() -> None:
    got = evaluate("classification", np.zeros(50), np.full(50, 0.2))
    assert "roc_auc" not in got
    assert "average_precision" not in got
    assert got["accuracy"] == 1.0
    assert got["log_loss"] == pytest.approx(-math.log(0.8))


def test_constant_regression_target_has_no_r2() -> None:
    got = evaluate("regression", np.ones(40), np.full(40, 1.5))
    assert got == {"rmse": pytest.approx(0.5), "mae": pytest.approx(0.5)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("classification", [0, 1, 2], [0.1, 0.2, 0.3]), "must be 0/1"),
        (("classification", [0, 1], [0.1, 0.2, 0.3]), "2 labels but 3 predictions"),
        (("classification", [np.nan, np.nan], [0.1, 0.2]), "no labelled rows"),
        (("classification", [0, 1], [0.1, np.nan]), "NaN"),
        (("ranking", [0, 1], [0.1, 0.2]), "task"),
    ],
)
def test_bad_input_is_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(*args)  # type: ignore[arg-type]


def test_unknown_slice_column_is_named(scored: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="'dest'"):
        evaluate("classification", scored["y"], scored["p"], scored, ["dest"])
