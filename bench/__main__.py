"""`make bench`: run the benchmarks, print the table, write bench/results.json.

    python -m bench                     every benchmark (about 35 minutes on 2 cores)
    python -m bench --only drift_check,online_lookup
    python -m bench --quick             smallest sizes: checks the harness, not the machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from bench import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (a smoke run)")
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON (default bench/results.json; with --quick, <workdir>/results.json: "
        "a smoke run's figures never replace measured ones)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("FLYWHEEL_BENCH_DIR", harness.REPO / ".flywheel" / "bench")),
        help="scratch space, emptied first (default .flywheel/bench)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    parser.add_argument("--list", action="store_true", help="name the benchmarks and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one module, in this interpreter
    args = parser.parse_args(argv)

    if args.list:
        print("\n".join(harness.MODULES))
        return 0
    harness.interrupt_on_sigterm()
    if args.child:
        section = harness.run_module(args.child, args.quick, args.workdir)
        (args.workdir / f"{args.child}.json").write_text(json.dumps(section, default=str))
        return 0

    names = args.only.split(",") if args.only else list(harness.MODULES)
    unknown = [n for n in names if n not in harness.MODULES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {harness.MODULES}")
    out = args.out or (args.workdir / "results.json" if args.quick else harness.RESULTS)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    sections = {}
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        sections[name] = harness.run_isolated(name, args.quick, args.workdir, args.timeout)
        print(harness.table({name: sections[name]}), file=sys.stderr, flush=True)
    harness.write_results(out, sections, args.quick)
    print(harness.table(sections))
    print(f"\nwritten: {out}")
    return 1 if any(s.get("error") for s in sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
