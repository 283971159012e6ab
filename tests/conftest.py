"""Shared fixtures: an isolated FLYWHEEL_HOME and a real Airflow (+ MLflow) stack on free ports.

A test module picks the DAGs the stack serves by overriding the `airflow_dags_folder`
fixture (module scope); the default is the repository's `dags/`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel import stack
from flywheel.airflow_client import AirflowClient
from flywheel.config import DEFAULT_CONFIG, load_config
from flywheel.paths import REPO_ROOT


def pytest_configure(config: pytest.Config) -> None:
    # A killed run (CI cancel, `kill <pytest>`) must still stop its stacks: turn SIGTERM into
    # KeyboardInterrupt, on which pytest runs the fixtures' teardown.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


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


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both_maps else value
    return out


@pytest.fixture(scope="module")
def stack_config_overrides() -> dict[str, Any]:
    """Config keys a test module changes for its stack (deep-merged over the default)."""
    return {}


@pytest.fixture(scope="module")
def airflow_stack(
    airflow_dags_folder: Path,
    stack_config_overrides: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackHandle]:
    """Airflow (api-server, scheduler, dag-processor, triggerer) and MLflow on free loopback
    ports, with a FLYWHEEL_HOME of their own; stopped by process group whatever happens.

    FLYWHEEL_HOME and MLFLOW_TRACKING_URI are exported to the test process too, so a test
    reads the same state and tracking server as the stack's tasks.
    """
    home = tmp_path_factory.mktemp("stack") / "flywheel_home"
    config = None
    if stack_config_overrides:
        data = yaml.safe_load(DEFAULT_CONFIG.read_text())
        config = home.parent / "config.yaml"
        config.write_text(yaml.safe_dump(_merged(data, stack_config_overrides)))
        load_config(config)  # a bad override fails here, not in every task
    began = time.monotonic()
    airflow_port, mlflow_port = stack.free_ports(2)
    patch = pytest.MonkeyPatch()
    if config:
        patch.setenv("FLYWHEEL_CONFIG", str(config))  # before start: the stack inherits it
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
        patch.setenv("FLYWHEEL_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", handle.mlflow_url)
        yield handle
    finally:
        stack.stop(home)
        patch.undo()
