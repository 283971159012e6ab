"""The run card joins every fact of a train run; its Markdown shows the key ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flywheel.config import GateSpec
from flywheel.gates import decide
from flywheel.runcard import SECTIONS, build_run_card, render_markdown

GATES = [GateSpec(metric="roc_auc", threshold=0.6, min_improvement=0.002)]
LINEAGE = {
    "feast.feature_service": "flight_delay_v1",
    "dataset.fingerprint": "ds-9f2c4e1a",
    "code.version": "4f2a9c1",
}
RUN_ID = "asset_triggered__2013-07-01T00:00:00+00:00"


def card(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model_name": "flight_delay",
        "version": "7",
        "dag_id": "train_model",
        "dag_run_id": RUN_ID,
        "run_type": "asset_triggered",
        "trigger_reason": "drift in 3 of the last 4 windows",
        "mlflow_run_id": "a1b2c3d4",
        "experiment_name": "flywheel-flight-delay",
        "experiment_id": "12",
        "feast_project": "flywheel",
        "feature_service": "flight_delay_v1",
        "features": ["distance", "dep_hour", "temp", "carrier_rate_7d"],
        "feast_registry": "/home/flywheel/feast/registry.db",
        "validation": {"success": True, "failures": [], "data_docs": "/home/gx/docs/index.html"},
        "training_window": ("2013-01-01", "2013-06-30"),
        "dataset_fingerprint": "ds-9f2c4e1a",
        "code_version": "4f2a9c1",
        "model_type": "hist_gbm",
        "model_params": {"max_iter": 300, "learning_rate": 0.06},
        "metrics": {
            "holdout": {"roc_auc": 0.7123, "log_loss": 0.4801},
            "recent": {"roc_auc": 0.7012, "log_loss": 0.4955},
        },
        "gate": decide({"roc_auc": 0.7123}, {"roc_auc": 0.7001}, LINEAGE, GATES).as_dict(),
        "aliases": {"champion": "7", "previous_champion": "5"},
        "airflow_url": "http://127.0.0.1:8080/",
        "mlflow_url": "http://127.0.0.1:5000",
        "created_at": "2013-07-01T00:05:00Z",
    }
    args.update(overrides)
    return build_run_card(**args)


def test_card_has_every_section_and_is_json() -> None:
    c = card()
    assert set(SECTIONS) <= set(c)
    assert json.loads(json.dumps(c)) == c
    assert c["model"]["uri"] == "models:/flight_delay/7"
    assert c["airflow"]["link"] == (
        "http://127.0.0.1:8080/dags/train_model/runs/"
        "asset_triggered__2013-07-01T00%3A00%3A00%2B00%3A00"
    )
    assert c["mlflow"]["link"] == "http://127.0.0.1:5000/#/experiments/12/runs/a1b2c3d4"
    assert c["model"]["link"] == "http://127.0.0.1:5000/#/models/flight_delay/versions/7"
    assert c["features"]["feature_service"] == "flight_delay_v1"
    assert c["features"]["features"][0] == "distance"
    assert c["data"] == {
        "training_window": {"start": "2013-01-01", "end": "2013-06-30"},
        "fingerprint": "ds-9f2c4e1a",
    }
    assert c["code"]["version"] == "4f2a9c1"
    assert c["training"] == {
        "model_type": "hist_gbm",
        "params": {"max_iter": 300, "learning_rate": 0.06},
    }
    assert c["metrics"]["recent"]["roc_auc"] == pytest.approx(0.7012)
    assert c["gate"]["decision"] == "passed"
    assert c["gate"]["promote"]
    assert {ch["name"] for ch in c["gate"]["checks"]} == {
        "lineage",
        "threshold.roc_auc",
        "vs_champion.roc_auc",
    }
    assert c["serving"]["is_champion"]
    assert c["serving"]["this_version_aliases"] == ["champion"]


def test_markdown_renders_the_key_facts() -> None:
    md = render_markdown(card())
    assert md.startswith("# Run card: flight_delay v7 — serving as @champion\n")
    for fact in (
        "@champion → v7",
        "@previous_champion → v5",
        "train_model / asset_triggered__2013-07-01T00:00:00+00:00",
        "(drift in 3 of the last 4 windows)",
        "a1b2c3d4 (flywheel-flight-delay)",
        "flight_delay_v1 (Feast project flywheel)",
        "distance, dep_hour, temp, carrier_rate_7d",
        "/home/flywheel/feast/registry.db",
        "2013-01-01 → 2013-06-30, fingerprint ds-9f2c4e1a",
        "passed, [Data Docs](/home/gx/docs/index.html)",
        "4f2a9c1",
        "hist_gbm (learning_rate=0.06, max_iter=300)",
        "| holdout | 0.4801 | 0.7123 |",
        "Decision: **passed**",
        "- ✓ threshold.roc_auc: roc_auc 0.7123 >= 0.600",
        "- ✓ vs_champion.roc_auc: roc_auc 0.7123 vs champion 0.7001: improvement +0.0122",
    ):
        assert fact in md, fact
    assert "[flight_delay v7](http://127.0.0.1:5000/#/models/flight_delay/versions/7)" in md
    assert len(md.splitlines()) < 40  # one short page


def test_refused_candidate_says_who_is_still_serving() -> None:
    gate = decide({"roc_auc": 0.55}, {"roc_auc": 0.70}, LINEAGE, GATES).as_dict()
    c = card(
        version="8",
        gate=gate,
        aliases={"champion": "7"},
        validation={"success": False, "failures": ["late: class balance 0.71"], "data_docs": None},
        airflow_url=None,
        mlflow_url=None,
    )
    assert not c["serving"]["is_champion"]
    assert c["serving"]["champion"] == "7"
    assert c["airflow"]["link"] is None
    assert c["mlflow"]["link"] is None
    md = render_markdown(c)
    assert md.startswith("# Run card: flight_delay v8 — not promoted: gate refused")
    assert "@champion → v7" in md
    assert "FAILED (1 failures)" in md
    assert "- late: class balance 0.71" in md
    assert "- ✗ threshold.roc_auc: roc_auc 0.550 < 0.600" in md
    assert "](" not in md  # no links without base URLs


def test_dry_run_and_no_gate() -> None:
    dry = decide({"roc_auc": 0.9}, None, LINEAGE, GATES, dry_run=True).as_dict()
    md = render_markdown(card(gate=dry, aliases={"champion": "5"}))
    assert "dry run (dry_run_passed), not promoted" in md.splitlines()[0]
    c = card(version=None, gate=None, aliases={}, metrics={})
    assert c["model"]["uri"] is None
    assert c["gate"] is None
    md = render_markdown(c)
    assert "(not registered)" in md
    assert "No gate decision recorded." in md
    assert "Aliases now | none" in md
