"""Helpers shared by the integration tests (imported as `support`: pytest puts this
folder on sys.path, since it is not a package)."""

from __future__ import annotations

import time
from typing import Any

from flywheel import features
from flywheel.airflow_client import AirflowClient
from flywheel.config import Config
from flywheel.paths import Home


def offline_rows(cfg: Config, home: Home) -> dict[str, int]:
    """Rows per offline-store view (and the entity rows): re-runs must leave them equal."""
    out = {v: len(features.read_partitions(home.offline / v)) for v in cfg.features}
    out["entity_rows"] = len(features.read_partitions(home.entity_rows(cfg.entity.name)))
    return out


def wait_for_runs(
    client: AirflowClient, dag_id: str, count: int, timeout: float = 600
) -> list[dict[str, Any]]:
    """Wait until `dag_id` has at least `count` runs, all ended; return them oldest first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.list_runs(dag_id)
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(2)
    states = [(r["dag_run_id"], r["state"]) for r in client.list_runs(dag_id)]
    raise AssertionError(f"{dag_id}: expected {count} ended runs within {timeout} s, have {states}")
