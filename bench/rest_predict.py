"""REST predict: one-row `POST /predict` (online feature lookup + model) under a bounded
open-loop load from a second process on loopback, against the model's own `predict`.

Subject: the model server (`python -m flywheel.serving`, the real app: uvicorn, FastAPI,
Feast's online store, the @champion loaded from the home's MLflow registry, the prediction
log flushed every second) serving the served home (2013-01..03 in the stores, champion v1).
A second process sends single-row requests for real 2013-03 flights at a fixed rate of
50 requests/s: request i is due at t0 + i/50 and sent by one of four threads, each with its
own persistent HTTP/1.1 connection (round robin, so a slow answer delays only that thread's
next request, and that delay is counted). Latency runs from the request's scheduled send
time to its whole answer read (open loop: time spent waiting behind a slow answer is
included); the time from the actual send is reported beside it. Any non-200 is an error.

Baseline, in the same run: the champion's own `predict` in this process (`load_model` +
`predict_proba` on a one-row DataFrame with the same entity keys and the same features,
read from the same online store first, outside the clock; one OpenMP thread, as the
server runs): what scoring one row costs with no HTTP, no Feast and no server around it,
the floor of any server that calls the model per request. The server beats it by scoring
through `flywheel.models.FastScorer` (the model's own numbers, checked here on 200 rows,
without the pipeline's per-call overheads); `detail` has that scorer's in-process cost and
the server's own `ModelServer.predict` (Feast read + scoring, no HTTP) over the same rows.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import Context, Figure, percentile

NAME = "rest_predict"
TITLE = "REST /predict, one row at 50 req/s from another process (p99) vs in-process predict"
RATE = 50.0
SENDERS = 4
TARGET_S = 10e-3
TARGET = "p99 ≤ 10 ms at 50 requests/s"
MONTH = "2013-03"


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _ms(percentile(values, 50)),
        "p90_ms": _ms(percentile(values, 90)),
        "p99_ms": _ms(percentile(values, 99)),
        "max_ms": _ms(max(values)),
    }


def sample_rows(ctx: Context, home: Any, n: int) -> list[dict[str, Any]]:
    """`n` real flights of MONTH as request rows (entity keys; null keys as null)."""
    import pandas as pd

    from flywheel.config import load_config

    cfg = load_config()
    frame = pd.read_parquet(home.entity_rows(cfg.entity.name) / f"{MONTH}.parquet")
    picked = frame.sample(n, replace=n > len(frame), random_state=0)[cfg.entity_columns()]
    return [
        {k: (None if pd.isna(v) else str(v)) for k, v in row.items()}
        for row in picked.to_dict("records")
    ]


# --- the server -----------------------------------------------------------------------------


@contextlib.contextmanager
def model_server(ctx: Context, home: Any) -> Any:
    """The model server on a free loopback port, until its /health shows a loaded champion;
    its whole process group is stopped on the way out, whatever happened."""
    from flywheel import stack
    from flywheel.training import tracking_uri

    port = stack.free_port()
    env = {**os.environ, **stack.serve_env(home.root, tracking_uri(home))}
    log_path = ctx.path("rest_predict") / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            stack.serve_command(port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        health = _wait_loaded(proc, port, log_path)
        yield port, health, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_loaded(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited {proc.returncode}: {_tail(log_path)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            last = json.loads(conn.getresponse().read())
            conn.close()
            if last.get("status") == "ok" and last.get("version"):
                return dict(last)
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"model server not serving a champion in time ({last}): {_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the load generator (a second process) -------------------------------------------------


def generate_load(
    port: int, rows: list[dict[str, Any]], rate: float, senders: int
) -> dict[str, Any]:
    """Send one request per row, request i due at t0 + i/rate, `senders` threads in turn,
    each on its own persistent connection. Per request: seconds from its scheduled time and
    from its actual send to its whole answer, its status."""
    n = len(rows)
    bodies = [json.dumps({"rows": [row]}).encode() for row in rows]
    headers = {"Content-Type": "application/json"}
    from_due = [float("nan")] * n
    from_send = [float("nan")] * n
    status: list[Any] = [None] * n
    errors: list[str] = []
    t0 = time.perf_counter() + 0.2

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        return conn

    def sender(k: int) -> None:
        conn = connect()
        for i in range(k, n, senders):
            due = t0 + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=bodies[i], headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                done = time.perf_counter()
                status[i] = resp.status
                if resp.status != 200:
                    errors.append(f"#{i}: HTTP {resp.status} {body[:200]!r}")
                elif len(json.loads(body)["predictions"]) != 1:
                    status[i] = "bad body"
                    errors.append(f"#{i}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as err:
                done = time.perf_counter()
                status[i] = type(err).__name__
                errors.append(f"#{i}: {err!r}")
                conn.close()
                conn = connect()
            from_due[i], from_send[i] = done - due, done - sent
        conn.close()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "from_due": from_due,
        "from_send": from_send,
        "status": status,
        "errors": errors,
        "seconds": time.perf_counter() - t0,
    }


def run_load(ctx: Context, port: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`generate_load` in a fresh interpreter (this module's __main__)."""
    work = ctx.path("rest_predict")
    job, out = work / "load.json", work / "load_out.json"
    job.write_text(json.dumps({"port": port, "rows": rows, "rate": RATE, "senders": SENDERS}))
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bench.rest_predict", str(job), str(out)],
        check=True,
        timeout=len(rows) / RATE + 300,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --- in-process: the model's own predict, the fast scorer, the server without HTTP ---------


