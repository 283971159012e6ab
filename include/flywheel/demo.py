"""`make demo`: bring the stack up and replay 2013 through the real Airflow scheduler.

Each month is dropped into the landing zone exactly as an upstream system would; the
landing doorbell starts `ingest_features`, and this script only watches, through the
Airflow REST API, what the scheduler does. A deliberately broken batch follows the
good months, to show quarantine. The stack stays up afterwards for the UIs;
`make down` stops it.

    python -m flywheel.demo                   # Q1 of 2013, then a broken April
    python -m flywheel.demo --through 2013-06 --broken none
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from flywheel import landing, stack
from flywheel.airflow_client import AirflowClient, AirflowError
from flywheel.config import Config, load_config
from flywheel.paths import Home

INGEST, TRAIN = "ingest_features", "train_model"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Watcher:
    """Follows the runs the scheduler starts, without starting any itself."""

    def __init__(self, client: AirflowClient) -> None:
        self.client = client
        self.seen: set[str] = set()

    def mark_seen(self, dag_id: str) -> None:
        self.seen |= {r["dag_run_id"] for r in self.client.list_runs(dag_id)}

    def next_run(self, dag_id: str, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.client.list_runs(dag_id):
                if run["dag_run_id"] not in self.seen:
                    self.seen.add(run["dag_run_id"])
                    return run
            time.sleep(1)
        raise AirflowError(f"no new {dag_id} run started within {timeout:.0f} s")

    def follow(self, dag_id: str, run_id: str, timeout: float = 900.0) -> dict[str, Any]:
        """Wait for the run to end, printing each task as it finishes."""
        done: set[str] = set()
        deadline = time.monotonic() + timeout
        while True:
            run = self.client.get_run(dag_id, run_id)
            for ti in self.client.task_instances(dag_id, run_id):
                state = ti["state"]
                if (
                    state in ("success", "failed", "skipped", "upstream_failed")
                    and ti["task_id"] not in done
                ):
                    done.add(ti["task_id"])
                    took = f" in {ti['duration']:.1f} s" if ti.get("duration") else ""
                    _say(f"    {ti['task_id']:<22} {state}{took}")
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise AirflowError(f"{dag_id}/{run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(2)


def _ingest_month(
    watcher: Watcher, cfg: Config, home: Home, month: str, defect: str | None
) -> dict[str, Any]:
    watcher.mark_seen(INGEST)
    if defect:
        landing.land_broken(cfg, month, defect, home)
        _say(f"{month}: landed a deliberately broken batch ({defect})")
    else:
        landing.land(cfg, month, home)
        _say(f"{month}: landed in {home.incoming / month}")
    run = watcher.next_run(INGEST)
    _say(f"  {INGEST} run {run['dag_run_id']} ({run['run_type']})")
    began = time.monotonic()
    run = watcher.follow(INGEST, run["dag_run_id"])
    _say(f"  -> {run['state']} after {time.monotonic() - began:.0f} s")
    return run


def _champion_line(cfg: Config, mlflow_url: str | None) -> str:
    import mlflow

    from flywheel import registry

    client = mlflow.MlflowClient(mlflow_url)
    name = cfg.registry.model_name
    current = registry.champion(client, name)
    if current is None:
        return "no champion yet"
    run = client.get_run(current.run_id)
    auc = run.data.metrics.get("recent_roc_auc")
    link = f"{mlflow_url}/#/models/{name}/versions/{current.version}"
    return f"@champion = {name} v{current.version} (recent AUC {auc:.3f}) {link}"


def _quarantine_reason(home: Home, month: str) -> str:
    folders = sorted(home.quarantine.glob(f"{month}__*"))
    if not folders:
        return "(no quarantine record found)"
    report = json.loads((folders[-1] / "validation.json").read_text())
    return f"{folders[-1]}\n      " + "\n      ".join(report["failures"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flywheel.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--through", default="2013-03", help="last good month to replay")
    parser.add_argument(
        "--broken",
        default="null_keys",
        help=f"defect of the batch after the last good month: "
        f"{', '.join(sorted(landing.DEFECTS))} or none",
    )
    args = parser.parse_args(argv)
    if args.broken != "none" and args.broken not in landing.DEFECTS:
        parser.error(f"--broken must be one of {sorted(landing.DEFECTS)} or none")

    began = time.monotonic()
    cfg = load_config()
    home = Home.from_env()
    _say(f"starting Airflow + MLflow under {home.root} (first start migrates the DB: ~1 min)")
    running = stack.start(
        home.root,
        airflow_port=int(os.environ.get("FLYWHEEL_AIRFLOW_PORT", "8080")),
        mlflow_port=int(os.environ.get("FLYWHEEL_MLFLOW_PORT", "5000")),
    )
    client = AirflowClient(running.airflow_url, running.username, running.password)
    for dag_id in (INGEST, TRAIN, "rollback_model"):
        client.wait_for_dag(dag_id, timeout=180)
        client.unpause(dag_id)
    _say(f"stack up in {time.monotonic() - began:.0f} s; DAGs registered and unpaused")

    watcher = Watcher(client)
    months = [m for m in cfg.months() if m <= args.through]
    todo = [m for m in months if m not in landing.archived_months(home)]
    results: dict[str, str] = {m: "already ingested" for m in months if m not in todo}
    trained: dict[str, str] = {}
    for month in todo:
        watcher.mark_seen(TRAIN)
        results[month] = _ingest_month(watcher, cfg, home, month, None)["state"]
        # The month's features event starts training by itself; follow it.
        train_run = watcher.next_run(TRAIN)
        _say(f"  {TRAIN} run {train_run['dag_run_id']} ({train_run['run_type']})")
        trained[month] = watcher.follow(TRAIN, train_run["dag_run_id"])["state"]
        _say(f"  -> {trained[month]}; {_champion_line(cfg, running.mlflow_url)}")
    champion = _champion_line(cfg, running.mlflow_url)
    train_state = "success" if all(v == "success" for v in trained.values()) else "failed"
    broken_month = next((m for m in cfg.months() if m > args.through), None)
    if args.broken != "none" and broken_month and broken_month not in landing.archived_months(home):
        state = _ingest_month(watcher, cfg, home, broken_month, args.broken)["state"]
        results[broken_month] = f"{state} (quarantined: {_quarantine_reason(home, broken_month)})"

    _say(f"done in {time.monotonic() - began:.0f} s")
    print("\nMonths:")
    for month, outcome in results.items():
        print(f"  {month}: {outcome}")
    print(f"\nTraining: {train_state}; {champion}")
    print(f"Run cards: {home.root / 'runcards'}")
    print(f"\nAirflow UI  {running.airflow_url}   (login {running.username} / {running.password})")
    print(f"MLflow UI   {running.mlflow_url}")
    print(f"Data Docs   {home.gx / 'uncommitted' / 'data_docs' / 'local_site' / 'index.html'}")
    print(f"State       {home.root}")
    print("Stop everything with: make down")
    ok = train_state == "success" and all(
        results[m] in ("success", "already ingested") for m in months
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
