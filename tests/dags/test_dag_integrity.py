"""Every DAG file parses cleanly, cheaply and by the rules of the house.

The DAG folder is parsed with Airflow's own `DagBag` in a fresh interpreter (one per test
session), so the checks on imports are not polluted by what other tests imported, and
Airflow reads a throw-away AIRFLOW_HOME configured before its first import. That
interpreter instruments the parse (SQL statements on any SQLAlchemy engine, connection
and variable look-ups, newly imported modules, wall time per file) and reports facts
about every DAG as JSON; the tests below judge them. A canary DAG file that breaks every
rule is parsed last, to prove the instruments see what they are meant to see.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY = (
    "pandas",
    "feast",
    "great_expectations",
    "mlflow",
    "evidently",
    "sklearn",
    "pyarrow",
    "scipy",
)
PARSE_BUDGET_S = 2.0

CANARY = '''"""A DAG file that breaks every parse-time rule."""
import pandas  # noqa: F401
from airflow import settings
from airflow.sdk import Variable, dag
from airflow.sdk.bases.hook import BaseHook
from sqlalchemy import text

for lookup, name in ((BaseHook.get_connection, "canary_conn"), (Variable.get, "canary_var")):
    try:
        lookup(name)
    except Exception:
        pass
with settings.Session() as session:
    session.execute(text("SELECT 1"))


@dag(schedule=None)
def canary():
    pass


canary()
'''

# Runs in a fresh interpreter: argv[1] is a JSON object with dag_files, canary, out.
PROBE = r"""
import copy, json, sys, time
args = json.loads(sys.argv[1])
HEAVY = set(args["heavy"])

def tops(names):
    return sorted({n.split(".")[0] for n in names})

t = time.perf_counter()
import airflow.sdk  # noqa: F401  (warm: the budget is for the DAG file's own work)
from airflow.dag_processing.dagbag import DagBag
warm_s = time.perf_counter() - t
heavy_before = sorted(HEAVY & set(tops(sys.modules)))

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

queries, lookups = [], []
event.listen(Engine, "before_cursor_execute",
             lambda conn, cursor, statement, *a: queries.append(" ".join(statement.split())[:200]))
event.listen(Pool, "connect", lambda *a: queries.append("<new DB connection>"))

def recorder(what):
    def record(*a, **k):
        lookups.append(f"{what}{tuple(str(x) for x in a if not isinstance(x, type))}")
        raise RuntimeError(f"{what} called while parsing a DAG file")
    return record

import airflow.sdk.execution_time.context as ctx
for fn in ("_get_connection", "_async_get_connection", "_get_variable", "_get_variable_keys"):
    setattr(ctx, fn, recorder(f"context.{fn}"))
from airflow.sdk.definitions.connection import Connection
from airflow.sdk.definitions.variable import Variable
from airflow.sdk.bases.hook import BaseHook
import airflow.models.connection as legacy_conn
import airflow.models.variable as legacy_var
for owner, attr, what in (
    (Connection, "get", "Connection.get"),
    (Connection, "async_get", "Connection.async_get"),
    (BaseHook, "get_connection", "BaseHook.get_connection"),
    (Variable, "get", "Variable.get"),
    (legacy_conn.Connection, "get_connection_from_secrets",
     "models.Connection.get_connection_from_secrets"),
    (legacy_var.Variable, "get", "models.Variable.get"),
):
    setattr(owner, attr, classmethod(recorder(what)))

DagBag(dag_folder=args["empty"], safe_mode=False)  # warm the importer machinery

def facts(dag):
    out = {
        "dag_id": dag.dag_id,
        "fileloc": dag.fileloc,
        "tags": sorted(dag.tags),
        "catchup": dag.catchup,
        "doc_md": dag.doc_md,
        "tasks": [{"task_id": t.task_id, "owner": t.owner, "retries": t.retries}
                  for t in dag.tasks],
        "params": sorted(dag.params),
        "month_param": {},
    }
    if "month" in dag.params:
        for value in args["month_values"]:
            params = copy.deepcopy(dag.params)
            try:
                params["month"] = value
                got = params.validate()["month"]
                resolved = dag.params.get_param("month").resolve(value=value)
                out["month_param"][json.dumps(value)] = {"ok": True, "value": got,
                                                         "resolved": resolved}
            except Exception as err:
                out["month_param"][json.dumps(value)] = {"ok": False,
                                                         "error": f"{type(err).__name__}: {err}"}
    return out

