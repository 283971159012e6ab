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
    out = pd.DataFrame(index=frame.index)
    for col in numeric:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in categorical:
        values = frame[col]
        out[col] = values.astype(str).astype(object).where(values.notna(), np.nan)
    return out


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
