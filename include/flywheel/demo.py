"""`make demo`: the year in review. Brings the stack up, replays 2013 month by month
through the real Airflow scheduler, and ends with a report.

The first quarter lands at once; once it is ingested, `train_model` trains the first
champion. Then every month lands on its own: `ingest_features` -> `score_batch` (the
champion scores the month) -> `monitor_drift` (Evidently against the champion's own
training snapshot; the retrain policy decides) -> `train_model` when the policy says so,
through the gates. A broken batch is delivered once on the way (quarantined, then the
good one arrives). This script only lands files and watches the REST API; the scheduler
does the rest. The stack stays up for the UIs afterwards; `make down` stops it.

    python -m flywheel.demo                       # the whole of 2013
    python -m flywheel.demo --short               # Q1 + April..June: the quick look
    python -m flywheel.demo --through 2013-08 --broken none
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from flywheel import landing, stack
from flywheel.airflow_client import AirflowClient
from flywheel.config import Config, load_config
from flywheel.paths import Home
from flywheel.replay import Replay

SHORT_THROUGH = "2013-06"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def champion_of(cfg: Config, mlflow_url: str | None) -> Any:
    """A callable naming the current champion, e.g. "v3" (None before the first)."""
    import mlflow

    from flywheel import registry

    client = mlflow.MlflowClient(mlflow_url)

    def current() -> str | None:
        version = registry.champion(client, cfg.registry.model_name)
        return f"v{version.version}" if version is not None else None

    return current


def _quarantine_reason(home: Home, month: str) -> str:
    folders = sorted(home.quarantine.glob(f"{month}__*"))
    if not folders:
        return "(no quarantine record found)"
    report = json.loads((folders[-1] / "validation.json").read_text())
    return "; ".join(report["failures"])[:300]


def replay_year(
    replay: Replay,
    cfg: Config,
    home: Home,
    through: str,
    broken: tuple[str, str] | None,
    bootstrap: int,
) -> None:
    """Land the first `bootstrap` months together, then one month at a time."""
    months = [m for m in cfg.months() if m <= through]
    done = set(landing.archived_months(home))
    first = [m for m in months[:bootstrap] if m not in done]
    if first:
        replay.land(first)
    for month in months[bootstrap:]:
        if month in done:
            continue
        if broken and broken[0] == month:
            replay.land([month], defect=broken[1])
            _say(f"  quarantined: {_quarantine_reason(home, month)}")
        record = replay.land([month])
        states = {r.dag_id: r.state for r in record.runs}
        _say(f"  {month} done in {record.wall_seconds:.0f} s: {states}; "
             f"@champion {record.champion_after}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flywheel.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--through", default=None, help="last month to replay (YYYY-MM)")
    parser.add_argument("--short", action="store_true", help=f"replay through {SHORT_THROUGH} only")
    parser.add_argument(
        "--broken",
        default="2013-08:null_keys",
        help="MONTH:DEFECT delivered once before the good batch of MONTH "
        f"(defects: {', '.join(sorted(landing.DEFECTS))}), or none",
    )
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle baseline")
    args = parser.parse_args(argv)
    cfg = load_config()
    through = args.through or (SHORT_THROUGH if args.short else cfg.months()[-1])
    broken = None
    if args.broken != "none":
        month, _, defect = args.broken.partition(":")
        if defect not in landing.DEFECTS:
            parser.error(f"--broken: defect must be one of {sorted(landing.DEFECTS)}")
        broken = (month, defect)

    began = time.monotonic()
    home = Home.from_env()
    _say(f"starting Airflow + MLflow under {home.root} (first start migrates the DB: ~1 min)")
    running = stack.start(
        home.root,
        airflow_port=int(os.environ.get("FLYWHEEL_AIRFLOW_PORT", "8080")),
        mlflow_port=int(os.environ.get("FLYWHEEL_MLFLOW_PORT", "5000")),
        serve_port=int(os.environ.get("FLYWHEEL_SERVE_PORT", "5005")),
    )
    if running.mlflow_url:  # this process reads the registry and the runs too (the report)
        os.environ["MLFLOW_TRACKING_URI"] = running.mlflow_url
    client = AirflowClient(running.airflow_url, running.username, running.password)
    replay = Replay(client, cfg, home, champion_of(cfg, running.mlflow_url), say=_say)
    _say(f"stack up in {time.monotonic() - began:.0f} s; DAGs registered and unpaused")
    replay_began = time.monotonic()
    replay_year(replay, cfg, home, through, broken, cfg.training.bootstrap_months)
    replay_s = time.monotonic() - replay_began
    _say(f"replay done in {replay_s:.0f} s; writing the report")
    out_dir = home.root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "timeline.json").write_text(json.dumps(replay.timeline(), indent=2))

    from flywheel import report

    docs = home.gx / "uncommitted" / "data_docs" / "local_site" / "index.html"
    paths = report.build(
        cfg,
        home,
        replay.timeline(),
        replay_s,
        out_dir,
        links={
            "airflow": running.airflow_url,
            "mlflow": running.mlflow_url,
            "data_docs": docs.as_uri() if docs.exists() else None,
        },
        oracle=not args.no_oracle,
    )
    data = json.loads(Path(paths["json"]).read_text())
    summary = data["summary"]
    _say(f"done in {time.monotonic() - began:.0f} s")
    print(f"\nReport      {paths['html']}\n            {paths['json']}")
    print(f"Quality     {json.dumps(summary)}")
    print(f"Retrains    {data['retrains']}")
    print(f"\nAirflow UI  {running.airflow_url}   (login {running.username} / {running.password})")
    print(f"MLflow UI   {running.mlflow_url}")
    print(f"Model API   {running.serve_url}/predict   (health: {running.serve_url}/health)")
    print(f"State       {home.root}")
    print("Stop everything with: make down")
    failed = [
        f"{r['dag_id']}/{r['run_id']}"
        for m in data["timeline"]
        if not m["defect"]
        for r in m["runs"]
        if r["state"] != "success"
    ]
    if failed:
        print(f"\nFAILED runs: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
