"""The whole loop through a real scheduler, from an empty state folder: the short variant of
`make demo` (the first quarter, then April..June one month at a time), then its report.

This is also the feedback loop's acceptance test: the first champion comes from the first
quarter's features; every later month is ingested, scored by the champion, and checked for
drift against the champion's own training snapshot; the retrain policy, not a schedule,
starts `train_model`, whose candidate goes through the gates; a flood of drift signals
within the cooldown retrains nobody twice; the REST server answers with the champion's
version and logs the request.

Steps build on each other (one stack, one replay): file order.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import requests

from flywheel import monitoring, prediction_log, registry, report
from flywheel.config import load_config
from flywheel.demo import SHORT_THROUGH, champion_of, replay_year
from flywheel.features import read_partitions
from flywheel.paths import Home
from flywheel.replay import MONITOR, TRAIN, Replay

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3000)]

CFG = load_config()
NAME = CFG.registry.model_name
LATER = ["2013-04", "2013-05", "2013-06"]
assert LATER[-1] == SHORT_THROUGH


@pytest.fixture(scope="module")
def loop(airflow_stack: Any) -> dict[str, Any]:
    home = Home(airflow_stack.home)
    assert not (home.root / "landing").exists(), "the replay must start from an empty home"
    replay = Replay(
        airflow_stack.client, CFG, home, champion_of(CFG, airflow_stack.mlflow_url), timeout=1200
    )
    began = time.monotonic()
    replay_year(replay, CFG, home, SHORT_THROUGH, None, CFG.training.bootstrap_months)
    wall = time.monotonic() - began
    paths = report.build(
        CFG,
        home,
        replay.timeline(),
        wall,
        home.root / "report",
        links={"airflow": airflow_stack.airflow_url, "mlflow": airflow_stack.mlflow_url},
        since="2013-04",
    )
    return {
        "home": home,
        "replay": replay,
        "paths": paths,
        "report": json.loads(Path(paths["json"]).read_text()),
        "client": airflow_stack.client,
        "mlflow": mlflow.MlflowClient(airflow_stack.mlflow_url),
        "stack": airflow_stack,
    }


def _runs(loop: dict[str, Any], dag_id: str) -> list[dict[str, Any]]:
    return [
        run
        for month in loop["replay"].timeline()
        for run in month["runs"]
        if run["dag_id"] == dag_id
    ]


def test_every_run_succeeded(loop: dict[str, Any]) -> None:
    runs = [r for m in loop["replay"].timeline() for r in m["runs"]]
    assert runs, "the replay saw no runs at all"
    failed = [(r["dag_id"], r["run_id"], r["tasks"]) for r in runs if r["state"] != "success"]
    assert not failed


def test_first_champion_learned_the_first_quarter(loop: dict[str, Any]) -> None:
    first = registry.history(loop["mlflow"], NAME)[0]
    assert first["window"] == "2013-01..2013-03"
    assert first["reason"].startswith("new features")
    assert first["gate_decision"] == "passed"
    # Q1's other features events did not train: they were skipped, saying why.
    q1_trains = _runs(loop, TRAIN)[: CFG.training.bootstrap_months]
    assert any(r["tasks"]["prepare_training"]["state"] == "skipped" for r in q1_trains)


def test_every_later_month_scored_and_monitored(loop: dict[str, Any]) -> None:
    home, cfg = loop["home"], CFG
    assert prediction_log.batch_months(home) == LATER
    assert monitoring.monitored_windows(home) == LATER
    for month in LATER:
        log = prediction_log.read_batch(home, month)
        flights = read_partitions(home.entity_rows(cfg.entity.name), [month])
        assert len(log) == len(flights)  # every flight, once
        assert set(log.columns) >= {*cfg.feature_names(), prediction_log.PREDICTION}
        assert log[prediction_log.PREDICTION].between(0, 1).all()
        window = monitoring.read_window(home, month)
        assert Path(window["report"]["html"]).stat().st_size > 10_000
        assert window["decision"]["reasons"], "every decision says why"
        assert window["labelled_rows"] > 20_000  # labels matured and were joined
        assert window["performance"]["roc_auc"] > 0.6


def test_drift_started_a_retrain_that_went_through_the_gates(loop: dict[str, Any]) -> None:
    client, home = loop["client"], loop["home"]
    drift_runs = [r for r in client.list_runs(TRAIN) if r["dag_run_id"].startswith("drift__")]
    assert drift_runs, "no drift-triggered training"
    run = drift_runs[0]
    assert run["state"] == "success"
    assert run["run_type"] == "operator_triggered"  # by monitor_drift, not a schedule
    assert "drift confirmed" in run["conf"]["reason"]
    assert run["conf"]["drift_report"]
    assert run["conf"]["drifted_features"]
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(TRAIN, run["dag_run_id"])}
    assert states["gate_candidate"] == "success"
    request = monitoring.requests(home)[0]
    assert request["run_id"] == run["dag_run_id"]
    assert request["state"] == monitoring.CLOSED
    version = request["outcome"]["version"]
    tags = loop["mlflow"].get_model_version(NAME, version).tags
    assert tags["gate.decision"] in ("passed", "failed")
    assert "drift confirmed" in tags["trigger.reason"]
    # The policy's window record names the retrain, and its MLflow run carries the decision.
    window = monitoring.read_window(home, request["window"])
    assert window["decision"]["retrain"] is True
    mlflow_run = loop["mlflow"].get_run(window["mlflow_run_id"])
    assert mlflow_run.data.tags["policy.retrain"] == "True"


def test_champion_moved_only_through_passing_gates(loop: dict[str, Any]) -> None:
    versions = {v["version"]: v for v in registry.history(loop["mlflow"], NAME)}
    moves = [m for m in registry.alias_moves(loop["mlflow"], NAME) if m["action"] == "promote"]
    assert moves
    for move in moves:
        assert versions[move["new"]]["gate_decision"] == "passed", move


def test_flood_of_drift_signals_within_cooldown_retrains_once(loop: dict[str, Any]) -> None:
    client, home = loop["client"], loop["home"]
    before = [r["dag_run_id"] for r in client.list_runs(TRAIN)]
    flood = [client.trigger(MONITOR, conf={"month": m})["dag_run_id"] for m in LATER]
    for run_id in flood:
        assert client.wait_for_run(MONITOR, run_id, timeout=600)["state"] == "success"
    time.sleep(10)  # a trigger would have created its run by now
    after = client.list_runs(TRAIN)
    assert [r["dag_run_id"] for r in after] == before, "the flood started a training"
    assert len([r for r in after if r["dag_run_id"].startswith("drift__")]) == len(
        monitoring.requests(home)
    )
    last = monitoring.read_window(home, LATER[-1])["decision"]
    assert last["retrain"] is False
    assert any(
        w in r for r in last["reasons"] for w in ("cooling down", "superseded", "not confirmed")
    )


def test_rest_server_answers_with_the_champion_and_logs_it(loop: dict[str, Any]) -> None:
    stack, home = loop["stack"], loop["home"]
    url = stack.stack.serve_url
    champion = registry.champion(loop["mlflow"], NAME)
    assert champion is not None
    deadline = time.monotonic() + 60  # the server reloads the champion within its interval
    while requests.get(f"{url}/health", timeout=5).json()["version"] != champion.version:
        assert time.monotonic() < deadline, "the server did not pick up the new champion"
        time.sleep(2)
    flights = read_partitions(home.entity_rows(CFG.entity.name), [LATER[-1]]).head(3)
    rows = flights[CFG.entity_columns()].to_dict("records")
    reply = requests.post(f"{url}/predict", json={"rows": rows}, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["version"] == champion.version
    assert [p["flight_id"] for p in body["predictions"]] == [r["flight_id"] for r in rows]
    assert all(0 <= p["score"] <= 1 for p in body["predictions"])
    deadline = time.monotonic() + 30
    logged = pd.DataFrame()
    while logged.empty or body["request_id"] not in set(logged[prediction_log.REQUEST_ID]):
        assert time.monotonic() < deadline, "the request never reached the prediction log"
        time.sleep(1)
        logged = prediction_log.read_online(home)
    mine = logged[logged[prediction_log.REQUEST_ID] == body["request_id"]]
    assert len(mine) == 3
    assert set(mine[prediction_log.MODEL_VERSION]) == {champion.version}


def test_report_matches_the_registry(loop: dict[str, Any]) -> None:
    data, home = loop["report"], loop["home"]
    html = Path(loop["paths"]["html"]).read_text()
    assert "<svg" in html
    assert "served by Flywheel" in html
    months = [r["month"] for r in data["quality"]["by_month"]]
    assert months == LATER
    for row in data["quality"]["by_month"]:
        assert {"served", "static", "oracle"} <= set(row)
    registered = {v["version"] for v in registry.history(loop["mlflow"], NAME)}
    assert {v["version"] for v in data["versions_table"]} == registered
    assert data["retrains"]["served_months"] == [r["window"] for r in monitoring.requests(home)]
    assert data["quality"]["static_version"] == "1"
    stages = data["timings"]["stages_s"]
    assert all(stages[s] > 0 for s in ("ingest", "validate", "train", "score", "monitor"))
    assert [w["window"] for w in data["loop"]["drift"]] == LATER