def parse(path):
    mods, nq, nl = set(sys.modules), len(queries), len(lookups)
    t = time.perf_counter()
    bag = DagBag(dag_folder=path, safe_mode=False)
    parse_s = time.perf_counter() - t
    new = tops(set(sys.modules) - mods)
    return {
        "parse_s": parse_s,
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "new_modules": new,
        "heavy": sorted(HEAVY & set(new)),
        "queries": queries[nq:],
        "lookups": lookups[nl:],
        "dags": [facts(d) for d in bag.dags.values()],
    }

report = {"warm_s": warm_s, "heavy_before": heavy_before, "files": {}}
for path in args["dag_files"]:
    report["files"][path] = parse(path)
report["canary"] = parse(args["canary"])  # last: it imports what the others must not
with open(args["out"], "w") as f:
    json.dump(report, f, default=str)
"""


def _subprocess_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp / "airflow_home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
            # A DAG that leaves catchup unset would inherit True and fail the catchup test.
            "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "True",
            "FLYWHEEL_HOME": str(tmp / "flywheel_home"),
        }
    )
    # The package must import in the child exactly as it does here (editable install,
    # PYTHONPATH or a conftest path): hand on the folder it was found in.
    spec = importlib.util.find_spec("flywheel")
    assert spec is not None, "the flywheel package is not importable"
    assert spec.origin is not None
    package_root = str(Path(spec.origin).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return env


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("dag_integrity")
    (tmp / "empty").mkdir()
    canary = tmp / "canary_dags" / "canary.py"
    canary.parent.mkdir()
    canary.write_text(CANARY)
    out = tmp / "report.json"
    args = {
        "dag_files": [str(p) for p in DAG_FILES],
        "canary": str(canary),
        "empty": str(tmp / "empty"),
        "out": str(out),
        "heavy": list(HEAVY),
        "month_values": ["2013-13", "2013-04", None, "2013-4", "13-04", "2013-00", 201304],
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=_subprocess_env(tmp),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, (
        f"the parse probe failed (rc {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _file(parsed: dict[str, Any], path: Path) -> dict[str, Any]:
    result: dict[str, Any] = parsed["files"][str(path)]
    return result


def _dag(parsed: dict[str, Any], path: Path) -> dict[str, Any]:
    dags = _file(parsed, path)["dags"]
    assert len(dags) == 1, f"{path.name}: expected one DAG per file, found {len(dags)}"
    dag: dict[str, Any] = dags[0]
    return dag


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _zero_retry_reason(path: Path, task_id: str) -> str | None:
    """The comment that justifies `retries=0` on a task: on the decorator or the operator
    call that sets it (or the line just above it)."""
    source = path.read_text()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }

    def sets_zero(call: ast.Call) -> bool:
        return any(
            k.arg == "retries" and isinstance(k.value, ast.Constant) and k.value.value == 0
            for k in call.keywords
        )

    def names_task(call: ast.Call) -> bool:
        return any(
            k.arg == "task_id"
            and isinstance(k.value, ast.Constant)
            and k.value.value == task_id.split(".")[-1]
            for k in call.keywords
        )

    spans: list[ast.expr] = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name == task_id.split(".")[-1]
        ):
            spans += [d for d in node.decorator_list if isinstance(d, ast.Call) and sets_zero(d)]
        elif isinstance(node, ast.Call) and names_task(node) and sets_zero(node):
            spans.append(node)
    for span in spans:
        for line in range(span.lineno - 1, (span.end_lineno or span.lineno) + 1):
            if comments.get(line):
                return comments[line]
    return None


# --- the probe itself ------------------------------------------------------------------------


def test_there_are_dag_files() -> None:
    assert DAGS / "ingest_features.py" in DAG_FILES


def test_the_instruments_see_a_rule_breaking_dag(parsed: dict[str, Any]) -> None:
    """Without this, the zero counts below could mean broken instruments."""
    canary = parsed["canary"]
    assert canary["import_errors"] == {}, canary["import_errors"]
    assert [d["dag_id"] for d in canary["dags"]] == ["canary"]
    assert any("SELECT 1" in q for q in canary["queries"]), canary["queries"]
    assert any("canary_conn" in c for c in canary["lookups"]), canary["lookups"]
    assert any("canary_var" in c for c in canary["lookups"]), canary["lookups"]
    assert "pandas" in canary["heavy"]
    # Heavy modules must not be loaded by Airflow itself, or "newly imported" proves nothing.
    assert parsed["heavy_before"] == []


# --- per DAG file ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_no_import_errors(parsed: dict[str, Any], path: Path) -> None:
    errors = _file(parsed, path)["import_errors"]
    assert errors == {}, "\n".join(f"{k}:\n{v}" for k, v in errors.items())


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_one_dag_named_after_its_file(parsed: dict[str, Any], path: Path) -> None:
    dag = _dag(parsed, path)
    assert dag["dag_id"] == path.stem
    assert Path(dag["fileloc"]).resolve() == path.resolve()


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_tagged_flywheel(parsed: dict[str, Any], path: Path) -> None:
    assert "flywheel" in _dag(parsed, path)["tags"]


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_every_task_has_a_real_owner(parsed: dict[str, Any], path: Path) -> None:
    dag = _dag(parsed, path)
    assert dag["tasks"], f"{path.name}: a DAG without tasks"
    for task in dag["tasks"]:
        assert task["owner"], task
        assert task["owner"] != "airflow", task


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_every_task_retries_unless_it_says_why_not(parsed: dict[str, Any], path: Path) -> None:
    for task in _dag(parsed, path)["tasks"]:
        if task["retries"] >= 1:
            continue
        assert task["retries"] == 0, task
        reason = _zero_retry_reason(path, task["task_id"])
        assert reason, (
            f"{path.name}: task {task['task_id']} has no retries and no comment saying why "
            "beside its explicit retries=0"
        )


def test_validate_batch_is_the_task_that_never_retries(parsed: dict[str, Any]) -> None:
    path = DAGS / "ingest_features.py"
    retries = {t["task_id"]: t["retries"] for t in _dag(parsed, path)["tasks"]}
    assert retries["validate_batch"] == 0
    assert _zero_retry_reason(path, "validate_batch")
    assert all(r >= 1 for t, r in retries.items() if t != "validate_batch"), retries


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_catchup_is_explicitly_off(parsed: dict[str, Any], path: Path) -> None:
    # The probe runs with catchup_by_default=True: only an explicit False gives False.
    assert _dag(parsed, path)["catchup"] is False


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_doc_md_is_the_module_docstring(parsed: dict[str, Any], path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    assert docstring, f"{path.name} has no module docstring"
    assert docstring.strip(), f"{path.name} has an empty module docstring"
    assert _dag(parsed, path)["doc_md"] == docstring


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_no_database_query_while_parsing(parsed: dict[str, Any], path: Path) -> None:
    assert _file(parsed, path)["queries"] == []


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_no_connection_or_variable_lookup_while_parsing(parsed: dict[str, Any], path: Path) -> None:
    assert _file(parsed, path)["lookups"] == []


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_no_heavy_import_while_parsing(parsed: dict[str, Any], path: Path) -> None:
    result = _file(parsed, path)
    assert result["heavy"] == [], f"newly imported by the parse: {result['new_modules']}"


@pytest.mark.parametrize("path", DAG_FILES, ids=_ids(DAG_FILES))
def test_parse_time_budget(parsed: dict[str, Any], path: Path) -> None:
    seconds = _file(parsed, path)["parse_s"]
    assert seconds < PARSE_BUDGET_S, f"{path.name} took {seconds:.2f} s to parse"


# --- ingest_features' params -------------------------------------------------------------------


@pytest.fixture(scope="module")
def month_param(parsed: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    dag = _dag(parsed, DAGS / "ingest_features.py")
    assert dag["params"] == ["month"]
    return {json.loads(k): v for k, v in dag["month_param"].items()}


@pytest.mark.parametrize("value", ["2013-04", None])
def test_month_param_accepts(month_param: dict[Any, dict[str, Any]], value: str | None) -> None:
    outcome = month_param[value]
    assert outcome["ok"], outcome
    assert outcome["value"] == value
    assert outcome["resolved"] == value


@pytest.mark.parametrize("value", ["2013-13", "2013-4", "13-04", "2013-00", 201304])
def test_month_param_rejects(month_param: dict[Any, dict[str, Any]], value: object) -> None:
    outcome = month_param[value]
    assert not outcome["ok"], outcome
    assert outcome["error"].startswith("ParamValidationError"), outcome
    assert "month" in outcome["error"]
