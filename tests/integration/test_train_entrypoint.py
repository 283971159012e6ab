"""`python -m flywheel.train --spec ...` for real: subprocesses (run from an unrelated
working directory, with no MLflow settings in their environment) resume runs created here on
a real MLflow server, train each model type on synthetic data, log params, metrics and a
model that loads back and predicts probabilities, write their RunResult, and register
nothing; a bad spec or bad data fails with the reason on stderr's last line.

Every process that talks to MLflow pays ~5-15 s of imports here (MLflow loads Feast's
request-header plugin, which imports Feast and torch), so only the two model types run as
subprocesses; the regression and bad-data cases call the same `train.run`/`train.main`
in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from flywheel.config import METRICS
from flywheel.runspec import RunResult, RunSpec, command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NUMERIC = ["x0", "x1", "x2", "x3", "x4"]
CATEGORICAL = ["origin", "carrier"]
PARAMS: dict[str, dict[str, Any]] = {
    "hist_gbm": {"max_iter": 50},
    "torch_mlp": {"hidden": [32], "max_epochs": 10},
}
LINEAGE = {"flywheel.airflow_run_id": "manual__test", "flywheel.dataset": "synthetic"}
UNLABELLED = 50  # rows of the "recent" set whose label is not known yet


def make_frame(n: int, seed: int, task: str = "classification") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=n) for c in NUMERIC})
    frame["origin"] = rng.choice(["EWR", "JFK", "LGA"], n)
    frame["carrier"] = rng.choice(list("ABCD"), n)
    frame["flight_id"] = [f"f{seed}-{i}" for i in range(n)]  # extra columns are ignored
    z = 1.5 * frame["x0"] - frame["x1"] + frame["origin"].map({"EWR": 1, "JFK": 0, "LGA": -1})
    frame.loc[rng.random(n) < 0.05, "x4"] = np.nan
    if task == "classification":
        frame["late"] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    else:
        frame["late"] = z + rng.normal(scale=0.5, size=n)
    return frame


def _env() -> dict[str, str]:
    """The subprocess learns everything from the spec: no MLflow variables leak in.

    One OpenMP thread each: two trainings share CI's 2 cores, and oversubscribed OpenMP
    (sklearn's and torch's runtimes both) makes a small fit 10x slower, not faster.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _launch(spec_path: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(str(spec_path), python=sys.executable),
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass(frozen=True)
class Trained:
    spec: RunSpec
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> RunResult:
        assert self.returncode == 0, self.stderr[-3000:]
        return RunResult.read(self.spec.output_path)


@pytest.fixture(scope="module")
def client(mlflow_server: Any) -> Iterator[MlflowClient]:
    import mlflow

    with pytest.MonkeyPatch.context() as patch:  # for mlflow.pyfunc.load_model in this process
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        try:
            yield MlflowClient(mlflow_server.url)
        finally:
            mlflow.set_tracking_uri(None)  # in-process runs set it globally


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data and specs; relative paths in a spec are relative to the spec's folder."""
    root = tmp_path_factory.mktemp("train")
    (root / "data").mkdir()
    make_frame(2000, seed=1).to_parquet(root / "data" / "train.parquet")
    make_frame(600, seed=2).to_parquet(root / "data" / "holdout.parquet")
    recent = make_frame(600, seed=3)
    recent.loc[recent.index[:UNLABELLED], "late"] = np.nan
    recent.to_parquet(root / "data" / "recent.parquet")
    for name, seed in (("train", 4), ("holdout", 5)):
        make_frame(800, seed, "regression").to_parquet(root / "data" / f"reg_{name}.parquet")
    return root


def _spec(client: MlflowClient, workdir: Path, name: str, **changes: Any) -> RunSpec:
    experiment = client.get_experiment_by_name("train-entrypoint")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment("train-entrypoint")
    )
    run = client.create_run(experiment_id, tags=LINEAGE, run_name=name)
    spec = RunSpec(
        task="classification",
        label="late",
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        model_type="hist_gbm",
        params=PARAMS["hist_gbm"],
        train_path="data/train.parquet",
        eval_paths={"holdout": "data/holdout.parquet", "recent": "data/recent.parquet"},
        slices=["origin"],
        tracking_uri=client.tracking_uri,
        run_id=run.info.run_id,
        output_path=str(workdir / "out" / f"{name}.json"),
        seed=0,
        device="auto",
    )
    return replace(spec, **changes)


