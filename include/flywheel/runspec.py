"""The contract between the training DAG, the local subprocess and the Kubernetes pod.

The DAG writes a `RunSpec` as JSON, starts `python -m flywheel.train --spec <file>` (as a
subprocess or in a pod: same command, same file), and reads back a `RunResult` JSON from
`RunSpec.output_path`. Both sides validate what they read: a bad field raises `RunSpecError`
naming it, before anything heavy is imported.

Standard library only: DAG files import this module at parse time.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

TASKS = ("classification", "regression")
MODEL_TYPES = ("hist_gbm", "torch_mlp")
DEVICES = ("auto", "cpu", "cuda")
ENTRYPOINT = "flywheel.train"  # python -m flywheel.train --spec <file>
# Evaluation set names become MLflow metric prefixes and keys of `RunResult.rows`.
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TRAIN = "train"  # the key of the training set in `RunResult.rows`; no eval set may take it


class RunSpecError(ValueError):
    """A spec or result is not valid JSON or has a bad field; `field` names it (or is None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


REFERENCE_ARTIFACT = "reference/reference.parquet"  # in the training run's artifacts
PREDICTION = "prediction"  # the score column of reference snapshots and prediction logs


def command(spec_path: str, python: str = "python") -> list[str]:
    """The one training command line, for a local subprocess and a pod alike."""
    return [python, "-m", ENTRYPOINT, "--spec", spec_path]


@dataclass(frozen=True)
class RunSpec:
    task: str  # "classification" | "regression"
    label: str
    numeric: list[str]  # numeric feature columns
    categorical: list[str]  # categorical feature columns (strings)
    model_type: str  # "hist_gbm" | "torch_mlp"
    params: dict[str, Any]  # hyperparameters of that model type (JSON values)
    train_path: str  # Parquet: feature columns + label (+ slice columns)
    eval_paths: dict[str, str]  # evaluation set name -> Parquet, e.g. {"holdout": ...}
    slices: list[str]  # columns to compute per-value metrics on, e.g. ["origin", "carrier"]
    tracking_uri: str  # MLflow tracking server
    run_id: str  # an MLflow run the DAG already created (lineage tags on it); training resumes it
    output_path: str  # where the entrypoint writes its RunResult JSON
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    # Rows of the "holdout" eval set kept, with the model's scores, as the model's reference
    # snapshot for drift monitoring (REFERENCE_ARTIFACT in the run); 0: none.
    reference_rows: int = 0

    def __post_init__(self) -> None:
        # Built by the DAG or read from JSON, a bad spec never exists: same checks either way.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        _choice(data, "task", TASKS)
        _text(data, "label")
        for name in ("numeric", "categorical", "slices"):
            _names(data, name)
        _choice(data, "model_type", MODEL_TYPES)
        _params(data)
        for name in ("train_path", "tracking_uri", "run_id", "output_path"):
            _text(data, name)
        _eval_paths(data)
        _int(data, "seed")
        _int(data, "reference_rows")
        if self.reference_rows < 0:
            raise RunSpecError("spec field 'reference_rows': must be >= 0", "reference_rows")
        _choice(data, "device", DEVICES)
        self._check_columns()

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = _load_object(text, "spec")
        _check_fields(cls, data, "spec")
        return cls(**data)

    def write(self, path: str | Path) -> Path:
        return _write_atomic(Path(path), self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> RunSpec:
        return cls.from_json(_read(Path(path), "spec"))

    def _check_columns(self) -> None:
        if not self.features:
            raise RunSpecError("spec field 'numeric': no feature columns at all", "numeric")
        for name in ("numeric", "categorical", "slices"):
            cols: list[str] = getattr(self, name)
            dupes = sorted({c for c in cols if cols.count(c) > 1})
            if dupes:
                raise RunSpecError(f"spec field '{name}': columns listed twice: {dupes}", name)
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise RunSpecError(
                f"spec field 'categorical': {both} are also numeric features", "categorical"
            )
        if self.label in self.features:
            raise RunSpecError(f"spec field 'label': '{self.label}' is also a feature", "label")
        if self.label in self.slices:
            raise RunSpecError("spec field 'slices': cannot slice on the label", "slices")


@dataclass(frozen=True)
class RunResult:
    # eval set name -> metric -> value; slice metrics keyed like "origin=EWR/roc_auc"
    metrics: dict[str, dict[str, float]]
    model_uri: str  # runs:/<run_id>/model
    device: str  # the device training actually used: "cpu" or "cuda"
    train_seconds: float
    rows: dict[str, int]  # "train" and each eval set -> rows used (labelled rows)
    model_type: str

    def __post_init__(self) -> None:
        metrics = self.metrics
        if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and all(_is_number(x) for x in v.values())
            for k, v in metrics.items()
        ):
            raise RunSpecError(
                "result field 'metrics': expected {eval set: {metric: finite number}}", "metrics"
            )
        rows = self.rows
        if not isinstance(rows, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in rows.values()
        ):
            raise RunSpecError("result field 'rows': expected {set name: integer}", "rows")
        if not _is_number(self.train_seconds):
            raise RunSpecError(
                "result field 'train_seconds': expected a finite number", "train_seconds"
            )
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        _text(data, "model_uri", what="result")
        _text(data, "device", what="result")
        _choice(data, "model_type", MODEL_TYPES, what="result")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        data = _load_object(text, "result")
        _check_fields(cls, data, "result")
        return cls(**data)

    def write(self, path: str | Path) -> Path:
        return _write_atomic(Path(path), self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> RunResult:
        return cls.from_json(_read(Path(path), "result"))


# --- validation helpers -------------------------------------------------------------------


def _load_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunSpecError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise RunSpecError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_fields(cls: type, data: dict[str, Any], what: str) -> None:
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RunSpecError(f"{what} field '{unknown[0]}' is unknown (known: {known})", unknown[0])
    for f in fields(cls):
        if f.default is MISSING and f.name not in data:
            raise RunSpecError(f"{what} field '{f.name}' is missing", f.name)


def _get(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise RunSpecError(f"field '{name}' is missing", name)
    return data[name]


def _bad(what: str, name: str, expected: str, value: Any) -> RunSpecError:
    shown = json.dumps(value) if _jsonable(value) else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return RunSpecError(f"{what} field '{name}': expected {expected}, got {shown}", name)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _text(data: dict[str, Any], name: str, *, what: str = "spec") -> str:
    value = _get(data, name)
    if not isinstance(value, str) or not value.strip():
        raise _bad(what, name, "a non-empty string", value)
    return value


def _choice(
    data: dict[str, Any], name: str, choices: tuple[str, ...], *, what: str = "spec"
) -> str:
    value = _get(data, name)
    if value not in choices:
        raise _bad(what, name, f"one of {', '.join(choices)}", value)
    return str(value)


def _int(data: dict[str, Any], name: str) -> int:
    value = _get(data, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad("spec", name, "a non-negative integer", value)
    return value


def _names(data: dict[str, Any], name: str) -> list[str]:
    value = _get(data, name)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad("spec", name, "a list of column names", value)
    return list(value)


def _params(data: dict[str, Any]) -> dict[str, Any]:
    value = _get(data, "params")
    if not isinstance(value, dict):
        raise _bad("spec", "params", "an object of hyperparameters", value)
    return dict(value)


def _eval_paths(data: dict[str, Any]) -> dict[str, str]:
    value = _get(data, "eval_paths")
    if not isinstance(value, dict) or not value:
        raise _bad("spec", "eval_paths", "a non-empty object {eval set name: path}", value)
    for key, path in value.items():
        if key == TRAIN or not _SET_NAME.match(key):
            raise RunSpecError(
                f"spec field 'eval_paths': bad eval set name {key!r} (letters, digits, _ . -;"
                f" not '{TRAIN}')",
                "eval_paths",
            )
        if not isinstance(path, str) or not path.strip():
            raise _bad("spec", "eval_paths", f"a path for eval set '{key}'", path)
    return dict(value)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


# --- files --------------------------------------------------------------------------------


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise RunSpecError(f"cannot read {what} file {path}: {err.strerror}") from None


def _write_atomic(path: Path, text: str) -> Path:
    """Write aside, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "DEVICES",
    "ENTRYPOINT",
    "MODEL_TYPES",
    "TASKS",
    "RunResult",
    "RunSpec",
    "RunSpecError",
    "command",
]
