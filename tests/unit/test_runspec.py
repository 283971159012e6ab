"""The training contract: RunSpec and RunResult survive a JSON round trip, and every bad
field is refused with a RunSpecError that names it, before anything heavy is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flywheel.runspec import RunResult, RunSpec, RunSpecError, command


def _spec(**changes: Any) -> RunSpec:
    fields: dict[str, Any] = {
        "task": "classification",
        "label": "late",
        "numeric": ["distance", "temp"],
        "categorical": ["carrier", "origin"],
        "model_type": "hist_gbm",
        "params": {"max_iter": 50, "learning_rate": 0.1},
        "train_path": "/data/train.parquet",
        "eval_paths": {"holdout": "/data/holdout.parquet", "recent": "/data/recent.parquet"},
        "slices": ["origin", "carrier"],
        "tracking_uri": "http://127.0.0.1:5000",
        "run_id": "0123456789abcdef0123456789abcdef",
        "output_path": "/data/result.json",
        "seed": 7,
        "device": "cpu",
    }
    return RunSpec(**{**fields, **changes})


def _raw(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_spec().to_json())
    data.update(changes)
    return data


def test_round_trip_through_json_and_file(tmp_path: Path) -> None:
    spec = _spec()
    assert RunSpec.from_json(spec.to_json()) == spec
    path = spec.write(tmp_path / "nested" / "spec.json")
    assert RunSpec.read(path) == spec
    assert not list(path.parent.glob(".*.tmp")), "the atomic write left its temp file"
    assert spec.features == ["distance", "temp", "carrier", "origin"]


def test_seed_and_device_have_defaults() -> None:
    data = _raw()
    del data["seed"], data["device"]
    spec = RunSpec.from_json(json.dumps(data))
    assert (spec.seed, spec.device) == (0, "auto")


def test_command_is_the_one_entrypoint() -> None:
    assert command("/x/spec.json") == ["python", "-m", "flywheel.train", "--spec", "/x/spec.json"]


BAD_VALUES: list[tuple[str, Any]] = [
    ("task", "ranking"),
    ("task", None),
    ("model_type", "xgboost"),
    ("device", "tpu"),
    ("label", ""),
    ("label", 3),
    ("numeric", "distance"),
    ("numeric", ["distance", 1]),
    ("categorical", [""]),
    ("slices", {"origin": 1}),
    ("params", ["max_iter", 3]),
    ("train_path", None),
    ("train_path", "  "),
    ("eval_paths", {}),
    ("eval_paths", ["/data/holdout.parquet"]),
    ("eval_paths", {"holdout": 3}),
    ("eval_paths", {"train": "/data/x.parquet"}),
    ("eval_paths", {"bad name!": "/data/x.parquet"}),
    ("tracking_uri", ""),
    ("run_id", 12),
    ("output_path", []),
    ("seed", -1),
    ("seed", "1"),
    ("seed", True),
    ("seed", 1.5),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_bad_value_is_named(field: str, value: Any) -> None:
    with pytest.raises(RunSpecError, match=f"'{field}'") as err:
        RunSpec.from_json(json.dumps(_raw(**{field: value})))
    assert err.value.field == field


REQUIRED = [
    "task", "label", "numeric", "categorical", "model_type", "params", "train_path",
    "eval_paths", "slices", "tracking_uri", "run_id", "output_path",
]  # fmt: skip


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_field_is_named(field: str) -> None:
    data = _raw()
    del data[field]
    with pytest.raises(RunSpecError, match=f"'{field}' is missing") as err:
        RunSpec.from_json(json.dumps(data))
    assert err.value.field == field


def test_unknown_field_is_named() -> None:
    with pytest.raises(RunSpecError, match="'modle_type' is unknown") as err:
        RunSpec.from_json(json.dumps(_raw(modle_type="torch_mlp")))
    assert err.value.field == "modle_type"


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("numeric", {"numeric": [], "categorical": []}),
        ("numeric", {"numeric": ["temp", "temp"]}),
        ("categorical", {"categorical": ["temp"]}),
        ("label", {"label": "temp"}),
        ("slices", {"slices": ["late"]}),
    ],
)
def test_inconsistent_columns_are_named(field: str, changes: dict[str, Any]) -> None:
    with pytest.raises(RunSpecError, match=f"'{field}'") as err:
        RunSpec.from_json(json.dumps(_raw(**changes)))
    assert err.value.field == field


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"spec"'])
def test_not_a_json_object(text: str) -> None:
    with pytest.raises(RunSpecError, match="spec"):
        RunSpec.from_json(text)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RunSpecError, match="cannot read spec file"):
        RunSpec.read(tmp_path / "absent.json")


def _result() -> RunResult:
    return RunResult(
        metrics={
            "holdout": {"roc_auc": 0.71, "origin=EWR/roc_auc": 0.69},
            "recent": {"roc_auc": 0.7},
        },
        model_uri="runs:/0123456789abcdef0123456789abcdef/model",
        device="cpu",
        train_seconds=12.5,
        rows={"train": 1000, "holdout": 100, "recent": 200},
        model_type="torch_mlp",
    )


def test_result_round_trip(tmp_path: Path) -> None:
    result = _result()
    assert RunResult.from_json(result.to_json()) == result
    assert RunResult.read(result.write(tmp_path / "result.json")) == result


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metrics", {"holdout": {"roc_auc": "high"}}),
        ("metrics", {"holdout": 0.7}),
        ("rows", {"train": 1.5}),
        ("train_seconds", None),
        ("model_type", "xgboost"),
        ("model_uri", ""),
    ],
)
def test_bad_result_field_is_named(field: str, value: Any) -> None:
    data = json.loads(_result().to_json())
    data[field] = value
    with pytest.raises(RunSpecError, match=f"'{field}'") as err:
        RunResult.from_json(json.dumps(data))
    assert err.value.field == field


def test_nan_never_reaches_json() -> None:
    with pytest.raises(RunSpecError, match="'train_seconds'"):
        RunResult(**{**_result().__dict__, "train_seconds": float("nan")})
    with pytest.raises(RunSpecError, match="'metrics'"):
        RunResult(**{**_result().__dict__, "metrics": {"holdout": {"rmse": float("inf")}}})


def test_a_spec_built_in_code_is_checked_too() -> None:
    """The DAG builds specs directly: they meet the same checks as specs read from JSON."""
    with pytest.raises(RunSpecError, match="'device'") as err:
        _spec(device="gpu")
    assert err.value.field == "device"
    with pytest.raises(RunSpecError, match="'eval_paths'"):
        _spec(eval_paths={"train": "/data/train.parquet"})


def test_runspec_imports_only_the_standard_library() -> None:
    """DAG files import it at parse time: it must not drag in pandas, MLflow and friends."""
    heavy = ["numpy", "pandas", "sklearn", "torch", "mlflow", "pydantic", "yaml", "pyarrow"]
    code = (
        "import sys, flywheel.runspec; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
