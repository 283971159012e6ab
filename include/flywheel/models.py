"""The model types training can build: one sklearn Pipeline each, preprocessing included.

- `hist_gbm`: sklearn's HistGradientBoosting{Classifier,Regressor}; categories go in
  ordinal-encoded and are split on natively (`categorical_features`).
- `torch_mlp`: a small PyTorch MLP behind the sklearn estimator API (`fit`, `predict`,
  `predict_proba`): standardized numerics with median imputation and missing indicators,
  one-hot categories, mini-batch AdamW with early stopping on an internal validation split.

Either way the pipeline starts with `prepare_frame`, so the model takes the raw feature
frame (any numeric dtype, strings for categories, missing values anywhere) and a value
never seen in training maps to "unknown" instead of failing.

This module imports sklearn at module level (its estimators subclass sklearn's): only the
training entrypoint and tests import it, never a DAG file. torch is imported inside the
MLP's methods, so a hist_gbm run never loads it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from numpy.typing import ArrayLike, NDArray
    from sklearn.pipeline import Pipeline

MODEL_TYPES = ("hist_gbm", "torch_mlp")
# HistGradientBoosting splits on at most max_bins (255) categories per feature; the rarest
# beyond that share one "infrequent" code. The MLP one-hot encodes at most this many.
MAX_GBM_CATEGORIES = 255
MAX_MLP_CATEGORIES = 64
# FastScorer walks this many rows at a time: its working row is ~50 KB for the project's
# model (a column per categorical split), so a 1000-row request stays a few MB.
CHUNK_ROWS = 64


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. An explicit 'cuda' must exist."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device 'cuda' was requested but torch {torch.__version__} sees no CUDA device"
        )
    return device


def prepare_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """The model's input columns in a fixed order: numerics as float64 (NaN for missing),
    categories as Python strings (NaN for missing), whatever dtypes came in."""
    import pandas as pd

    missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if missing:
        raise ValueError(f"input frame lacks feature columns {missing}")
    # Columns gathered first and the frame built once (in the same order): inserting them
    # one by one cost ~0.5 ms each (index and block rebuilds), 15-30 ms of a one-row
    # prediction, now 2-4 ms; 100k rows take no longer than before.
    data: dict[str, Any] = {}
    for col in numeric:
        values = frame[col]
        if values.dtype != np.float64:
            values = pd.to_numeric(values, errors="coerce").astype("float64")
        data[col] = values.to_numpy()
    for col in categorical:
        values = frame[col]
        data[col] = values.astype(str).astype(object).where(values.notna(), np.nan).to_numpy()
    return pd.DataFrame(data, index=frame.index)


def build_model(
    task: str,
    model_type: str,
    params: dict[str, Any],
    numeric: list[str],
    categorical: list[str],
    seed: int = 0,
    device: str = "auto",
) -> Pipeline:
    """An unfitted Pipeline: prepare_frame -> encoding -> estimator. Raises ValueError on an
    unknown task, model type or hyperparameter (naming it)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    if task not in ("classification", "regression"):
        raise ValueError(f"task must be classification or regression, got {task!r}")
    classify = task == "classification"
    prepare = FunctionTransformer(
        prepare_frame, kw_args={"numeric": list(numeric), "categorical": list(categorical)}
    )

    estimator: Any
    if model_type == "hist_gbm":
        gbm = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        estimator = gbm(random_state=seed, categorical_features=list(categorical) or None)
        _set_params(
            estimator, params, model_type, reserved={"random_state", "categorical_features"}
        )
        encode = ColumnTransformer(
            [
                (
                    "cat",
                    OrdinalEncoder(
                        handle_unknown="use_encoded_value",
                        unknown_value=np.nan,  # unseen category = missing, which trees route
                        max_categories=MAX_GBM_CATEGORIES,
                    ),
                    list(categorical),
                ),
                ("num", "passthrough", list(numeric)),
            ],
            verbose_feature_names_out=False,
        ).set_output(transform="pandas")  # categorical_features refers to column names
    elif model_type == "torch_mlp":
        mlp = TorchMLPClassifier if classify else TorchMLPRegressor
        estimator = mlp(random_state=seed, device=device)
        _set_params(estimator, params, model_type, reserved={"random_state", "device"})
        encode = ColumnTransformer(
            [
                (
                    "num",
                    Pipeline(
                        [
                            (
                                "impute",
                                SimpleImputer(
                                    strategy="median", add_indicator=True, keep_empty_features=True
                                ),
                            ),
                            ("scale", StandardScaler()),
                        ]
                    ),
                    list(numeric),
                ),
                (
                    "cat",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",  # unseen: all zeros (or infrequent)
                        max_categories=MAX_MLP_CATEGORIES,
                        sparse_output=False,
                        dtype=np.float32,
                    ),
                    list(categorical),
                ),
            ]
        )
    else:
        raise ValueError(f"model type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    return Pipeline([("prepare", prepare), ("encode", encode), ("model", estimator)])


def _set_params(
    estimator: Any, params: dict[str, Any], model_type: str, reserved: set[str]
) -> None:
    allowed = sorted(set(estimator.get_params()) - reserved)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown {model_type} hyperparameter(s) {unknown}; allowed: {', '.join(allowed)}"
        )
    estimator.set_params(**params)