@pytest.fixture(scope="module")
def trained(client: MlflowClient, workdir: Path) -> dict[str, Trained]:
    """Both model types on the classification data, as real subprocesses side by side."""
    specs = {
        model_type: _spec(client, workdir, model_type, model_type=model_type, params=params)
        for model_type, params in PARAMS.items()
    }
    elsewhere = workdir / "cwd"
    elsewhere.mkdir()
    procs = {
        name: _launch(spec.write(workdir / f"{name}.spec.json"), cwd=elsewhere)
        for name, spec in specs.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=240)
        out[name] = Trained(specs[name], proc.returncode, stdout, stderr)
    return out


@pytest.fixture(scope="module")
def regression(client: MlflowClient, workdir: Path) -> tuple[RunSpec, RunResult]:
    """hist_gbm on a regression task, through the same code path, in this process."""
    from flywheel import train

    spec = _spec(
        client,
        workdir,
        "regression",
        task="regression",
        train_path="data/reg_train.parquet",
        eval_paths={"holdout": "data/reg_holdout.parquet"},
    )
    return spec, train.run(spec, base=workdir)


@pytest.mark.parametrize("model_type", list(PARAMS))
def test_writes_the_result(trained: dict[str, Trained], model_type: str) -> None:
    run = trained[model_type]
    result = run.result
    assert result.model_uri == f"runs:/{run.spec.run_id}/model"
    assert result.model_type == model_type
    assert result.device == "cpu"  # no GPU here; hist_gbm is CPU-only anyway
    assert result.rows == {"train": 2000, "holdout": 600, "recent": 600 - UNLABELLED}
    assert result.train_seconds > 0
    for name in ("holdout", "recent"):
        metrics = result.metrics[name]
        assert set(METRICS["classification"]) <= set(metrics)
        assert metrics["roc_auc"] > 0.75
        assert {f"origin={o}/roc_auc" for o in ("EWR", "JFK", "LGA")} <= set(metrics)
    assert f"trained {model_type} on cpu in" in run.stdout


def test_regression_result(regression: tuple[RunSpec, RunResult]) -> None:
    spec, result = regression
    assert set(result.metrics["holdout"]) >= set(METRICS["regression"])
    assert result.metrics["holdout"]["r2"] > 0.5
    assert result.rows == {"train": 800, "holdout": 800}
    assert RunResult.read(spec.output_path) == result


@pytest.mark.parametrize("model_type", list(PARAMS))
def test_run_has_params_metrics_and_keeps_its_lineage(
    trained: dict[str, Trained], client: MlflowClient, model_type: str
) -> None:
    result = trained[model_type].result
    run = client.get_run(trained[model_type].spec.run_id)
    assert run.info.status == "FINISHED"
    assert LINEAGE.items() <= run.data.tags.items()
    params = run.data.params
    assert params["model_type"] == model_type
    assert params["device"] == "cpu"
    assert params["rows_train"] == "2000"
    assert params["rows_recent"] == str(600 - UNLABELLED)
    assert params["cpu_threads"] == "1"  # OMP_NUM_THREADS, as _env() set it
    hyper = "model.max_iter" if model_type == "hist_gbm" else "model.max_epochs"
    assert params[hyper] == str(PARAMS[model_type][hyper.removeprefix("model.")])
    metrics = run.data.metrics
    assert metrics["holdout_roc_auc"] == pytest.approx(result.metrics["holdout"]["roc_auc"])
    assert metrics["recent_log_loss"] == pytest.approx(result.metrics["recent"]["log_loss"])
    assert metrics["holdout_origin_EWR/roc_auc"] == pytest.approx(
        result.metrics["holdout"]["origin=EWR/roc_auc"]
    )
    assert metrics["train_seconds"] > 0
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "flywheel")}
    assert logged == {"flywheel/run_spec.json", "flywheel/run_result.json"}


