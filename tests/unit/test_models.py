"""Both model types on both tasks learn real signal from small synthetic data, take raw
frames (unseen categories, missing values, odd dtypes), pickle without changing a single
prediction, and the PyTorch MLP reports the device it trained on."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_squared_error, roc_auc_score

from flywheel.models import (
    FastScorer,
    build_model,
    compile_scorer,
    fitted_device,
    prepare_frame,
    resolve_device,
)

NUMERIC = ["x0", "x1", "x2", "x3", "x4"]
CATEGORICAL = ["origin", "carrier"]
# Small and quick: the MLP stops early long before max_epochs on this data.
PARAMS: dict[str, dict[str, Any]] = {
    "hist_gbm": {"max_iter": 60},
    "torch_mlp": {"hidden": [64, 32], "max_epochs": 25, "batch_size": 256},
}
CASES = [(t, m) for t in ("classification", "regression") for m in ("hist_gbm", "torch_mlp")]


def make_frame(n: int, task: str, seed: int) -> pd.DataFrame:
    """Features with a non-linear signal in numerics and categories, 5 % missing in x4."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=n) for c in NUMERIC})
    frame["origin"] = rng.choice(["EWR", "JFK", "LGA"], n)
    frame["carrier"] = rng.choice(list("ABCDEF"), n)
    effect = frame["origin"].map({"EWR": 1.0, "JFK": 0.0, "LGA": -1.0})
    z = 1.5 * frame["x0"] - frame["x1"] + frame["x2"] * frame["x3"] + effect
    frame.loc[rng.random(n) < 0.05, "x4"] = np.nan
    if task == "classification":
        frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    else:
        frame["y"] = z + rng.normal(scale=0.5, size=n)
    return frame


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small fits gain nothing from threads; on a busy 2-core CI box, OpenMP's barrier
    waits make them many times slower (sklearn's and torch's runtimes alike)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fitted() -> dict[tuple[str, str], tuple[Any, pd.DataFrame]]:
    """Each (task, model type) fitted once on 2,000 rows; with its own 1,000-row test set."""
    out = {}
    for task, model_type in CASES:
        train = make_frame(2000, task, seed=1)
        model = build_model(task, model_type, PARAMS[model_type], NUMERIC, CATEGORICAL, seed=0)
        model.fit(train, train["y"])
        out[task, model_type] = (model, make_frame(1000, task, seed=2))
    return out


@pytest.mark.parametrize(("task", "model_type"), CASES)
def test_beats_a_trivial_baseline(fitted: dict[Any, Any], task: str, model_type: str) -> None:
    model, test = fitted[task, model_type]
    if task == "classification":
        assert roc_auc_score(test["y"], model.predict_proba(test)[:, 1]) > 0.75
        assert set(model.predict(test)) <= {0, 1}
    else:
        rmse = mean_squared_error(test["y"], model.predict(test)) ** 0.5
        assert rmse < 0.75 * test["y"].std()


@pytest.mark.parametrize("model_type", ["hist_gbm", "torch_mlp"])
def test_predict_proba_shape_and_range(fitted: dict[Any, Any], model_type: str) -> None:
    model, test = fitted["classification", model_type]
    proba = model.predict_proba(test)
    assert proba.shape == (len(test), 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(model.classes_) == [0, 1]


@pytest.mark.parametrize(("task", "model_type"), CASES)
def test_unseen_categories_missing_values_and_odd_dtypes(
    fitted: dict[Any, Any], task: str, model_type: str
) -> None:
    model, test = fitted[task, model_type]
    rows = test.head(6).drop(columns="y").copy()
    rows["carrier"] = ["ZZ", "A", None, "B", "QQ", "C"]  # unseen and missing categories
    rows.loc[rows.index[:2], "x0"] = np.nan
    rows["origin"] = rows["origin"].astype("string")  # pandas' nullable string dtype
    rows["x1"] = rows["x1"].astype("float32")
    rows = rows[list(reversed(rows.columns))]  # column order does not matter
    out = model.predict_proba(rows) if task == "classification" else model.predict(rows)
    assert np.isfinite(out).all()
    assert len(out) == 6


@pytest.mark.parametrize(("task", "model_type"), CASES)
def test_pickle_round_trip_predicts_identically(
    fitted: dict[Any, Any], task: str, model_type: str
) -> None:
    model, test = fitted[task, model_type]
    again = pickle.loads(pickle.dumps(model))
    method = "predict_proba" if task == "classification" else "predict"
    np.testing.assert_array_equal(getattr(model, method)(test), getattr(again, method)(test))


def test_hist_gbm_splits_on_categories_natively(fitted: dict[Any, Any]) -> None:
    model, _ = fitted["classification", "hist_gbm"]
    assert int(model[-1].is_categorical_.sum()) == len(CATEGORICAL)
    assert fitted_device(model) == "cpu"


def test_torch_mlp_reports_its_device(fitted: dict[Any, Any]) -> None:
    model, _ = fitted["classification", "torch_mlp"]
    assert fitted_device(model) == resolve_device("auto")
    import torch

    if not torch.cuda.is_available():
        assert fitted_device(model) == "cpu"
    mlp = model[-1]
    assert 1 <= mlp.best_epoch_ <= mlp.n_epochs_ <= PARAMS["torch_mlp"]["max_epochs"]
    # Stored on the CPU whatever it trained on, so the pickle loads anywhere.
    assert all(p.device.type == "cpu" for p in mlp.net_.parameters())


def test_torch_mlp_is_seeded() -> None:
    train = make_frame(600, "classification", seed=3)
    params = {"hidden": [16], "max_epochs": 3}

    def fit(seed: int) -> Any:
        model = build_model("classification", "torch_mlp", params, NUMERIC, CATEGORICAL, seed)
        return model.fit(train, train["y"]).predict_proba(train)

    np.testing.assert_array_equal(fit(0), fit(0))
    assert not np.array_equal(fit(0), fit(1))


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has a GPU: 'cuda' is valid"
)
def test_explicit_cuda_without_a_gpu_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


