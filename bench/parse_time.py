"""DAG file parse time: what each file in dags/ costs Airflow's DAG processor, above the
imports the processor already holds.

Airflow 3's DAG processor pre-imports, once, every `airflow.*` module a file imports
(`processor._pre_import_airflow_modules`, found with `airflow.utils.file.iter_airflow_imports`)
and then forks a child per file that runs `processor._parse_file`: the stability check, a
`BundleDagBag` that executes the file as a module, and the serialization of its DAGs.

Each measurement is one fresh interpreter, with Airflow configured on a throw-away home as
tests/dags/test_dag_integrity.py does (no database is touched):
  1. baseline: `import airflow.sdk` and the file's own `airflow.*` imports, timed; it is
     the same interpreter the file is then parsed in, so what the file adds is the
     difference and start-up noise cancels out;
  2. the processor's machinery (not timed): `airflow.dag_processing.processor` is imported
     and a tiny reference DAG is parsed, so Airflow's one-off lazy imports and caches are
     paid before the file, as in a processor that has been running;
  3. ours: `_parse_file` on the file, timed, with the serialization share split out.
The target is on the difference (step 3): a DAG file must stay thin, whatever Airflow's
own import costs. Bytecode is cached (in the workdir) by one untimed warm-up interpreter
first, as it would be in a deployed image: otherwise compiling Airflow would be measured.
FLYWHEEL_K8S_NAMESPACE is unset, the default: with a cluster, train_model imports the
Kubernetes provider at parse time on purpose.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import REPO, Context, Figure, median

NAME = "parse_time"
TITLE = "DAG file parse time above the processor's pre-imports (fresh interpreter per file)"
DAGS = REPO / "dags"
TARGET_S = 0.2

REFERENCE_DAG = '''"""The smallest DAG that exercises the parse and serialization paths."""
import pendulum
from airflow.sdk import Param, dag, task


@dag(schedule=None, start_date=pendulum.datetime(2013, 1, 1, tz="UTC"), catchup=False,
     params={"p": Param(None, type=["null", "string"])})
def reference():
    @task
    def one() -> int:
        return 1

    @task
    def two(x: int) -> None:
        pass

    two(one())


reference()
'''

# Runs in a fresh interpreter: argv[1] is a JSON object with files, reference, out.
PROBE = r"""
import json, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
file = args["files"][0]

began = time.perf_counter()
import importlib
import airflow.sdk  # noqa: F401
from airflow.utils.file import iter_airflow_imports
pre_imported = list(iter_airflow_imports(file))
for name in pre_imported:
    importlib.import_module(name)
baseline_s = time.perf_counter() - began

began = time.perf_counter()
import structlog
from airflow.dag_processing import processor
log = structlog.get_logger(logger_name="task")

def parse(path):
    request = processor.DagFileParseRequest(
        file=path, bundle_path=Path(path).parent, bundle_name="dags-folder")
    return processor._parse_file(request, log)

parse(args["reference"])
machinery_s = time.perf_counter() - began

serialize = processor._serialize_dags
spent = []
def timed_serialize(*a, **k):
    t = time.perf_counter()
    try:
        return serialize(*a, **k)
    finally:
        spent.append(time.perf_counter() - t)
processor._serialize_dags = timed_serialize

out = {"baseline_s": baseline_s, "machinery_s": machinery_s, "pre_imported": pre_imported,
       "files": {}}
for path in args["files"]:  # the warm-up run parses them all; a timed run, one
    before = set(sys.modules)
    t = time.perf_counter()
    result = parse(path)
    total_s = time.perf_counter() - t
    new = {m.split(".")[0] for m in set(sys.modules) - before}
    out["files"][path] = {
        "total_s": total_s,
        "serialize_s": spent[-1] if spent else 0.0,
        "import_errors": {str(k): str(v) for k, v in (result.import_errors or {}).items()},
        "dags": [d.dag_id for d in result.serialized_dags],
        "new_packages": sorted(m for m in new if not m.startswith(("airflow", "unusual_prefix"))),
    }
with open(args["out"], "w") as f:
    json.dump(out, f)
"""


def _env(workdir: Path) -> dict[str, str]:
    """Airflow on a throw-away home, as the DAG integrity test parses; bytecode cached."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_", "AIRFLOW__", "FLYWHEEL_K8S_"))
        and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow_home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{workdir / 'airflow.db'}",
            "FLYWHEEL_HOME": str(workdir / "flywheel_home"),
            "PYTHONPYCACHEPREFIX": str(workdir / "pycache"),
        }
    )
    spec = importlib.util.find_spec("flywheel")
    if spec is None or spec.origin is None:
        raise RuntimeError("the flywheel package is not importable")
    package_root = str(Path(spec.origin).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return env


def _probe(ctx: Context, files: list[Path], tag: str) -> dict[str, Any]:
    out = ctx.workdir / f"parse_{tag}.json"
    args = {
        "files": [str(p) for p in files],
        "reference": str(ctx.workdir / "reference_dag" / "reference.py"),
        "out": str(out),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=_env(ctx.workdir),
        cwd=ctx.workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"parse probe failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    for path, parsed in result["files"].items():
        if parsed["import_errors"] or len(parsed["dags"]) != 1:
            raise RuntimeError(f"{path} did not parse to one DAG: {parsed}")
    return result


def run(ctx: Context) -> list[Figure]:
    files = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    runs = 1 if ctx.quick else 5
    if ctx.quick:
        files = files[:1]
    reference = ctx.path("reference_dag") / "reference.py"
    reference.write_text(REFERENCE_DAG)
    ctx.path("airflow_home")
    ctx.path("flywheel_home")

    ctx.log("warm-up interpreter: caching bytecode")
    _probe(ctx, files, "warmup")
    figures = []
    for path in files:
        samples = []
        for i in range(runs):
            samples.append(_probe(ctx, [path], f"{path.stem}_{i}"))
        parsed = [s["files"][str(path)] for s in samples]
        total = median(p["total_s"] for p in parsed)
        serialize = median(p["serialize_s"] for p in parsed)
        baseline = median(s["baseline_s"] for s in samples)
        ctx.log(f"{path.name}: {total:.3f} s above a {baseline:.2f} s baseline")
        figures.append(
            Figure(
                name=f"parse {path.name}",
                value=total,
                unit="s",
                target=f"≤ {TARGET_S} s above baseline",
                met=total <= TARGET_S,
                baseline=baseline,
                baseline_name="import airflow.sdk + the file's airflow imports",
                detail={
                    "runs": runs,
                    "above_baseline_s": [round(p["total_s"], 4) for p in parsed],
                    "execute_s": round(total - serialize, 4),
                    "serialize_s": round(serialize, 4),
                    "baseline_s": [round(s["baseline_s"], 3) for s in samples],
                    "machinery_s": round(median(s["machinery_s"] for s in samples), 3),
                    "pre_imported": samples[0]["pre_imported"],
                    "new_packages": parsed[0]["new_packages"],
                    "dags": parsed[0]["dags"],
                },
                note="the processor's per-file work (_parse_file: execute the file, then "
                "serialize its DAG), timed after the baseline imports in the same interpreter",
            )
        )
    return figures
