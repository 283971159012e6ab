"""Shared fixtures: an isolated FLYWHEEL_HOME and a real Airflow (+ MLflow) stack on free ports.

A test module picks the DAGs the stack serves by overriding the `airflow_dags_folder`
fixture (module scope); the default is the repository's `dags/`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flywheel import stack
from flywheel.airflow_client import AirflowClient
from flywheel.paths import REPO_ROOT


@pytest.fixture
def flywheel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty FLYWHEEL_HOME for this test, exported so Flywheel code under test uses it."""
    home = tmp_path / "flywheel_home"
    home.mkdir()
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    return home


@dataclass(frozen=True)
class StackHandle:
    """A running stack: where it lives, how to reach it, and a logged-in API client."""

    stack: stack.Stack
    client: AirflowClient
    startup_s: float

    @property
    def home(self) -> Path:
        return self.stack.home

    @property
    def airflow_url(self) -> str:
        return self.stack.airflow_url

    @property
    def mlflow_url(self) -> str:
        assert self.stack.mlflow_url is not None
        return self.stack.mlflow_url


@pytest.fixture(scope="module")
def airflow_dags_folder() -> Path:
    """The DAGs folder the module's stack serves; override in a test module to change it."""
    return REPO_ROOT / "dags"


@pytest.fixture(scope="module")
def airflow_stack(
    airflow_dags_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackHandle]:
    """Airflow (api-server, scheduler, dag-processor, triggerer) and MLflow on free loopback
    ports, with a FLYWHEEL_HOME of their own; stopped by process group whatever happens.

    FLYWHEEL_HOME and MLFLOW_TRACKING_URI are exported to the test process too, so a test
    reads the same state and tracking server as the stack's tasks.
    """
    home = tmp_path_factory.mktemp("stack") / "flywheel_home"
    began = time.monotonic()
    airflow_port, mlflow_port = stack.free_ports(2)
    try:
        running = stack.start(
            home,
            airflow_port=airflow_port,
            mlflow_port=mlflow_port,
            dags_folder=airflow_dags_folder,
        )
        handle = StackHandle(
            stack=running,
            client=AirflowClient(running.airflow_url, running.username, running.password),
            startup_s=time.monotonic() - began,
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FLYWHEEL_HOME", str(home))
            patch.setenv("MLFLOW_TRACKING_URI", handle.mlflow_url)
            yield handle
    finally:
        stack.stop(home)
