"""The year in review as a benchmark: peak memory of the embedded stack, and the loop's
quality over May–December.

Runs `python -m flywheel.demo` (the whole of 2013 through the real scheduler, `--short`
in quick mode) in a home of its own on free ports, sampling the stack's PSS every two
seconds (bench/pss.py: RSS would count the scheduler's preloaded imports once per forked
worker and task). Then reads the demo's report: the served model against a static model
trained once on Q1 and an oracle retrained before every month, on the same labelled
flights. The demo's driver process (replay and report) is measured apart: it is not part
of the stack a user keeps running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO, Context, Figure
from bench.pss import PssSampler

NAME = "demo_year"
TITLE = "the year in review: peak PSS of the stack, quality of the loop"
PSS_TARGET_GIB = 2.5
OVER_STATIC, FROM_ORACLE, RETRAIN_SHARE = 0.03, 0.01, 0.5


def run_demo(ctx: Context, home: Path) -> tuple[dict[str, Any], dict[str, Any], float]:
    from flywheel import stack

    airflow_port, mlflow_port, serve_port = stack.free_ports(3)
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(home),
        "FLYWHEEL_AIRFLOW_PORT": str(airflow_port),
        "FLYWHEEL_MLFLOW_PORT": str(mlflow_port),
        "FLYWHEEL_SERVE_PORT": str(serve_port),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "flywheel.demo", *(["--short"] if ctx.quick else [])]
    log_path = home.parent / "demo.log"
    began = time.monotonic()
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            with PssSampler(home, every=2.0, extra=[proc.pid]) as pss:
                code = proc.wait(timeout=3600)
        seconds = time.monotonic() - began
        if code != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the demo exited with {code}:\n{tail}")
        report = json.loads((home / "report" / "report.json").read_text())
        return report, pss.summary(), seconds
    finally:
        stack.stop(home)


def run(ctx: Context) -> list[Figure]:
    home = ctx.path("demo") / "home"
    ctx.log(f"running the {'short ' if ctx.quick else ''}demo under {home}")
    report, pss, seconds = run_demo(ctx, home)
    ctx.log(f"demo done in {seconds:.0f} s; stack PSS peak {pss['peak_gib']} GiB")
    figures = [
        Figure(
            name="peak PSS of the embedded stack during the demo",
            value=pss["peak_gib"],
            unit="GiB",
            stat="peak",
            target=f"≤ {PSS_TARGET_GIB} GiB",
            met=pss["peak_gib"] <= PSS_TARGET_GIB,
            detail={**pss, "demo_seconds": round(seconds, 1), "timings": report.get("timings")},
        )
    ]
    summary, retrains = report["summary"], report["retrains"]
    if not summary.get("months"):  # the short demo ends before the quality window
        return figures
    metric = report.get("quality", {}).get("metric", "AUC")
    span = f"{summary['months'][0]}..{summary['months'][-1]}"
    figures += [
        Figure(
            name=f"served model {metric}, {span}, vs static Q1 model",
            value=summary["served"],
            unit="",
            stat="mean",
            baseline=summary["static"],
            baseline_name="static",
            target=f"≥ static + {OVER_STATIC}",
            met=summary["served"] - summary["static"] >= OVER_STATIC,
            detail={"served_minus_static": summary["served_minus_static"]},
        ),
        Figure(
            name=f"served model {metric}, {span}, vs oracle",
            value=summary["served"],
            unit="",
            stat="mean",
            baseline=summary["oracle"],
            baseline_name="oracle",
            target=f"≥ oracle − {FROM_ORACLE}",
            met=summary["oracle"] - summary["served"] <= FROM_ORACLE,
            detail={"oracle_minus_served": summary["oracle_minus_served"]},
        ),
        Figure(
            name="retrains, served loop vs oracle",
            value=retrains["served"],
            unit="",
            stat="count",
            baseline=retrains["oracle"],
            baseline_name="oracle",
            target=f"≤ {RETRAIN_SHARE:.0%} of the oracle's",
            met=retrains["served"] <= RETRAIN_SHARE * retrains["oracle"],
            detail={"months": retrains.get("served_months")},
        ),
    ]
    return figures