# --- scoring a few rows fast ------------------------------------------------------------------


class FastScorer:
    """A fitted `hist_gbm` pipeline's scores for a few rows at a time, without its per-call
    overheads, with the same numbers as the pipeline (bit for bit).

    The pipeline spends tens of ms on one row (~50 ms p50 on a busy 2-core machine):
    DataFrame work in `prepare_frame`, two ColumnTransformers (ours and HistGradientBoosting's
    own) and one OpenMP-dispatched call per tree. This takes ~0.3 ms: the two category
    encodings become one lookup per column (read off the fitted encoders), and every tree is
    walked at once, one vectorized step per level over all (row, tree) pairs, taking the
    branches sklearn's `_predict_one_from_raw_data` takes (a missing value where the node
    sends it; a category left when in the node's bitset, right when known, else as missing);
    leaf values are added tree by tree in sklearn's order, and the estimator's loss turns
    the sums into scores as in `predict_proba` / `predict`.

    It reads fitted HistGradientBoosting internals (`_predictors`, `_bin_mapper`,
    `_preprocessor`, `_loss`), so `compile_scorer` builds it only for the pipeline shape
    `build_model` makes and checks it against the pipeline before handing it out.
    """

    def __init__(self, model: Pipeline) -> None:
        prepare, _, estimator = (step for _, step in model.steps)
        self.numeric: list[str] = list(prepare.kw_args["numeric"])
        self.categorical: list[str] = list(prepare.kw_args["categorical"])
        self._classify = hasattr(estimator, "predict_proba")
        if self._classify and estimator.n_trees_per_iteration_ != 1:
            raise ValueError("only binary classification is supported")
        self._loss = estimator._loss
        self._baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64)

        # The estimator's input columns: ours, encoded, in HistGradientBoosting's order
        # (its own encoder puts its categorical columns first).
        names = [str(n) for n in estimator.feature_names_in_]
        is_cat = estimator.is_categorical_
        if estimator._preprocessor is None or is_cat is None:
            order = names
        else:
            order = [names[i] for i in np.flatnonzero(is_cat)]
            order += [names[i] for i in np.flatnonzero(~is_cat)]
        if sorted(order) != sorted([*self.numeric, *self.categorical]):
            raise ValueError(f"unexpected estimator columns {order}")
        self._position = {name: i for i, name in enumerate(order)}
        self._width = len(order)
        self._codes, self._unseen_code, self._missing_code = self._category_codes(model)

        # Every tree's nodes in one table, child indices made global; a leaf is its own
        # children, so a walk that reached one stays there.
        trees = [p for (p,) in estimator._predictors]
        sizes = [len(t.nodes) for t in trees]
        nodes = np.concatenate([t.nodes for t in trees])
        ids = np.arange(len(nodes))
        shift = np.repeat(np.cumsum([0, *sizes[:-1]]), sizes)
        leaf = nodes["is_leaf"].astype(bool)
        self._roots = np.cumsum([0, *sizes[:-1]]).astype(np.intp)
        self._value = nodes["value"].astype(np.float64)
        self._left = np.where(leaf, ids, nodes["left"].astype(np.intp) + shift)
        self._right = np.where(leaf, ids, nodes["right"].astype(np.intp) + shift)
        self._depth = int(nodes["depth"].max())
        feature = nodes["feature_idx"].astype(np.intp)
        missing_left = nodes["missing_go_to_left"].astype(bool)
        threshold = nodes["num_threshold"].astype(np.float64)

        # A categorical split as a table, code -> goes left: in the node's bitset -> left;
        # else known to the estimator -> right; else (unknown) as missing. Code 256 stands
        # for missing (NaN, or out of range: negative).
        known, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
        codes = np.arange(256)
        word, bit = codes // 32, (codes % 32).astype(np.uint32)
        is_known = ((np.asarray(known, dtype=np.uint32)[:, word] >> bit) & 1) == 1
        splits = np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf)
        tables = np.empty((len(splits), 257), dtype=bool)
        tree_of = np.repeat(np.arange(len(trees)), sizes)
        for k, i in enumerate(splits):
            bitsets = np.asarray(trees[tree_of[i]].raw_left_cat_bitsets, dtype=np.uint32)
            in_left = ((bitsets.reshape(-1, 8)[nodes["bitset_idx"][i], word] >> bit) & 1) == 1
            here = is_known[f_idx_map[feature[i]]]
            tables[k, :256] = in_left | (~here & missing_left[i])
            tables[k, 256] = missing_left[i]
        self._cat_tables, self._cat_feature = tables, feature[splits]

        # What a walk compares at each node, `value <= threshold`, reads from a row laid out
        # as [features with NaN kept | features with NaN as -inf | one column per categorical
        # split, 0.0 where the row goes left, else 1.0]: a missing value then goes where
        # the node sends it (NaN <= t is false: right; -inf <= t is true: left), and a
        # categorical split is a numeric one on its own column.
        width = self._width
        column = np.where(missing_left, width + feature, feature)
        column[splits] = 2 * width + np.arange(len(splits))
        threshold[splits] = 0.5
        self._column, self._threshold = column, threshold
        self._row_width = 2 * width + len(splits)

    def _category_codes(
        self, model: Pipeline
    ) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, float]]:
        """Per categorical column: each known category's code as the estimator gets it,
        and the codes of an unseen and of a missing value: the pipeline's own encoders run
        once over every known category (each column is encoded on its own)."""
        encoder = model.steps[1][1].named_transformers_["cat"]
        if list(model.steps[1][1].transformers_[0][2]) != self.categorical:
            raise ValueError("unexpected categorical encoder columns")
        known = {
            col: [str(c) for c in cats if isinstance(c, str)]
            for col, cats in zip(self.categorical, encoder.categories_, strict=True)
        }
        unseen = "\x00unseen"  # a value no encoder was fitted on
        extra = [unseen, None]
        rows = max((len(v) for v in known.values()), default=0) + len(extra)
        data: dict[str, Any] = {col: np.full(rows, np.nan) for col in self.numeric}
        for col in self.categorical:
            values = known[col] + extra
            data[col] = values + [values[0]] * (rows - len(values))
        encoded = self._estimator_input(model, data)
        codes, unseen_codes, missing_codes = {}, {}, {}
        for col in self.categorical:
            column = encoded[:, self._position[col]]
            n = len(known[col])
            codes[col] = {cat: float(column[i]) for i, cat in enumerate(known[col])}
            unseen_codes[col], missing_codes[col] = float(column[n]), float(column[n + 1])
        return codes, unseen_codes, missing_codes

    @staticmethod
    def _estimator_input(model: Pipeline, data: dict[str, Any]) -> NDArray[np.float64]:
        import pandas as pd

        estimator = model.steps[-1][1]
        encoded = model[:-1].transform(pd.DataFrame(data))
        if estimator._preprocessor is not None:
            encoded = estimator._preprocessor.transform(encoded)
        return np.asarray(encoded, dtype=np.float64)

    def matrix(self, columns: Any) -> NDArray[np.float64]:
        """The estimator's input for `columns` (name -> one value per row; numerics as
        numbers with None/NaN for missing, categories as strings with None for missing)."""
        n = len(columns[self.categorical[0] if self.categorical else self.numeric[0]])
        out = np.empty((n, self._width))
        for col in self.numeric:
            out[:, self._position[col]] = np.asarray(columns[col], dtype=np.float64)
        for col in self.categorical:
            codes, unseen, missing = (
                self._codes[col],
                self._unseen_code[col],
                self._missing_code[col],
            )
            out[:, self._position[col]] = [
                missing
                if _is_missing(v)
                else codes.get(v if isinstance(v, str) else str(v), unseen)
                for v in columns[col]
            ]
        return out

    def raw(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """The summed leaf values, (n, 1), as HistGradientBoosting's `_raw_predict`."""
        chunks = [self._raw(X[i : i + CHUNK_ROWS]) for i in range(0, len(X), CHUNK_ROWS)]
        out = np.zeros((len(X), 1), order="F")
        out += self._baseline
        if chunks:
            # Added tree after tree onto the baseline, as sklearn does: the same rounding.
            leaves = np.concatenate(chunks)
            out[:, 0] = np.cumsum(np.column_stack([out[:, 0], leaves]), axis=1)[:, -1]
        return out

    def _raw(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Each row's leaf value in every tree, (n, trees)."""
        n, width, trees = len(X), self._width, len(self._roots)
        rows = np.empty((n, self._row_width))
        rows[:, :width] = X
        rows[:, width : 2 * width] = np.where(np.isnan(X), -np.inf, X)
        if len(self._cat_feature):
            code = X[:, self._cat_feature]
            code = np.where(np.isnan(code) | (code < 0), 256, code).astype(np.intp)
            go_left = self._cat_tables[np.arange(len(self._cat_feature)), code]
            rows[:, 2 * width :] = np.where(go_left, 0.0, 1.0)
        flat = rows.ravel()
        node = np.tile(self._roots, n)
        start = np.repeat(np.arange(n) * self._row_width, trees) if n > 1 else 0
        column, threshold, left, right = self._column, self._threshold, self._left, self._right
        for _ in range(self._depth):
            go = flat[start + column[node]] <= threshold[node]
            node = np.where(go, left[node], right[node])
        leaves: NDArray[np.float64] = self._value[node].reshape(n, trees)
        return leaves

    def score(self, columns: Any) -> NDArray[np.float64]:
        """P(label=1) for a classifier, the prediction for a regressor: what
        `predict_proba(frame)[:, 1]` / `predict(frame)` of the pipeline gives."""
        raw = self.raw(self.matrix(columns))
        if self._classify:
            proba = self._loss.predict_proba(raw)
            return np.asarray(proba[:, 1], dtype=np.float64)
        return np.asarray(self._loss.link.inverse(raw.ravel()), dtype=np.float64)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def compile_scorer(model: Any, check_rows: int = 256, seed: int = 0) -> FastScorer | None:
    """A `FastScorer` for a fitted `build_model` hist_gbm pipeline, or None for anything
    else (another model type, another pipeline shape, a binary/multiclass mismatch, or
    sklearn internals that moved). It must reproduce the pipeline's scores exactly on
    `check_rows` rows (every known category, unseen and missing ones, values at and around
    every split threshold, missing numerics) or it is not returned."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    if not (
        isinstance(model, Pipeline)
        and [name for name, _ in model.steps] == ["prepare", "encode", "model"]
        # Logged models carry prepare_frame by value (train.py): same name, not same object.
        and getattr(getattr(model.steps[0][1], "func", None), "__qualname__", "")
        == prepare_frame.__qualname__
        and isinstance(
            model.steps[-1][1], (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
        )
    ):
        return None
    try:
        scorer = FastScorer(model)
        frame = _check_frame(scorer, check_rows, seed)
        expected = model.predict_proba(frame)[:, 1] if scorer._classify else model.predict(frame)
        got = scorer.score({col: frame[col].tolist() for col in frame.columns})
    except Exception:  # internals not as expected: the pipeline itself scores
        return None
    if not np.array_equal(np.asarray(expected, dtype=np.float64), got, equal_nan=True):
        return None
    return scorer


def _check_frame(scorer: FastScorer, n: int, seed: int) -> pd.DataFrame:
    """Rows that take every kind of branch: numerics at, just below and above the trees'
    thresholds or missing; categories known, unseen or missing."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for col in scorer.numeric:
        at = scorer._threshold[
            np.isin(scorer._column, [scorer._position[col], scorer._width + scorer._position[col]])
        ]
        pool = np.concatenate(
            [at, np.nextafter(at, -np.inf), np.nextafter(at, np.inf), [np.nan, 0.0]]
        )
        data[col] = rng.choice(pool, n)
    for col in scorer.categorical:
        kinds = [*scorer._codes[col], "\x00never seen", None]
        data[col] = [kinds[i] for i in rng.integers(0, len(kinds), n)]
    return pd.DataFrame(data)


# --- the PyTorch MLP, as an sklearn estimator ---------------------------------------------


class _TorchMLP(BaseEstimator):  # type: ignore[misc]
    """Shared training loop. Fitted state: `net_` (on CPU, eval mode), `device_` (the device
    training ran on), `n_epochs_`, `best_epoch_`, `best_val_loss_`, `n_features_in_`."""

    def __init__(
        self,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 512,
        max_epochs: int = 40,
        patience: int = 5,
        validation_fraction: float = 0.1,
        random_state: int = 0,
        device: str = "auto",
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device

    # Subclasses: how targets become tensors, the loss, and the number of outputs.
    def _targets(self, y: NDArray[Any]) -> tuple[NDArray[Any], int]:
        raise NotImplementedError

    def _loss(self) -> torch.nn.Module:
        raise NotImplementedError

    def _fit(self, X: ArrayLike, y: ArrayLike) -> None:
        import torch
        from torch import nn

        features = np.asarray(X, dtype=np.float32)
        target, n_out = self._targets(np.asarray(y))
        n, d = features.shape
        self.n_features_in_ = d
        device = torch.device(resolve_device(self.device))
        self.device_ = device.type
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)

        # Early stopping watches a held-out share of the training rows.
        order = rng.permutation(n)
        n_val = int(n * self.validation_fraction) if n >= 50 else 0
        val_idx, train_idx = order[:n_val], order[n_val:]
        x_all = torch.from_numpy(features).to(device)
        y_all = torch.from_numpy(target).to(device)
        x_train, y_train = x_all[train_idx], y_all[train_idx]
        x_val, y_val = x_all[val_idx], y_all[val_idx]

        layers: list[nn.Module] = []
        width = d
        for size in self.hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU(), nn.Dropout(self.dropout)]
            width = int(size)
        layers.append(nn.Linear(width, n_out))
        net = nn.Sequential(*layers).to(device)
        loss_fn = self._loss()
        optimizer = torch.optim.AdamW(
            net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        shuffle = torch.Generator().manual_seed(self.random_state)

        best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
        epoch = 0
        for epoch in range(1, self.max_epochs + 1):
            net.train()
            perm = torch.randperm(len(train_idx), generator=shuffle).to(device)
            for start in range(0, len(perm), self.batch_size):
                batch = perm[start : start + self.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(x_train[batch]), y_train[batch])
                loss.backward()
                optimizer.step()
            if n_val == 0:
                continue
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(net(x_val), y_val))
            if val_loss < best_loss - 1e-4:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        # Stored on CPU: the pickled model loads (and predicts) on machines without a GPU.
        self.net_ = net.to("cpu").eval()
        self.n_epochs_ = epoch
        self.best_epoch_ = best_epoch or epoch
        self.best_val_loss_ = best_loss if n_val else math.nan

    def _forward(self, X: ArrayLike) -> NDArray[np.float64]:
        import torch

        features = torch.from_numpy(np.asarray(X, dtype=np.float32))
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(features), 65536):
                chunks.append(self.net_(features[start : start + 65536]).double().numpy())
        out: NDArray[np.float64] = np.concatenate(chunks) if chunks else np.empty((0, 1))
        return out


