"""Run an Airflow component with the ML libraries already imported (the embedded stack).

The LocalExecutor forks its workers from the scheduler, and each worker forks one process
per task. Imported here first, pandas, scikit-learn, MLflow, Feast, Evidently and Great
Expectations are inherited by every task instead of being imported again by each: that
is 5-15 s per task on 2 cores (../shared/STACK_FACTS.md: import costs), more than most
tasks' own work. Forked pages are shared until written, so the memory is paid about
once. The same trick as gunicorn's `--preload`.

    python -m flywheel.preload scheduler    # = `airflow scheduler`, libraries preloaded

Only imports happen here: nothing starts a thread, opens a connection or reads state, so
forking afterwards is as safe as forking a fresh interpreter.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

MODULES = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "sklearn.metrics",
    "mlflow",
    "mlflow.sklearn",
    "feast",
    "great_expectations",
    "evidently",
    "evidently.presets",
)


def preload(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import each module; returns the seconds each took (a missing one is skipped)."""
    took = {}
    for name in modules:
        began = time.perf_counter()
        try:
            importlib.import_module(name)
        except ImportError as err:  # an optional extra not installed: tasks import lazily
            print(f"flywheel.preload: skipped {name}: {err}", file=sys.stderr, flush=True)
            continue
        took[name] = round(time.perf_counter() - began, 2)
    return took


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get("FLYWHEEL_PRELOAD", "1") != "0":
        took = preload()
        print(f"flywheel.preload: {sum(took.values()):.1f} s: {took}", flush=True)
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *args]
    airflow_main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
