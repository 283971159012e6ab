"""The loop's ML work as one plain Python script: no scheduler, no workers, no XCom.

Each month runs the same library calls the DAG tasks make, in the same order:
validate → build features → apply → materialize, then (when it trains) training set →
fit (the same forked entrypoint) → register → gate → promote. It is the baseline of the
loop-latency benchmark, and it builds the homes the online benchmarks read.

    python -m bench.plain --home /tmp/h 2013-01 2013-02 2013-03   (trains after the last)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flywheel.config import Config, load_config
from flywheel.paths import Home


@contextmanager
def home_env(home: Home, tracking_uri: str | None = None) -> Iterator[None]:
    """$FLYWHEEL_HOME (and MLflow's URI) as the DAG tasks see them; restored after."""
    keys = {"FLYWHEEL_HOME": str(home.root)}
    keys["MLFLOW_TRACKING_URI"] = tracking_uri or ""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        for k, v in keys.items():
            if v:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ingest_month(cfg: Config, home: Home, month: str) -> dict[str, float]:
    """Land the month and ingest it as `ingest_features` does; seconds per step."""
    from flywheel import ingest, landing

    steps: dict[str, float] = {}
    began = time.perf_counter()
    landing.land(cfg, month, home)
    steps["land"] = time.perf_counter() - began
    for step, call in (
        ("resolve", lambda: ingest.resolve_month(cfg, home, None, "asset_triggered", None)),
        ("validate", lambda: ingest.validate(cfg, home, month)),
        ("build", lambda: ingest.build_and_store(cfg, home, month)),
        ("apply", lambda: ingest.apply_repo(cfg, home)),
        ("materialize", lambda: ingest.materialize(cfg, home, month)),
    ):
        began = time.perf_counter()
        out = call()
        steps[step] = time.perf_counter() - began
        if step == "validate" and not out.success:  # type: ignore[attr-defined]
            raise RuntimeError(f"{month} failed validation: {out.failures}")  # type: ignore[attr-defined]
    return steps


def train_champion(cfg: Config, home: Home, reason: str) -> dict[str, Any]:
    """Train on the configured window, register, gate, promote, as `train_model` does."""
    from flywheel import train, training
    from flywheel.runspec import RunSpec

    steps: dict[str, float] = {}
    began = time.perf_counter()
    plan = training.Plan.from_params(cfg, {}, reason)
    info = training.prepare(cfg, home, plan, "plain", f"plain__{time.time_ns()}")
    steps["prepare"] = time.perf_counter() - began
    if "skip" in info:
        raise RuntimeError(f"nothing trained: {info['skip']}")
    began = time.perf_counter()
    # The entrypoint in this process: a script has its imports already, and a fork would
    # hang here once scoring has started OpenMP's threads (libgomp is not fork-safe).
    spec_path = Path(info["spec_path"])
    train.run(RunSpec.read(spec_path), base=spec_path.parent)
    steps["train"] = time.perf_counter() - began
    began = time.perf_counter()
    candidate = training.register_candidate(cfg, home, info)
    verdict = training.gate(cfg, home, info, candidate, dry_run=False)
    steps["register_gate"] = time.perf_counter() - began
    began = time.perf_counter()
    if verdict["promote"]:
        training.promote(cfg, home, candidate, verdict, who="bench.plain", reason=reason)
    steps["promote"] = time.perf_counter() - began
    return {"version": candidate["version"], "promoted": verdict["promote"], "steps": steps}


def run_months(
    cfg: Config, home: Home, months: list[str], tracking_uri: str | None = None
) -> dict[str, Any]:
    """Ingest each month, then train and promote a champion on what is in."""
    with home_env(home, tracking_uri):
        ingested = {m: ingest_month(cfg, home, m) for m in months}
        trained = train_champion(cfg, home, f"bench.plain after {months[-1]}")
    return {"ingest": ingested, "train": trained}


def served_home(workdir: Path, months: tuple[str, ...] = ("2013-01", "2013-02", "2013-03")) -> Home:
    """A home with `months` in the offline and online stores and a champion trained on them
    (MLflow in the home's SQLite file): built once per bench run, shared by the modules."""
    home = Home(workdir / "served_home")
    ready = home.root / "bench_ready.json"
    if ready.exists() and json.loads(ready.read_text())["months"] == list(months):
        return home
    home.root.mkdir(parents=True, exist_ok=True)
    out = run_months(load_config(), home, list(months))
    ready.write_text(json.dumps({"months": list(months), **out}, default=str))
    return home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("months", nargs="+")
    args = parser.parse_args(argv)
    out = run_months(load_config(), Home(args.home.resolve()), args.months)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