class TorchMLPClassifier(ClassifierMixin, _TorchMLP):  # type: ignore[misc]
    """Softmax over the classes seen in `fit` (two or more); `predict_proba` is (n, classes)."""

    def _targets(self, y: NDArray[Any]) -> tuple[NDArray[Any], int]:
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"classification needs two classes, got only {self.classes_}")
        return codes.astype(np.int64), len(self.classes_)

    def _loss(self) -> torch.nn.Module:
        from torch import nn

        return nn.CrossEntropyLoss()

    def fit(self, X: ArrayLike, y: ArrayLike) -> TorchMLPClassifier:
        self._fit(X, y)
        return self

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        logits = self._forward(X)
        logits -= logits.max(axis=1, keepdims=True)
        proba: NDArray[np.float64] = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        predicted: NDArray[Any] = self.classes_[self.predict_proba(X).argmax(axis=1)]
        return predicted


class TorchMLPRegressor(RegressorMixin, _TorchMLP):  # type: ignore[misc]
    """Mean squared error on the standardized target; predictions come back in its units."""

    def _targets(self, y: NDArray[Any]) -> tuple[NDArray[Any], int]:
        target = y.astype(np.float64)
        self.y_mean_ = float(target.mean())
        self.y_scale_ = float(target.std()) or 1.0
        return ((target - self.y_mean_) / self.y_scale_).astype(np.float32)[:, None], 1

    def _loss(self) -> torch.nn.Module:
        from torch import nn

        return nn.MSELoss()

    def fit(self, X: ArrayLike, y: ArrayLike) -> TorchMLPRegressor:
        self._fit(X, y)
        return self

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        scaled: NDArray[np.float64] = self._forward(X)[:, 0] * self.y_scale_ + self.y_mean_
        return scaled


def fitted_device(model: Pipeline) -> str:
    """The device a fitted pipeline trained on: the MLP's own record; trees are CPU-only."""
    return str(getattr(model[-1], "device_", "cpu"))


def fit_summary(model: Pipeline) -> dict[str, float]:
    """What fitting did (early stopping included): MLP epochs or boosting iterations."""
    estimator = model[-1]
    if hasattr(estimator, "n_epochs_"):
        summary = {"epochs": estimator.n_epochs_, "best_epoch": estimator.best_epoch_}
        if not math.isnan(estimator.best_val_loss_):
            summary["best_val_loss"] = estimator.best_val_loss_
        return {k: float(v) for k, v in summary.items()}
    if hasattr(estimator, "n_iter_"):
        return {"iterations": float(estimator.n_iter_)}
    return {}
