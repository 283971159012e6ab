"""`train_model` and `rollback_model` through a real Airflow scheduler and a real MLflow
tracking server (SQLite), on features that `ingest_features` really ingested.

January's `features` event trains the first @champion (nobody triggers it); an unchanged
re-run is skipped; a deliberately worse candidate is registered but refused, with the
numbers in the log; February's event trains a better model that moves @champion; a
rollback puts the previous champion back. Steps build on each other: file order.
"""

from __future__ import annotations

import mlflow
import pytest
from support import wait_for_runs

from flywheel import features, landing, registry
from flywheel.airflow_client import AirflowClient, DagRunFailed
from flywheel.config import load_config
from flywheel.paths import Home
from flywheel.training_set import retrieve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

INGEST, TRAIN, ROLLBACK = "ingest_features", "train_model", "rollback_model"
MODEL = load_config().registry.model_name


def _states(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}


def _ingest(client: AirflowClient, home: Home, months: list[str]) -> None:
    cfg = load_config()
    before = len(client.list_runs(INGEST))
    for month in months:
        landing.land(cfg, month, home)
    for run in wait_for_runs(client, INGEST, before + len(months)):
        if run["state"] != "success":
            client.wait_for_run(INGEST, run["dag_run_id"])  # raises with the task log


def _wait_trained(client: AirflowClient, count: int) -> dict:
    """Wait for the `count`-th train_model run to end successfully; return it."""
    run = wait_for_runs(client, TRAIN, count, timeout=900)[count - 1]
    return client.wait_for_run(TRAIN, run["dag_run_id"])


@pytest.fixture(scope="module")
def stack_config_overrides():
    # Every features event trains here (the default trains only the first champion, then
    # leaves retraining to the drift policy: tests/e2e/test_loop.py).
    return {"training": {"bootstrap_months": 1, "retrain_on_new_features": True}}


@pytest.fixture(scope="module")
def stack(airflow_stack):
    client = airflow_stack.client
    for dag_id in (INGEST, TRAIN, ROLLBACK):
        client.wait_for_dag(dag_id, timeout=180)
        client.unpause(dag_id)
    return airflow_stack


@pytest.fixture(scope="module")
def mlflow_client(stack):
    return mlflow.MlflowClient(stack.mlflow_url)


def test_features_asset_trains_the_first_champion(stack, mlflow_client):
    client = stack.client
    _ingest(client, Home(stack.home), ["2013-01"])
    run = _wait_trained(client, 1)  # started by the features event, not by this test
    assert run["run_type"] == "asset_triggered"
    states = _states(client, TRAIN, run["dag_run_id"])
    assert states["train_local"] == "success"
    assert states["promote_champion"] == "success"
    assert states["approve_promotion"] == "skipped"
    assert registry.aliases(mlflow_client, MODEL)["champion"] == "1"

    version = mlflow_client.get_model_version(MODEL, "1")
    for tag in ("feast.feature_service", "dataset.fingerprint", "code.version",
                "training.fingerprint", "trigger.reason"):  # fmt: skip
        assert version.tags.get(tag), tag
    assert version.tags["training.window"] == "2013-01..2013-01"
    assert version.tags["trigger.reason"] == "new features: 2013-01"
    assert version.tags["gate.decision"] == "passed"
    mlflow_run = mlflow_client.get_run(version.run_id)
    assert mlflow_run.data.tags["airflow.dag_id"] == TRAIN
    assert mlflow_run.data.tags["airflow.run_id"] == run["dag_run_id"]
    assert mlflow_run.data.tags["feast.feature_service"] == "flight_delay_v1"
    assert mlflow_run.data.metrics["recent_roc_auc"] > 0.6
    # The task links back to its MLflow run (plugins/flywheel_links.py).
    link = client.task_links(TRAIN, run["dag_run_id"], "prepare_training")["MLflow run"]
    assert link is not None
    assert link.endswith(f"/runs/{version.run_id}")
    artifacts = {a.path for a in mlflow_client.list_artifacts(version.run_id)}
    assert {"run_card.json", "run_card.md"} <= artifacts
    assert (stack.home / "runcards" / f"{MODEL}-v1.md").is_file()
    # The model Asset's event carries the version and its metrics.
    event = client.asset_events(source_dag_id=TRAIN)[-1]
    assert event["extra"]["version"] == "1"
    assert event["extra"]["metrics"]["roc_auc"] > 0.6


