"""The one training entrypoint: `python -m flywheel.train --spec path/to/spec.json`.

The same command runs as a local subprocess (compute=local) and in a Kubernetes pod
(compute=kubernetes); everything it needs is in the spec (`flywheel.runspec.RunSpec`), so
it assumes nothing about the working directory or the environment. Relative paths in the
spec are read relative to the spec file's folder.

Steps: read and validate the spec; resume the MLflow run the DAG created
(`spec.run_id`, which carries the lineage tags); load the training and evaluation Parquet
files; fit `models.build_model`; evaluate every evaluation set, overall and per slice;
log params, metrics and the model (cloudpickle, explicit pip requirements, a signature and
an input example) to that run; write a `RunResult` JSON to `spec.output_path`; exit 0.

It never registers or promotes the model: the DAG's gate does. The run ends FINISHED on
success, FAILED (with a `flywheel.error` tag) on an error after the run was resumed. Any
error exits non-zero: 2 for a bad spec, 1 otherwise, with the traceback and, last, a
one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flywheel.runspec import PREDICTION, REFERENCE_ARTIFACT, TRAIN, RunResult, RunSpec, RunSpecError

if TYPE_CHECKING:
    import pandas as pd

MODEL_NAME = "model"  # the model's name in the run: runs:/<run_id>/model
SIGNATURE_ROWS = 1000  # rows used to infer the model signature
EXAMPLE_ROWS = 5  # rows stored as the model's input example
ERROR_TAG = "flywheel.error"
# Packages the logged model needs to load and predict, pinned to the versions it was
# trained with. Listed, not inferred: inference costs MLflow 7-10 s in a subprocess.
MODEL_REQUIREMENTS = ("scikit-learn", "numpy", "pandas", "scipy", "cloudpickle")
_BAD_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_.\- /]")


class TrainError(RuntimeError):
    """The data does not fit the spec: a missing file or column, a bad or missing label."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flywheel.train", description="Train, evaluate and log one model."
    )
    parser.add_argument("--spec", required=True, help="RunSpec JSON written by the DAG")
    args = parser.parse_args(argv)
    try:
        spec_path = Path(args.spec).resolve()
        spec = RunSpec.read(spec_path)
        result = run(spec, base=spec_path.parent)
    except Exception as err:
        traceback.print_exc(file=sys.stderr)
        print(f"flywheel.train: error: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, RunSpecError) else 1
    metrics = ", ".join(
        f"{name}_{key} {m[key]:.4f}"
        for name, m in result.metrics.items()
        for key in list(m)[:2]  # the config's first two metrics of each set
    )
    print(f"flywheel.train: done: {result.model_uri} ({metrics})")
    return 0


def run(spec: RunSpec, base: Path | None = None) -> RunResult:
    """Train, evaluate and log into the existing run `spec.run_id`; write the RunResult."""
    import mlflow

    base = base or Path.cwd()
    mlflow.set_tracking_uri(spec.tracking_uri)
    # Resume first: a wrong run id or an unreachable server fails before minutes of training.
    with mlflow.start_run(run_id=spec.run_id):
        try:
            result = _train_and_log(spec, base)
            result.write(_resolve(spec.output_path, base))
        except Exception as err:
            with contextlib.suppress(Exception):
                mlflow.set_tag(ERROR_TAG, _one_line(err)[:5000])
            raise
    return result


def _train_and_log(spec: RunSpec, base: Path) -> RunResult:
    import mlflow

    from flywheel.metrics import evaluate
    from flywheel.models import build_model, fit_summary, fitted_device, prepare_frame

    classify = spec.task == "classification"
    train = _load(spec, TRAIN, _resolve(spec.train_path, base), [*spec.features, spec.label])
    x_train = prepare_frame(train, spec.numeric, spec.categorical)
    y_train = train[spec.label]
    if classify and y_train.nunique() < 2:
        raise TrainError(f"training set: label '{spec.label}' has a single class")
    evals = {
        name: _load(spec, name, _resolve(path, base), [*spec.features, spec.label, *spec.slices])
        for name, path in spec.eval_paths.items()
    }

    threads = cpu_threads()
    if spec.model_type == "torch_mlp":
        import torch

        torch.set_num_threads(threads)  # sklearn's OpenMP already sizes itself the same way
    if spec.model_type == "hist_gbm" and spec.device == "cuda":
        print("flywheel.train: hist_gbm trains on CPU only; device 'cuda' ignored", file=sys.stderr)
    model = build_model(
        spec.task,
        spec.model_type,
        spec.params,
        spec.numeric,
        spec.categorical,
        seed=spec.seed,
        device=spec.device,
    )
    began = time.perf_counter()
    model.fit(x_train, y_train)
    train_seconds = time.perf_counter() - began
    device = fitted_device(model)
    fitted = fit_summary(model)
    print(
        f"flywheel.train: trained {spec.model_type} on {device} in {train_seconds:.1f} s "
        f"({len(x_train):,} rows x {len(spec.features)} features, {threads} CPU threads; "
        + ", ".join(f"{k} {v:g}" for k, v in fitted.items())
        + ")",
        flush=True,
    )

    metrics: dict[str, dict[str, float]] = {}
    for name, frame in evals.items():
        scores = model.predict_proba(frame) if classify else model.predict(frame)
        metrics[name] = evaluate(spec.task, frame[spec.label], scores, frame, spec.slices)
    rows = {TRAIN: len(x_train), **{name: len(frame) for name, frame in evals.items()}}

    mlflow.log_params(
        {
            "model_type": spec.model_type,
            "device": device,
            "cpu_threads": threads,
            "seed": spec.seed,
            "task": spec.task,
            "label": spec.label,
            "n_numeric": len(spec.numeric),
            "n_categorical": len(spec.categorical),
            **{f"rows_{name}": n for name, n in rows.items()},
            **{f"model.{k}": _param_value(v) for k, v in _hyperparameters(model).items()},
        }
    )
    mlflow.log_metrics(
        {
            "train_seconds": train_seconds,
            **{f"fit_{k}": v for k, v in fitted.items()},
            **metric_names(metrics),
        }
    )

    if spec.reference_rows and "holdout" in evals:
        _log_reference(spec, model, evals["holdout"], Path(_resolve(spec.output_path, base)))

    began = time.perf_counter()
    _log_model(spec, model, x_train)
    print(f"flywheel.train: logged the model in {time.perf_counter() - began:.1f} s", flush=True)
    result = RunResult(
        metrics=metrics,
        model_uri=f"runs:/{spec.run_id}/{MODEL_NAME}",
        device=device,
        train_seconds=round(train_seconds, 3),
        rows=rows,
        model_type=spec.model_type,
    )
    mlflow.log_text(spec.to_json(), "flywheel/run_spec.json")
    mlflow.log_text(result.to_json(), "flywheel/run_result.json")
    return result


def _log_reference(spec: RunSpec, model: Any, holdout: pd.DataFrame, output: Path) -> None:
    """The model's reference snapshot for drift monitoring: unseen rows of its own training
    window (same distribution as what it trained on, hash split), with its scores on them,
    so monitoring compares like with like: data, predictions and performance."""
    import mlflow

    rows = holdout.sample(n=min(len(holdout), spec.reference_rows), random_state=spec.seed)
    scores = model.predict_proba(rows) if spec.task == "classification" else model.predict(rows)
    rows = rows.assign(**{PREDICTION: scores[:, 1] if spec.task == "classification" else scores})
    path = output.with_name("reference.parquet")
    rows.reset_index(drop=True).to_parquet(path, index=False)
    mlflow.log_artifact(str(path), REFERENCE_ARTIFACT.rpartition("/")[0])


def _load(spec: RunSpec, name: str, path: str, columns: list[str]) -> pd.DataFrame:
    """One Parquet file: the columns the spec needs, labelled rows only, label checked."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise TrainError(f"{name} set: no such file {path}") from None
    except Exception as err:
        raise TrainError(f"{name} set: cannot read {path} as Parquet: {_one_line(err)}") from err
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise TrainError(f"{name} set ({path}) lacks columns {missing}")
    frame = frame[list(dict.fromkeys(columns))]
    label = pd.to_numeric(frame[spec.label], errors="coerce")
    if label.isna().sum() > frame[spec.label].isna().sum():
        raise TrainError(f"{name} set: label '{spec.label}' is not numeric")
    # Rows whose label is not known (yet) can neither train nor score a model.
    frame = frame.assign(**{spec.label: label.astype("float64")})[label.notna()]
    if frame.empty:
        raise TrainError(f"{name} set ({path}) has no labelled rows")
    if spec.task == "classification":
        bad = sorted(set(frame[spec.label].unique()) - {0.0, 1.0})
        if bad:
            raise TrainError(f"{name} set: label '{spec.label}' must be 0/1, found {bad[:5]}")
        frame = frame.astype({spec.label: "int64"})
    return frame.reset_index(drop=True)


def _log_model(spec: RunSpec, model: Any, x_train: pd.DataFrame) -> None:
    import mlflow
    from mlflow.models import infer_signature

    import flywheel.models

    classify = spec.task == "classification"
    sample = x_train.head(SIGNATURE_ROWS)
    output = model.predict_proba(sample) if classify else model.predict(sample)
    # Pickled by value: the artifact carries flywheel.models' code (the MLP class and the
    # frame preparation), so it loads where flywheel is not installed (an MLflow model
    # server) and survives later refactors of this module.
    with _pickled_by_value(flywheel.models):
        mlflow.sklearn.log_model(
            model,
            name=MODEL_NAME,
            signature=infer_signature(sample, output),
            input_example=x_train.head(EXAMPLE_ROWS),
            serialization_format="cloudpickle",  # skops floods logs, needs trusted types
            pip_requirements=model_requirements(spec.model_type),
            # pyfunc's predict() then returns probabilities: (n, 2) for a 0/1 label.
            pyfunc_predict_fn="predict_proba" if classify else "predict",
        )


def cpu_threads() -> int:
    """CPU threads for training: $OMP_NUM_THREADS if set, else the CPUs this process may use.

    joblib counts the container's CPU quota and affinity; torch alone would size its pool by
    every core of the node, and oversubscribed OpenMP is many times slower, not faster
    (measured: a 70k-row fit 3-7x slower with 2 threads on 2 busy cores than with 1). Where
    trainings share a machine, the caller sets OMP_NUM_THREADS.
    """
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    import joblib

    return max(1, int(joblib.cpu_count()))


def model_requirements(model_type: str) -> list[str]:
    """Pinned pip requirements of a logged model (local version labels like +cpu dropped)."""
    from importlib.metadata import version

    import mlflow

    packages = [*MODEL_REQUIREMENTS, *(["torch"] if model_type == "torch_mlp" else [])]
    return [f"mlflow=={mlflow.__version__}"] + [
        f"{name}=={version(name).split('+')[0]}" for name in packages
    ]


@contextlib.contextmanager
def _pickled_by_value(module: ModuleType) -> Iterator[None]:
    import cloudpickle  # type: ignore[import-untyped]

    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def metric_names(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """MLflow metric name -> value: `<set>_<metric>`, `<set>_<column>_<value>/<metric>`.

    MLflow allows letters, digits, `_ - . / ` and space (colons only off Windows); anything
    else becomes `_`, and no path segment may be empty, `.` or `..`.
    """
    out: dict[str, float] = {}
    for set_name, scores in metrics.items():
        for key, value in scores.items():
            column_value, _, metric = key.rpartition("/")
            if column_value:  # a slice: "<column>=<value>/<metric>"; the value may hold a "/"
                column, _, slice_value = column_value.partition("=")
                raw = f"{set_name}_{column}_{slice_value.replace('/', '_')}/{metric}"
            else:
                raw = f"{set_name}_{key}"
            name = sanitize_metric_name(raw)
            if name in out:
                print(
                    f"flywheel.train: metric {key!r} of {set_name} clashes with {name!r}; "
                    "kept the first",
                    file=sys.stderr,
                )
                continue
            out[name] = value
    return out


def sanitize_metric_name(name: str) -> str:
    parts = _BAD_METRIC_CHARS.sub("_", name).split("/")
    return "/".join("_" if part in ("", ".", "..") else part for part in parts)


def _hyperparameters(model: Any) -> dict[str, Any]:
    """The estimator's effective hyperparameters (defaults included), not the pipeline's."""
    params: dict[str, Any] = model[-1].get_params(deep=False)
    return params


def _param_value(value: Any) -> str:
    text = str(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 500 else text[:497] + "..."


def _resolve(path: str, base: Path) -> str:
    """Relative paths are relative to the spec file, not to the working directory."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(base / path)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}" if not isinstance(err, RunSpecError) else text


if __name__ == "__main__":
    sys.exit(main())
