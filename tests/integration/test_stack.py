"""The embedded stack for real: Airflow's components, MLflow and the model server start on
loopback ports, a DAG written here is parsed, unpaused, triggered over REST and run by the
real scheduler, a failing task is reported with its log, the model server answers before any
model exists, and stopping leaves no process, no process group and no bound port.

The tests share one stack (module scope) and run in file order: the last one stops it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import psutil
import pytest
import requests

from flywheel import stack
from flywheel.airflow_client import DagRunFailed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

SMOKE_DAGS = """
    from airflow.sdk import dag, task


    @dag(schedule=None)
    def flywheel_smoke():
        @task
        def hello() -> str:
            return "hello"

        hello()


    @dag(schedule=None)
    def flywheel_smoke_fails():
        @task
        def explode() -> None:
            raise ValueError("exploded on purpose")

        @task
        def never_runs() -> None:
            pass

        explode() >> never_runs()


    flywheel_smoke()
    flywheel_smoke_fails()
"""


@pytest.fixture(scope="module")
def airflow_dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dags")
    (folder / "smoke.py").write_text(textwrap.dedent(SMOKE_DAGS))
    return folder


def test_stack_is_healthy_on_loopback(airflow_stack):
    print(f"stack startup took {airflow_stack.startup_s:.1f} s")
    health = stack.airflow_health(airflow_stack.stack.airflow_port)
    assert set(health.values()) == {"healthy"}, health
    assert requests.get(f"{airflow_stack.mlflow_url}/health", timeout=5).ok
    assert airflow_stack.airflow_url.startswith("http://127.0.0.1:")
    assert set(stack.running(airflow_stack.home)) == set(stack.COMPONENTS)


def test_model_server_answers_before_any_model(airflow_stack):
    serve_url = airflow_stack.stack.serve_url
    assert serve_url is not None
    assert serve_url.startswith("http://127.0.0.1:")
    health = requests.get(f"{serve_url}/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "no_champion"
    assert health.json()["model"] == "flight_delay"
    assert health.json()["version"] is None
    assert stack.read_stack(airflow_stack.home) == airflow_stack.stack  # recorded, port included

    resp = requests.post(f"{serve_url}/predict", json={"rows": [{"flight_id": "x"}]}, timeout=5)
    assert resp.status_code == 422
    assert "missing keys" in resp.json()["detail"]


def test_dag_runs_through_the_scheduler(airflow_stack):
    client = airflow_stack.client
    dag = client.wait_for_dag("flywheel_smoke", timeout=90)
    assert dag["dag_id"] == "flywheel_smoke"
    client.unpause("flywheel_smoke")
    run = client.trigger("flywheel_smoke", conf={"why": "integration test"})

    finished = client.wait_for_run("flywheel_smoke", run["dag_run_id"], timeout=180)

    assert finished["state"] == "success"
    tasks = client.task_instances("flywheel_smoke", run["dag_run_id"])
    assert [(ti["task_id"], ti["state"]) for ti in tasks] == [("hello", "success")]
    assert run["dag_run_id"] in [r["dag_run_id"] for r in client.list_runs("flywheel_smoke")]


def test_failed_run_names_the_task_and_shows_its_log(airflow_stack):
    client = airflow_stack.client
    client.wait_for_dag("flywheel_smoke_fails", timeout=90)
    client.unpause("flywheel_smoke_fails")
    run = client.trigger("flywheel_smoke_fails")

    with pytest.raises(DagRunFailed) as failure:
        client.wait_for_run("flywheel_smoke_fails", run["dag_run_id"], timeout=180)

    assert sorted(failure.value.failed_tasks) == ["explode", "never_runs"]
    assert "ValueError: exploded on purpose" in failure.value.logs


def test_stop_leaves_no_process_and_frees_the_ports(airflow_stack):
    home = airflow_stack.home
    procs = stack.processes(home)
    assert len(procs) >= 6  # at least one per component, plus the LocalExecutor's workers
    groups = stack.running(home)

    stopped = stack.stop(home)

    assert set(stopped) == set(stack.COMPONENTS)
    for pgid in groups.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)  # the whole group is gone, model server's included
    assert [p.pid for p in procs if _alive(p)] == []
    assert stack.running(home) == {}
    assert _processes_started_for(home) == []
    assert stack.port_is_free(airflow_stack.stack.airflow_port)
    assert airflow_stack.stack.mlflow_port is not None
    assert stack.port_is_free(airflow_stack.stack.mlflow_port)
    assert airflow_stack.stack.serve_port is not None
    assert stack.port_is_free(airflow_stack.stack.serve_port)
    assert not list((home / "run").glob("*.pid"))


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _processes_started_for(home: Path) -> list[str]:
    """Any process anywhere started for this stack (its environment or command line names the
    stack's home), orphans reparented away from the recorded groups included."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            ours = proc.environ().get("FLYWHEEL_HOME") == str(home) or str(home) in cmdline
        except (psutil.Error, OSError):
            continue
        if ours and _alive(proc):
            found.append(f"{proc.pid} {cmdline}")
    return found
