"""Loop latency: a month lands → a new @champion is serving, through the real scheduler.

Subject: the embedded stack (scheduler, DAG processor, triggerer, API server, MLflow
server, model server) from an empty home. The first quarter lands and trains v1 (not
timed). Then each timed month is dropped into the landing zone and the clock runs until
the model server's /health reports the new version: doorbell → `ingest_features` →
`score_batch` → `monitor_drift` (drift check, policy, trigger) → `train_model` (training
set, fit, register, gate, promote) → the server's reload poll.

Baseline, in the same run: a plain Python script (bench/plain.py) making the same library
calls in the same order, in one process, against its own MLflow tracking server: ingest,
score the month, check drift, decide, train, gate, promote, load the new champion. Both
run the same config, with the retrain policy set to act on the first drifted window (k=1,
no cooldown, no budget limit) so every timed month retrains on both sides. The ratio is
what the orchestration costs: scheduling gaps, process start-up, XCom and Asset events,
and the server's reload poll.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import Context, Figure, median
from bench.pss import PssSampler

NAME = "loop_latency"
TITLE = "month lands → new champion serving: scheduler vs plain script"
BOOTSTRAP = ["2013-01", "2013-02", "2013-03"]
TIMED = ["2013-04", "2013-05"]
TARGET = 1.3
# Act on the first drifted window, every time: each timed month retrains on both sides.
POLICY = {"monitoring": {"policy": {"k": 1, "n": 1, "cooldown_days": 0, "budget": 12}}}


def write_config(ctx: Context) -> Path:
    from flywheel.config import DEFAULT_CONFIG, load_config

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for key, value in POLICY["monitoring"].items():
        data.setdefault("monitoring", {}).setdefault(key, {}).update(value)
    path = ctx.path("loop") / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    load_config(path)  # a bad override fails here
    return path


def _mlflow_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    from flywheel import stack

    port = stack.free_port()
    (home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    log = (home / "mlflow.log").open("wb")
    proc = subprocess.Popen(
        stack.mlflow_command(home, port),
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not stack.mlflow_healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"MLflow server did not come up; see {home / 'mlflow.log'}")
        time.sleep(0.5)
    return proc, f"http://{stack.HOST}:{port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def baseline(ctx: Context, months: list[str]) -> list[dict[str, Any]]:
    """The plain script: same calls, one process, no orchestration."""
    from bench import plain
    from flywheel import monitoring, training
    from flywheel.config import load_config
    from flywheel.paths import Home

    cfg = load_config()
    home = Home(ctx.path("loop/plain_home"))
    server, uri = _mlflow_server(home.root)
    out = []
    try:
        ctx.log(f"baseline: bootstrap {BOOTSTRAP[0]}..{BOOTSTRAP[-1]} (not timed)")
        plain.run_months(cfg, home, BOOTSTRAP, tracking_uri=uri)
        with plain.home_env(home, uri):
            for month in months:
                began = time.perf_counter()
                steps: dict[str, float] = {}
                t = time.perf_counter()
                plain.ingest_month(cfg, home, month)
                steps["ingest"] = time.perf_counter() - t
                t = time.perf_counter()
                monitoring.score_month(cfg, home, month)
                steps["score"] = time.perf_counter() - t
                t = time.perf_counter()
                monitoring.check_window(cfg, home, month, "plain", f"plain__{month}")
                decided = monitoring.decide_retrain(cfg, home, month)
                steps["monitor"] = time.perf_counter() - t
                request = decided["request"]
                if not request:
                    raise RuntimeError(f"{month}: the policy did not retrain: {decided}")
                t = time.perf_counter()
                conf = monitoring.trigger_kwargs(request)["conf"]
                trained = plain.train_champion(cfg, home, conf["reason"])
                steps["train"] = time.perf_counter() - t
                t = time.perf_counter()
                training.load_model(f"models:/{cfg.registry.model_name}@champion")
                steps["load"] = time.perf_counter() - t
                seconds = time.perf_counter() - began
                monitoring.close_request(home, request["id"], {"version": trained["version"]})
                ctx.log(f"baseline {month}: v{trained['version']} serving after {seconds:.1f} s")
                out.append({"month": month, "seconds": seconds, "steps": steps})
    finally:
        _stop(server)
    return out


def scheduled(ctx: Context, months: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The embedded stack: land, then wait for the server to serve a new version."""
    from flywheel import stack
    from flywheel.airflow_client import AirflowClient
    from flywheel.config import load_config
    from flywheel.demo import champion_of
    from flywheel.paths import Home
    from flywheel.replay import Replay

    cfg = load_config()
    home = Home(ctx.path("loop/stack_home"))
    airflow_port, mlflow_port = stack.free_ports(2)
    saved = {k: os.environ.get(k) for k in ("FLYWHEEL_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["FLYWHEEL_HOME"] = str(home.root)
    out = []
    try:
        began = time.monotonic()
        running = stack.start(home.root, airflow_port=airflow_port, mlflow_port=mlflow_port)
        ctx.log(f"stack up in {time.monotonic() - began:.0f} s")
        assert running.serve_port
        assert running.mlflow_url
        os.environ["MLFLOW_TRACKING_URI"] = running.mlflow_url
        client = AirflowClient(running.airflow_url, running.username, running.password)
        replay = Replay(client, cfg, home, champion_of(cfg, running.mlflow_url), say=ctx.log)
        replay.land(BOOTSTRAP)
        with PssSampler(home.root) as pss:
            for month in months:
                before = _served_version(running.serve_port)
                seen: dict[str, float] = {}
                watcher = threading.Thread(
                    target=_watch_version,
                    args=(running.serve_port, before, seen, time.monotonic()),
                    daemon=True,
                )
                watcher.start()
                record = replay.land([month])
                watcher.join(timeout=120)
                if "seconds" not in seen:
                    raise RuntimeError(f"{month}: the server still serves v{before}")
                runs: dict[str, float] = {}
                for r in record.runs:
                    runs[r.dag_id] = runs.get(r.dag_id, 0.0) + r.seconds
                tasks = sum(t["seconds"] for r in record.runs for t in r.tasks.values())
                ctx.log(f"scheduled {month}: v{seen['version']} serving after "
                        f"{seen['seconds']:.1f} s")  # fmt: skip
                out.append({"month": month, "seconds": seen["seconds"], "run_seconds": runs,
                            "task_seconds": round(tasks, 1)})  # fmt: skip
        return out, pss.summary()
    finally:
        stack.stop(home.root)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _served_version(port: int) -> str | None:
    from flywheel import stack

    health = stack.serve_health(port) or {}
    version = health.get("version")
    return None if version is None else str(version)


def _watch_version(port: int, before: str | None, seen: dict[str, Any], began: float) -> None:
    deadline = began + 1800
    while time.monotonic() < deadline:
        version = _served_version(port)
        if version is not None and version != before:
            seen.update(version=version, seconds=time.monotonic() - began)
            return
        time.sleep(0.25)


def run(ctx: Context) -> list[Figure]:
    months = TIMED[:1] if ctx.quick else TIMED
    os.environ["FLYWHEEL_CONFIG"] = str(write_config(ctx))
    plain_runs = baseline(ctx, months)
    stack_runs, pss = scheduled(ctx, months)
    ours = median(r["seconds"] for r in stack_runs)
    base = median(r["seconds"] for r in plain_runs)
    return [
        Figure(
            name=f"land → serving, {len(months)} month(s) ({', '.join(months)})",
            value=ours,
            unit="s",
            baseline=base,
            baseline_name="plain script",
            target=f"≤ {TARGET}×",
            met=ours <= TARGET * base,
            detail={"scheduled": stack_runs, "plain": plain_runs, "stack_pss": pss},
        )
    ]