@pytest.mark.parametrize("model_type", list(PARAMS))
def test_model_loads_and_predicts_probabilities(
    trained: dict[str, Trained], client: MlflowClient, workdir: Path, model_type: str
) -> None:
    import mlflow

    result = trained[model_type].result
    model = mlflow.pyfunc.load_model(result.model_uri)
    holdout = pd.read_parquet(workdir / "data" / "holdout.parquet")
    proba = np.asarray(model.predict(holdout[NUMERIC + CATEGORICAL]))
    assert proba.shape == (len(holdout), 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    # The logged model is the one that was evaluated.
    auc = roc_auc_score(holdout["late"], proba[:, 1])
    assert auc == pytest.approx(result.metrics["holdout"]["roc_auc"], abs=1e-9)


def test_regression_model_predicts_values(
    regression: tuple[RunSpec, RunResult], workdir: Path
) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(regression[1].model_uri)
    holdout = pd.read_parquet(workdir / "data" / "reg_holdout.parquet")
    pred = np.asarray(model.predict(holdout[NUMERIC + CATEGORICAL]))
    assert pred.shape == (len(holdout),)
    assert np.sqrt(np.mean((pred - holdout["late"]) ** 2)) == pytest.approx(
        regression[1].metrics["holdout"]["rmse"]
    )


def test_model_loads_where_flywheel_is_not_installed(
    trained: dict[str, Trained], client: MlflowClient, workdir: Path
) -> None:
    """The pickle carries flywheel.models' code (the MLP, the frame preparation) by value:
    an MLflow model server without flywheel installed can load it."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        trained["torch_mlp"].result.model_uri, dst_path=str(workdir / "downloaded")
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["flywheel"] = None  # any import of flywheel now fails
        import cloudpickle, pandas as pd
        with open({str(Path(local) / "model.pkl")!r}, "rb") as f:
            model = cloudpickle.load(f)
        frame = pd.read_parquet({str(workdir / "data" / "holdout.parquet")!r})
        print(model.predict_proba(frame.head(3)).shape)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir / "cwd", capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("(3, 2)")


def test_nothing_is_registered(
    trained: dict[str, Trained], regression: tuple[RunSpec, RunResult], client: MlflowClient
) -> None:
    for run_id in [run.spec.run_id for run in trained.values()] + [regression[0].run_id]:
        assert client.search_model_versions(f"run_id = '{run_id}'") == []
    assert client.search_registered_models() == []


def test_bad_spec_exits_nonzero_naming_the_field(workdir: Path) -> None:
    spec = json.loads(
        RunSpec(
            task="classification",
            label="late",
            numeric=NUMERIC,
            categorical=CATEGORICAL,
            model_type="hist_gbm",
            params={},
            train_path="data/train.parquet",
            eval_paths={"holdout": "data/holdout.parquet"},
            slices=[],
            tracking_uri="http://127.0.0.1:9",  # never reached: the spec fails first
            run_id="0" * 32,
            output_path="out/never.json",
        ).to_json()
    )
    path = workdir / "bad.spec.json"
    path.write_text(json.dumps({**spec, "device": "tpu"}))
    proc = _launch(path, cwd=workdir)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("flywheel.train: error:")
    assert "'device'" in last
    assert "tpu" in last


def test_bad_data_fails_the_run_with_the_reason(
    client: MlflowClient, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flywheel import train

    spec = _spec(client, workdir, "bad_data", numeric=[*NUMERIC, "x9"])
    assert train.main(["--spec", str(spec.write(workdir / "bad_data.spec.json"))]) == 1
    stderr = capsys.readouterr().err
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("flywheel.train: error: TrainError:")
    assert "lacks columns ['x9']" in last
    assert "Traceback" in stderr
    run = client.get_run(spec.run_id)
    assert run.info.status == "FAILED"
    assert "x9" in run.data.tags["flywheel.error"]
    assert not Path(spec.output_path).exists()


def test_metric_names_pass_mlflow_validation() -> None:
    from mlflow.utils.validation import _validate_metric_name

    from flywheel.train import metric_names

    names = metric_names(
        {
            "holdout": {"roc_auc": 0.7, "origin=EWR/roc_auc": 0.6, "dest=A/B..=/log_loss": 0.5},
            "recent": {"carrier=9E/brier": 0.2, "route=..//accuracy": 0.8},
        }
    )
    assert list(names.items())[:2] == [
        ("holdout_roc_auc", 0.7),
        ("holdout_origin_EWR/roc_auc", 0.6),
    ]
    assert len(names) == 5
    for name in names:
        _validate_metric_name(name)  # raises on a name the server would refuse
        assert name.count("/") <= 1


def test_cpu_threads_honours_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib

    from flywheel.train import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_threads() == joblib.cpu_count()