@pytest.mark.parametrize(
    ("model_type", "params", "message"),
    [
        ("hist_gbm", {"max_iters": 10}, r"unknown hist_gbm hyperparameter\(s\) \['max_iters'\]"),
        ("hist_gbm", {"random_state": 3}, "random_state"),  # the spec's seed decides
        ("torch_mlp", {"layers": [8]}, r"\['layers'\]"),
        ("xgboost", {}, "model type must be one of hist_gbm, torch_mlp"),
    ],
)
def test_bad_model_type_or_hyperparameter_is_named(
    model_type: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_model("classification", model_type, params, NUMERIC, CATEGORICAL)


def test_prepare_frame_normalizes_dtypes_and_names_missing_columns() -> None:
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "c": pd.array(["a", None, "b"], dtype="string"),
            "k": [1, 2, 1],
            "extra": ["dropped"] * 3,
        }
    )
    out = prepare_frame(frame, ["n"], ["c", "k"])
    assert list(out.columns) == ["n", "c", "k"]
    assert out["n"].dtype == "float64"
    assert np.isnan(out["n"].iloc[1])
    assert out["c"].tolist()[0] == "a"
    assert out["c"].isna().tolist() == [False, True, False]
    assert out["k"].tolist() == ["1", "2", "1"]  # categories are strings
    with pytest.raises(ValueError, match=r"\['temp'\]"):
        prepare_frame(frame, ["temp"], [])


def test_prepare_frame_keeps_the_index() -> None:
    frame = pd.DataFrame({"n": [1.5, np.nan], "c": ["a", None]}, index=[7, 3])
    out = prepare_frame(frame, ["n"], ["c"])
    assert out.index.tolist() == [7, 3]
    assert out["n"].tolist()[0] == 1.5
    assert out["c"].tolist()[0] == "a"


def _odd_rows(test: pd.DataFrame, n: int) -> pd.DataFrame:
    """Rows a request can bring: unseen and missing categories, missing numerics."""
    rows = test.drop(columns="y").head(n).reset_index(drop=True)
    rows.loc[::3, "carrier"] = "ZZ"  # never seen in training
    rows.loc[1::5, "origin"] = None
    rows.loc[::4, "x0"] = np.nan
    rows.loc[2::7, ["x1", "x2", "x3", "x4"]] = np.nan
    return rows


def _columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    return {c: [None if v is None else v for v in frame[c].tolist()] for c in frame.columns}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_fast_scorer_gives_the_pipelines_scores_exactly(fitted: dict[Any, Any], task: str) -> None:
    model, test = fitted[task, "hist_gbm"]
    scorer = compile_scorer(model)
    assert scorer is not None
    rows = _odd_rows(test, 150)  # more than one chunk of rows
    want = model.predict_proba(rows)[:, 1] if task == "classification" else model.predict(rows)
    np.testing.assert_array_equal(scorer.score(_columns(rows)), want)
    one = rows.iloc[[0]]  # one row: the server's usual request
    want_one = model.predict_proba(one)[:, 1] if task == "classification" else model.predict(one)
    np.testing.assert_array_equal(scorer.score(_columns(one)), want_one)


def test_fast_scorer_with_missing_and_infrequent_categories_in_training() -> None:
    """Categories seen missing in training, and more than the encoder keeps (the rarest
    share one "infrequent" code): the lookups still give the pipeline's codes."""
    rng = np.random.default_rng(4)
    n = 3000
    train = make_frame(n, "classification", seed=4)
    # 300 carriers, the first ones common, the tail rare: beyond MAX_GBM_CATEGORIES.
    common = rng.random(n) < 0.5
    train["carrier"] = [
        f"C{k}" for k in np.where(common, rng.integers(0, 5, n), rng.integers(0, 300, n))
    ]
    train.loc[rng.random(n) < 0.05, "origin"] = None
    train["y"] = ((train["carrier"] == "C1") ^ (train["x0"] > 0)).astype(int)
    model = build_model("classification", "hist_gbm", {"max_iter": 30}, NUMERIC, CATEGORICAL)
    model.fit(train, train["y"])
    encoder = model[1].named_transformers_["cat"]
    assert len(encoder.infrequent_categories_[CATEGORICAL.index("carrier")]) > 0
    scorer = compile_scorer(model)
    assert scorer is not None
    rows = train.drop(columns="y").sample(400, random_state=1).reset_index(drop=True)
    rows.loc[::9, "carrier"] = "never-seen"
    rows.loc[::11, "origin"] = None
    rows.loc[::13, "x4"] = np.nan
    np.testing.assert_array_equal(scorer.score(_columns(rows)), model.predict_proba(rows)[:, 1])


def test_compile_scorer_declines_what_it_cannot_score(fitted: dict[Any, Any]) -> None:
    mlp, _ = fitted["classification", "torch_mlp"]
    assert compile_scorer(mlp) is None
    assert compile_scorer(object()) is None


def test_compile_scorer_refuses_a_scorer_that_disagrees(
    fitted: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = fitted["classification", "hist_gbm"]
    real = FastScorer.raw
    monkeypatch.setattr(FastScorer, "raw", lambda self, X: real(self, X) + 1e-12)
    assert compile_scorer(model) is None
