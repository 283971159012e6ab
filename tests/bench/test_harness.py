"""The bench harness: its statistics, its table, its results file, and one quick smoke run
of a real benchmark through `python -m bench` (the figures themselves are `make bench`'s)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bench import harness
from bench.harness import Figure


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = list(np.random.default_rng(0).lognormal(size=257))
    assert harness.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        harness.percentile([], 50)


def test_ratio_is_against_the_same_runs_baseline() -> None:
    assert Figure("x", 3.0, "s", "≤ 3×", True, baseline=1.5).ratio == pytest.approx(2.0)
    assert Figure("x", 3.0, "s", "record", None).ratio is None
    assert Figure("x", 3.0, "s", "record", None, baseline=0.0).ratio is None


def test_table_shows_misses_and_errors() -> None:
    sections = {
        "a": {
            "figures": [
                Figure("fast", 0.2, "ms", "p99 ≤ 0.5 ms", True, 0.1, "sqlite", stat="p99").as_dict()
            ]
        },
        "b": {"figures": [Figure("slow", 40.0, "s", "≤ 30 s", False, 10.0).as_dict()]},
        "c": {"error": "benchmark c failed (exit 1)", "figures": []},
    }
    text = harness.table(sections)
    lines = text.splitlines()
    assert len(lines) == 5
    assert "| a | fast p99 | 0.2 ms | 0.1 ms (sqlite) | 2.00× | p99 ≤ 0.5 ms | yes |" in lines
    assert "4.00×" in lines[3]
    assert "**no**" in lines[3]
    assert "**error**" in lines[4]


def test_results_merge_keeps_other_benchmarks(tmp_path) -> None:
    out = tmp_path / "results.json"
    harness.write_results(out, {"a": {"figures": [], "seconds": 1}}, quick=False)
    harness.write_results(out, {"b": {"figures": [], "seconds": 2}}, quick=False)
    data = json.loads(out.read_text())
    assert set(data["benchmarks"]) == {"a", "b"}
    assert data["machine"]["cpus"] >= 1
    assert "quick" not in data


def test_a_crashing_benchmark_becomes_an_error_row(tmp_path) -> None:
    section = harness.run_isolated("no_such_benchmark", True, tmp_path, timeout=120)
    assert "failed" in section["error"]
    assert section["figures"] == []


def test_unknown_benchmark_names_are_refused(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nope", "--workdir", str(tmp_path / "w")],
        cwd=harness.REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown benchmark(s) nope" in proc.stderr


@pytest.mark.timeout(240)
def test_quick_smoke_run_writes_the_table_and_results(tmp_path) -> None:
    workdir = tmp_path / "w"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "parse_time",
         "--workdir", str(workdir)],
        cwd=harness.REPO, capture_output=True, text=True, timeout=230,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| parse_time |" in proc.stdout
    data = json.loads((workdir / "results.json").read_text())
    assert data["quick"] is True
    figures = data["benchmarks"]["parse_time"]["figures"]
    assert figures
    for f in figures:
        assert math.isfinite(f["value"])
        assert f["baseline"] > 0
        assert f["ratio"] == pytest.approx(f["value"] / f["baseline"])
        assert f["met"] in (True, False)