def test_unchanged_inputs_are_not_trained_again(stack, mlflow_client):
    conf = {"window_first": "2013-01", "window_last": "2013-01"}
    run = stack.client.run_dag(TRAIN, conf=conf, timeout=600)
    states = _states(stack.client, TRAIN, run["dag_run_id"])
    assert states["prepare_training"] == "skipped"
    assert states["train_local"] == "skipped"
    log = stack.client.task_log(TRAIN, run["dag_run_id"], "prepare_training", 1)
    assert "unchanged inputs: version 1" in log
    assert len(mlflow_client.search_model_versions(f"name = '{MODEL}'")) == 1


def test_worse_candidate_is_registered_but_refused(stack, mlflow_client):
    conf = {"force": True, "hyperparameters": {"max_iter": 2, "learning_rate": 0.01}}
    run = stack.client.run_dag(TRAIN, conf=conf, timeout=900)
    states = _states(stack.client, TRAIN, run["dag_run_id"])
    assert states["register_candidate"] == "success"
    assert states["promote_champion"] == "skipped"
    assert registry.aliases(mlflow_client, MODEL)["champion"] == "1"
    version = mlflow_client.get_model_version(MODEL, "2")
    assert version.tags["gate.decision"] == "refused"
    log = stack.client.task_log(TRAIN, run["dag_run_id"], "gate_candidate", 1)
    assert "Gate REFUSED" in log
    assert "vs champion" in log  # the numbers, not just the verdict


def test_better_candidate_moves_champion(stack, mlflow_client):
    client = stack.client
    _ingest(client, Home(stack.home), ["2013-02"])
    run = _wait_trained(client, 4)  # February's features event
    assert run["run_type"] == "asset_triggered"
    aliases = registry.aliases(mlflow_client, MODEL)
    assert aliases["champion"] == "3", _states(client, TRAIN, run["dag_run_id"])
    assert aliases["previous_champion"] == "1"
    assert mlflow_client.get_model_version(MODEL, "3").tags["training.window"] == "2013-01..2013-02"


def test_rollback_restores_previous_champion(stack, mlflow_client):
    run = stack.client.run_dag(ROLLBACK, conf={"reason": "test: v3 misbehaves"}, timeout=300)
    assert run["state"] == "success"
    aliases = registry.aliases(mlflow_client, MODEL)
    assert aliases["champion"] == "1"
    assert aliases["previous_champion"] == "3"
    tags = mlflow_client.get_model_version(MODEL, "1").tags
    assert tags["rollback.reason"] == "test: v3 misbehaves"


def test_champion_alias_loads_and_predicts(stack):
    cfg, home = load_config(), Home(stack.home)
    spine = features.read_partitions(home.entity_rows(cfg.entity.name), ["2013-02"]).head(50)
    joined = retrieve(cfg, home, spine[[*cfg.entity_columns(), "event_timestamp", "late"]])
    mlflow.set_tracking_uri(stack.mlflow_url)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    scores = model.predict(joined)
    assert len(scores) == 50
    probabilities = scores[:, 1] if getattr(scores, "ndim", 1) == 2 else scores
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_failed_training_fails_the_run(stack, mlflow_client):
    # A learning rate scikit-learn refuses: the entrypoint fails inside the training child.
    conf = {"force": True, "hyperparameters": {"learning_rate": -1.0}}
    versions = len(mlflow_client.search_model_versions(f"name = '{MODEL}'"))
    with pytest.raises(DagRunFailed) as failed:
        stack.client.run_dag(TRAIN, conf=conf, timeout=900)
    assert {"train_local", "close_retrain_request"} <= set(failed.value.failed_tasks)
    assert "learning_rate" in failed.value.logs  # the child's own error, in the task log
    states = _states(stack.client, TRAIN, failed.value.run_id)
    assert states["register_candidate"] == "upstream_failed"
    assert len(mlflow_client.search_model_versions(f"name = '{MODEL}'")) == versions
    assert registry.aliases(mlflow_client, MODEL)["champion"] == "1"
