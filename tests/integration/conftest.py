"""Integration fixtures: a real MLflow tracking server alone (no Airflow), on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flywheel import stack


@dataclass(frozen=True)
class MlflowServer:
    url: str
    port: int
    home: Path  # SQLite store and artifacts under home/mlflow/; its log at home/mlflow.log


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server` (SQLite + local artifacts, served through the server) in its own
    process group; the whole group is killed afterwards, whatever happens."""
    home = tmp_path_factory.mktemp("mlflow_server")
    (home / "mlflow" / "artifacts").mkdir(parents=True)
    port = stack.free_port()
    log = home / "mlflow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            stack.mlflow_command(home, port),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: one killpg reaches its workers too
        )
    try:
        deadline = time.monotonic() + 180
        while not stack.mlflow_healthy(port):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 180 s:\n{_tail(log)}")
            time.sleep(0.5)
        yield MlflowServer(url=f"http://{stack.HOST}:{port}", port=port, home=home)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # a throwaway store: nothing worth a longer grace period
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group, if any
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