def in_process(ctx: Context, home: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-call seconds of the champion's pipeline `predict` on one-row frames (the
    baseline), of its FastScorer, and of `ModelServer.predict`, over the same rows."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from bench.plain import home_env
    from flywheel import serving, training
    from flywheel.config import load_config

    cfg = load_config()
    with home_env(home, training.tracking_uri(home)):
        champion = serving.RegistryChampion(training.tracking_uri(home), cfg.registry.model_name)
        features = serving.FeastFeatures(cfg, home)
        server = serving.ModelServer(
            cfg,
            home,
            champion_version=champion.version,
            load_model=champion.load,
            read_features=features,
        )
        server.reload()
        served = server.served
        if served is None:
            raise RuntimeError("no champion in the served home")
        model = training.load_model(f"models:/{cfg.registry.model_name}/{served.version}")
        scorer = served.scorer  # what the server scores with (None: the pipeline)
        entities = [server.entity_rows([row]) for row in rows]
        found = features(server.entity_rows(rows))  # one read, outside the clock
        values, _ = server._values(server.entity_rows(rows), found)
        frames = [server._frame(e, values[i : i + 1]) for i, e in enumerate(entities)]

        def each(call: Any, items: list[Any]) -> list[float]:
            for item in items[:10]:
                call(item)
            out = []
            for item in items:
                began = time.perf_counter()
                call(item)
                out.append(time.perf_counter() - began)
            return out

        ctx.log(f"in-process: pipeline predict over {len(frames)} one-row frames")
        # One OpenMP thread, as the server predicts ($OMP_NUM_THREADS=1 there); set once
        # the model is loaded, so the runtime it limits is loaded too.
        with threadpool_limits(limits=1):
            pipeline = each(lambda f: training.predict(model, f, cfg), frames)
            fast: list[float] = []
            if scorer is not None:
                columns = [{c: f[c].tolist() for c in f.columns} for f in frames]
                fast = each(scorer.score, columns)
                got = np.array([scorer.score(c)[0] for c in columns[:200]])
                want = np.array([training.predict(model, f, cfg)[0] for f in frames[:200]])
                if not np.array_equal(got, want):
                    raise RuntimeError("the fast scorer's scores differ from the model's")
            served_calls = each(lambda e: server.predict(e), entities)
    return {"pipeline": pipeline, "fast": fast, "server": served_calls}


def run(ctx: Context) -> list[Figure]:
    from bench.plain import served_home

    n = 100 if ctx.quick else 2000
    home = served_home(ctx.workdir)
    rows = sample_rows(ctx, home, n)

    ctx.log(f"model server for {home.root}")
    with model_server(ctx, home) as (port, health, log_path):
        ctx.log(f"serving v{health['version']} on port {port}; warming up")
        generate_load(port, rows[:20], RATE, 1)  # first-connection and first-call costs
        ctx.log(f"{n} one-row requests at {RATE:.0f}/s from a second process")
        load = run_load(ctx, port, rows)
        fast_path_log = "on the fast path" in log_path.read_text(errors="replace")
    base = in_process(ctx, home, rows)

    ok = [i for i, s in enumerate(load["status"]) if s == 200]
    from_due = [load["from_due"][i] for i in ok]
    from_send = [load["from_send"][i] for i in ok]
    errors = len(load["status"]) - len(ok)
    rest = _stats(from_due) if from_due else {"p50_ms": float("nan"), "p99_ms": float("nan")}
    pipeline = _stats(base["pipeline"])
    detail: dict[str, Any] = {
        "requests": n,
        "rate_per_s": RATE,
        "achieved_rate_per_s": round(n / load["seconds"], 2),
        "senders": SENDERS,
        "errors": errors,
        "first_errors": load["errors"][:5],
        "latency_from": "scheduled send time (open loop)",
        "rest_from_scheduled": rest,
        "rest_from_actual_send": _stats(from_send) if from_send else {},
        "baseline_pipeline_predict": pipeline,
        "in_process_fast_scorer": _stats(base["fast"]) if base["fast"] else None,
        "in_process_server_predict": _stats(base["server"]),
        "server_fast_path": fast_path_log,
        "model_version": health["version"],
        "baseline_rows": len(base["pipeline"]),
    }
    return [
        Figure(
            name="one-row POST /predict at 50 req/s",
            value=rest["p99_ms"],
            unit="ms",
            stat="p99",
            target=TARGET,
            met=bool(errors == 0 and rest["p99_ms"] <= TARGET_S * 1e3),
            baseline=pipeline["p99_ms"],
            baseline_name="in-process predict p99",
            detail=detail,
        ),
        Figure(
            name="one-row POST /predict at 50 req/s",
            value=rest["p50_ms"],
            unit="ms",
            stat="p50",
            target="—",
            met=None,
            baseline=pipeline["p50_ms"],
            baseline_name="in-process predict p50",
        ),
    ]


if __name__ == "__main__":  # the load generator's process: job.json out.json
    job = json.loads(Path(sys.argv[1]).read_text())
    result = generate_load(job["port"], job["rows"], job["rate"], job["senders"])
    Path(sys.argv[2]).write_text(json.dumps(result))
