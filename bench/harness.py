"""The bench harness: each benchmark module measures its subject and a baseline in the same
run and returns Figures; the harness runs every module in a fresh interpreter (one crash or
import cost cannot leak into the next), prints the table and writes bench/results.json.

A benchmark module has
    NAME: str          its key in results.json
    TITLE: str         one line for the table
    def run(ctx: Context) -> list[Figure]
`ctx.quick` asks for the smallest sizes that still exercise the code (the test suite's
smoke run); figures from a quick run are marked as such and never go in the README.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results.json"

# Run order: cheap and independent first, the long demo last.
MODULES = [
    "parse_time",
    "data_validation",
    "drift_check",
    "online_lookup",
    "rest_predict",
    "training",
    "loop_latency",
    "demo_year",
]


@dataclass
class Figure:
    """One measured figure: ours (`value`, the median unless `stat` says otherwise) against
    the baseline measured in the same run, with the issue's target and whether it was met
    (`met` None: recorded only, no target)."""

    name: str
    value: float
    unit: str
    target: str
    met: bool | None
    baseline: float | None = None
    baseline_name: str = ""
    stat: str = "median"
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline or math.isnan(self.baseline):
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


@dataclass
class Context:
    quick: bool
    workdir: Path

    def path(self, name: str) -> Path:
        p = self.workdir / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def log(self, msg: str) -> None:
        print(f"  [{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def timings(fn: Callable[[], object], repeats: int, warmup: int = 0) -> list[float]:
    """Wall seconds of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks, as numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_module(name: str, quick: bool, workdir: Path) -> dict[str, Any]:
    """Run one benchmark module here (the child side) and return its section."""
    mod = importlib.import_module(f"bench.{name}")
    began = time.perf_counter()
    figures = mod.run(Context(quick=quick, workdir=workdir))
    return {
        "title": mod.TITLE,
        "quick": quick,
        "seconds": round(time.perf_counter() - began, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": [f.as_dict() for f in figures],
    }


def run_isolated(name: str, quick: bool, workdir: Path, timeout: float | None) -> dict[str, Any]:
    """Run one module in a fresh interpreter; a failure becomes a section with the error."""
    out = workdir / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench", "--child", name, "--workdir", str(workdir)]
    if quick:
        cmd.append("--quick")
    began = time.perf_counter()
    # Run in the workdir: MLflow puts a SQLite-tracked home's artifacts under ./mlruns.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, cwd=workdir, env={**os.environ, "PYTHONPATH": path})
    try:
        code: int | str = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = f"timed out after {timeout:.0f} s"
        _stop_child(proc)
    except BaseException:  # Ctrl-C or SIGTERM: the child stops the servers it started first
        _stop_child(proc)
        raise
    if code == 0 and out.exists():
        section: dict[str, Any] = json.loads(out.read_text())
        return section
    return {
        "title": name,
        "quick": quick,
        "seconds": round(time.perf_counter() - began, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "error": f"benchmark {name} failed (exit {code}); its output is above",
        "figures": [],
    }


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the child turns it into KeyboardInterrupt, so its `finally` blocks stop
    what it started), SIGKILL only if it does not end within a minute."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def interrupt_on_sigterm() -> None:
    """A terminated benchmark unwinds like Ctrl-C: stacks and servers get stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def write_results(path: Path, sections: dict[str, dict[str, Any]], quick: bool) -> dict[str, Any]:
    """Merge this run's sections into results.json (a partial run keeps the others)."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.setdefault("benchmarks", {}).update(sections)
    data["machine"] = machine()
    data["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    if quick:
        data["quick"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def _num(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 100:
        text = f"{x:.0f}"
    elif abs(x) >= 1:
        text = f"{x:.2f}"
    else:
        text = f"{x:.3g}"
    return f"{text} {unit}".strip()


def table(sections: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of every figure: ours, the baseline, the ratio, the target."""
    rows = [
        "| benchmark | figure | ours | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, section in sections.items():
        if section.get("error"):
            rows.append(f"| {key} | — | — | — | — | — | **error**: {section['error']} |")
            continue
        for f in section["figures"]:
            ratio = f"{f['ratio']:.2f}×" if f.get("ratio") is not None else "—"
            met = {True: "yes", False: "**no**", None: "—"}[f["met"]]
            base = _num(f["baseline"], f["unit"])
            if f.get("baseline_name") and f["baseline"] is not None:
                base += f" ({f['baseline_name']})"
            stat = "" if f.get("stat", "median") == "median" else f" {f['stat']}"
            rows.append(
                f"| {key} | {f['name']}{stat} | {_num(f['value'], f['unit'])} | {base} "
                f"| {ratio} | {f['target']} | {met} |"
            )
    return "\n".join(rows)
