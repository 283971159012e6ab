"""`ingest_features` driven by a real Airflow scheduler, as a user drives it.

Batches are dropped into the landing zone; the AssetWatcher's doorbell starts the runs
(no test code triggers them); a manual re-run goes through the REST API with the typed
`month` Param; a broken batch must fail its run and leave the stores as they were.
"""

from __future__ import annotations

import pytest
from support import offline_rows, wait_for_runs

from flywheel import features, landing
from flywheel.config import load_config
from flywheel.feast_ops import online_features
from flywheel.paths import Home

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

DAG = "ingest_features"


@pytest.fixture(scope="module")
def landed(airflow_stack):
    """Two months dropped at once; the scheduler ingests them, one run per month."""
    cfg, home, client = load_config(), Home(airflow_stack.home), airflow_stack.client
    client.wait_for_dag(DAG, timeout=180)
    client.unpause(DAG)
    for month in ("2013-01", "2013-02"):
        landing.land(cfg, month, home)
    runs = wait_for_runs(client, DAG, 2)
    return cfg, home, client, runs


def test_landing_starts_one_run_per_month(landed):
    _, home, client, runs = landed
    for run in runs:
        if run["state"] != "success":
            client.wait_for_run(DAG, run["dag_run_id"])  # raises with the failed task's log
    assert [r["run_type"] for r in runs] == ["asset_triggered", "asset_triggered"]
    months = sorted(client.xcom(DAG, r["dag_run_id"], "resolve_batch") for r in runs)
    assert months == ["2013-01", "2013-02"]
    assert landing.pending(home) == []
    assert landing.archived_months(home) == months


def test_features_asset_event_carries_interval_and_counts(landed):
    cfg, home, client, _ = landed
    events = client.asset_events(source_dag_id=DAG)
    assert len(events) == 2
    by_month = {e["extra"]["month"]: e for e in events}
    assert set(by_month) == {"2013-01", "2013-02"}
    feb = by_month["2013-02"]
    assert feb["uri"] == home.features_uri
    assert feb["extra"]["start"].startswith("2013-02-01")
    assert feb["extra"]["end"].startswith("2013-03-01")
    raw_flights = len(landing.source_batch(cfg, "2013-02")["flights"])
    assert feb["extra"]["rows"]["entity_rows"] == raw_flights


def test_online_store_serves_the_ingested_months(landed):
    cfg, home, _, _ = landed
    spine = features.read_partitions(home.entity_rows(cfg.entity.name), ["2013-02"])
    rows = spine.sample(3, random_state=7)[cfg.entity_columns()].to_dict("records")
    got = online_features(cfg, home, rows)
    assert [g["flight_id"] for g in got] == [r["flight_id"] for r in rows]
    assert all(g["distance"] is not None and g["carrier_history_rate_28d"] is not None for g in got)


def test_manual_rerun_with_month_param_is_idempotent(landed):
    cfg, home, client, _ = landed
    before = offline_rows(cfg, home)
    run = client.run_dag(DAG, conf={"month": "2013-01"}, timeout=600)
    assert run["state"] == "success"
    assert client.xcom(DAG, run["dag_run_id"], "resolve_batch") == "2013-01"
    assert offline_rows(cfg, home) == before


def test_broken_batch_fails_its_run_and_is_quarantined(landed):
    cfg, home, client, _ = landed
    before = offline_rows(cfg, home)
    known = len(client.list_runs(DAG))
    landing.land_broken(cfg, "2013-03", "null_keys", home)
    runs = wait_for_runs(client, DAG, known + 1)
    run = runs[-1]
    assert run["state"] == "failed"
    tis = {ti["task_id"]: ti for ti in client.task_instances(DAG, run["dag_run_id"])}
    assert tis["validate_batch"]["state"] == "failed"
    # Nothing downstream of a rejected batch runs.
    assert tis["build_features"]["state"] == "upstream_failed"
    assert tis["materialize_online"]["state"] == "upstream_failed"
    log = client.task_log(DAG, run["dag_run_id"], "validate_batch", 1)
    assert "quarantined" in log
    assert "flights.carrier: expect_column_values_to_not_be_null" in log
    quarantined = sorted(home.quarantine.glob("2013-03__*"))
    assert len(quarantined) == 1
    assert (quarantined[0] / "validation.json").is_file()
    assert "2013-03" not in landing.archived_months(home)
    assert offline_rows(cfg, home) == before
