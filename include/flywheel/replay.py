"""Replay months through the real scheduler and keep a timeline of what it did.

Months are dropped into the landing zone exactly as an upstream system would; everything
after that is Airflow's doing. This module only watches through the REST API: which
runs started, why, how long they took, what the champion was. `make demo` and the
end-to-end test drive it; `flywheel.report` turns its timeline into the year in review.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flywheel import landing
from flywheel.airflow_client import AirflowClient, AirflowError
from flywheel.config import Config
from flywheel.paths import Home

INGEST, TRAIN, SCORE, MONITOR = "ingest_features", "train_model", "score_batch", "monitor_drift"
DAGS = (INGEST, TRAIN, SCORE, MONITOR, "rollback_model")
ENDED = ("success", "failed", "skipped", "upstream_failed", "removed")


@dataclass
class RunRecord:
    dag_id: str
    run_id: str
    run_type: str
    state: str
    seconds: float  # start of the run to its end, as the scheduler saw it
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> state, seconds
    note: str | None = None


@dataclass
class MonthRecord:
    month: str
    defect: str | None = None
    runs: list[RunRecord] = field(default_factory=list)
    champion_before: str | None = None
    champion_after: str | None = None
    wall_seconds: float = 0.0


def _at(stamp: str | None) -> datetime:
    return datetime.fromisoformat(stamp) if stamp else datetime.now(UTC)


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


class Replay:
    """Lands months and follows every run the scheduler starts because of them."""

    def __init__(
        self,
        client: AirflowClient,
        cfg: Config,
        home: Home,
        champion: Callable[[], str | None],
        say: Callable[[str], None] = print,
        timeout: float = 900.0,
    ) -> None:
        self.client, self.cfg, self.home = client, cfg, home
        self.champion = champion
        self.say = say
        self.timeout = timeout
        self.seen: set[tuple[str, str]] = set()
        self.months: list[MonthRecord] = []
        self.began = time.monotonic()
        for dag_id in DAGS:
            self.client.wait_for_dag(dag_id, timeout=180)
            self.client.unpause(dag_id)
            self._mark_seen(dag_id)

    def _mark_seen(self, dag_id: str) -> None:
        self.seen |= {(dag_id, r["dag_run_id"]) for r in self.client.list_runs(dag_id)}

    def _new_runs(self) -> list[tuple[str, dict[str, Any]]]:
        new = []
        for dag_id in DAGS:
            for run in self.client.list_runs(dag_id):
                if (dag_id, run["dag_run_id"]) not in self.seen:
                    new.append((dag_id, run))
        return new

    def _record(self, dag_id: str, run: dict[str, Any]) -> RunRecord:
        tasks = {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): {
                "state": ti["state"],
                "seconds": round(ti.get("duration") or 0.0, 1),
            }
            for ti in self.client.task_instances(dag_id, run["dag_run_id"])
        }
        return RunRecord(
            dag_id=dag_id,
            run_id=run["dag_run_id"],
            run_type=run["run_type"],
            state=run["state"],
            seconds=round(_seconds(run.get("start_date"), run.get("end_date")), 1),
            tasks=tasks,
            note=run.get("note"),
        )

    @staticmethod
    def _sets_off(record: RunRecord) -> set[str]:
        """The DAGs whose runs this run's outcome starts (Asset events, triggers)."""
        ok = {t for t, v in record.tasks.items() if v["state"] == "success"}
        if record.dag_id == INGEST and record.state == "success":
            return {SCORE, TRAIN}
        if record.dag_id == SCORE and "score_month" in ok:
            return {MONITOR}
        if record.dag_id == MONITOR and any(t.startswith("trigger_retrain") for t in ok):
            return {TRAIN}
        return set()

    def settle(
        self,
        expect: set[str] | None = None,
        until: Callable[[], bool] = lambda: True,
        expect_s: float = 45.0,
    ) -> list[RunRecord]:
        """Follow every new run until all have ended and none is expected to start: a
        run's end can start another (features -> score -> monitor -> retrain). An
        expected run that has not appeared after `expect_s` was merged into another (the
        scheduler may serve several Asset events with one run)."""
        deadline = time.monotonic() + self.timeout
        active: dict[tuple[str, str], dict[str, Any]] = {}
        expected = dict.fromkeys(expect or (), time.monotonic())  # dag_id -> since when
        latest: dict[str, datetime] = {}  # dag_id -> creation of its newest run seen
        done: list[RunRecord] = []
        while time.monotonic() < deadline:
            for dag_id, run in self._new_runs():
                self.seen.add((dag_id, run["dag_run_id"]))
                active[(dag_id, run["dag_run_id"])] = run
                expected.pop(dag_id, None)
                created = _at(run.get("queued_at"))
                latest[dag_id] = max(latest.get(dag_id, created), created)
                self.say(f"    {dag_id} {run['dag_run_id']} started ({run['run_type']})")
            for key in list(active):
                run = self.client.get_run(*key)
                if run["state"] in ("success", "failed"):
                    del active[key]
                    record = self._record(key[0], run)
                    done.append(record)
                    self.say(f"    {self._describe(record)}")
                    ended = _at(run.get("end_date")) - timedelta(seconds=2)
                    for dag_id in self._sets_off(record):
                        if latest.get(dag_id, ended) <= ended:  # not already seen
                            expected[dag_id] = time.monotonic()
            now = time.monotonic()
            expected = {d: t for d, t in expected.items() if now - t < expect_s}
            if not active and not expected and until():
                return done
            time.sleep(1.0)
        raise AirflowError(
            f"runs still active after {self.timeout:.0f} s: "
            + ", ".join(f"{d}/{r}" for d, r in active)
        )

    def _describe(self, record: RunRecord) -> str:
        ran = [t for t, v in record.tasks.items() if v["state"] == "success"]
        skipped = [t for t, v in record.tasks.items() if v["state"] == "skipped"]
        failed = [t for t, v in record.tasks.items() if v["state"] in ("failed", "upstream_failed")]
        parts = [f"{record.dag_id} {record.state} in {record.seconds:.0f} s"]
        if failed:
            parts.append(f"failed: {', '.join(failed)}")
        elif skipped and not ran:
            parts.append("skipped")
        return "; ".join(parts)

    def land(self, months: list[str], defect: str | None = None) -> MonthRecord:
        """Land one or more months at once (the first quarter), or one broken batch, and
        follow everything it sets off."""
        began = time.monotonic()
        record = MonthRecord(month=months[-1], defect=defect, champion_before=self.champion())
        for month in months:
            if defect:
                landing.land_broken(self.cfg, month, defect, self.home)
            else:
                landing.land(self.cfg, month, self.home)
        what = f"a broken batch ({defect})" if defect else "landed"
        self.say(f"{', '.join(months)}: {what}  [t+{time.monotonic() - self.began:.0f} s]")

        def processed() -> bool:  # every landed month archived (or, if broken, quarantined)
            if defect:
                return all(any(self.home.quarantine.glob(f"{m}__*")) for m in months)
            return set(months) <= set(landing.archived_months(self.home))

        record.runs = self.settle(expect={INGEST}, until=processed)
        record.champion_after = self.champion()
        record.wall_seconds = round(time.monotonic() - began, 1)
        if record.champion_after != record.champion_before:
            self.say(f"  @champion: {record.champion_before} -> {record.champion_after}")
        self.months.append(record)
        return record

    def timeline(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.months]
