"""Start, check and stop Flywheel's embedded stack: Airflow 3 components, an MLflow server and
the model server (`flywheel.serving`, the current @champion over REST).

Each server runs as its own process group (`start_new_session=True`): its PID, which is also
its group id, is recorded in `<home>/run/<name>.pid` and its output goes to
`<home>/logs/<name>.log`. Stopping signals the recorded groups and every descendant found
under them, so nothing is orphaned (killing only `airflow standalone`'s PID leaves its
children running and the port bound).

    python -m flywheel.stack up | down | status

This module only spawns processes; it imports neither Airflow nor MLflow (nor the model
server's FastAPI).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import psutil
import requests

from flywheel.paths import REPO_ROOT, Home

ADMIN_USER = "admin"
HOST = "127.0.0.1"  # loopback only: the embedded stack is a one-machine, one-user default
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
MLFLOW = "mlflow"
SERVE = "model-server"
COMPONENTS = (*AIRFLOW_COMPONENTS, MLFLOW, SERVE)
# Stopped after the rest: tasks being stopped still report their end to its execution API.
_STOP_LAST = ("api-server",)


class StackError(RuntimeError):
    """A component failed to start, did not become healthy, or its port is taken."""


@dataclass(frozen=True)
class Stack:
    """Where a started stack lives and how to reach it."""

    home: Path
    airflow_port: int
    mlflow_port: int | None
    dags_folder: Path
    password: str
    username: str = ADMIN_USER
    serve_port: int | None = None  # the model server; None: not started

    @property
    def airflow_url(self) -> str:
        return f"http://{HOST}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str | None:
        return None if self.mlflow_port is None else f"http://{HOST}:{self.mlflow_port}"

    @property
    def serve_url(self) -> str | None:
        """The model server: `GET /health`, `POST /predict` (see flywheel.serving)."""
        return None if self.serve_port is None else f"http://{HOST}:{self.serve_port}"


# --- layout and environment -----------------------------------------------------------------


def default_home() -> Path:
    return Home.from_env().root


def airflow_home(home: Path) -> Path:
    return home / "airflow"


def _run_dir(home: Path) -> Path:
    return home / "run"


def _log_path(home: Path, name: str) -> Path:
    return home / "logs" / f"{name}.log"


def airflow_env(
    home: Path, port: int, dags_folder: Path, *, mlflow_uri: str | None = None
) -> dict[str, str]:
    """Environment for every Airflow process of the embedded stack (merged over os.environ)."""
    af_home = airflow_home(home)
    env = {
        "AIRFLOW_HOME": str(af_home),
        # One-machine default. SQLite is fine for LocalExecutor in Airflow 3 (standalone uses it).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{af_home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor pre-forks `parallelism` workers: 32 by default costs ~1.1 GiB idle.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        # The repo's plugins (the task -> MLflow run link), wherever the DAGs come from.
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        # The demo and tests drive DAGs end to end, including Asset-triggered consumers that
        # nobody unpauses by hand: paused-at-creation would make them silently never run.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{HOST}:{port}",
        # Task workers reach the execution API here; left unset they try :8080 and every task
        # fails at once with nothing but "finished with state failed" in the scheduler log.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{port}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        # New DAG files show up within seconds instead of the default 5 minutes; changed files
        # are re-parsed every 10 s (default 30) without burning the 2 cores on parsing.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        # Tasks find Flywheel's state and the tracking server through these.
        "FLYWHEEL_HOME": str(home),
        # The embedded stack replays 2013 in simulated time: batches start ingestion when
        # they land. A live monthly cron would start a run for a month that never lands.
        "FLYWHEEL_INGEST_CRON": os.environ.get("FLYWHEEL_INGEST_CRON", "none"),
        # Monitoring follows the scored months, not the wall clock, for the same reason.
        "FLYWHEEL_MONITOR_CRON": os.environ.get("FLYWHEEL_MONITOR_CRON", "none"),
        # Subprocesses started by tasks (e.g. compute=local training) use this venv.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    tracking_uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def mlflow_command(home: Path, port: int) -> list[str]:
    store = home / "mlflow"
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", HOST,
        "--port", str(port),
        "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
        # Clients upload artifacts through the server (mlflow-artifacts:/), so a client never
        # needs to see this folder's path.
        "--artifacts-destination", str(store / "artifacts"),
        "--workers", "1",  # each worker costs ~350 MiB; one is plenty for one user
    ]  # fmt: skip


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "flywheel.serving", "--host", HOST, "--port", str(port)]


def serve_env(home: Path, mlflow_uri: str | None) -> dict[str, str]:
    """The model server reads the stack's home and registry (merged over os.environ)."""
    env = {"FLYWHEEL_HOME": str(home)}
    tracking_uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def ensure_admin_password(af_home: Path) -> str:
    """The admin password: $FLYWHEEL_ADMIN_PASSWORD, else the one generated on first start.

    SimpleAuthManager reads `simple_auth_manager_passwords.json.generated` and only generates
    passwords for users missing from it, so writing the file before start sets the password.
    """
    stored = _stored_passwords(af_home)
    password = os.environ.get("FLYWHEEL_ADMIN_PASSWORD") or stored.get(ADMIN_USER)
    if not password:
        password = secrets.token_urlsafe(12)
    if stored.get(ADMIN_USER) != password:
        af_home.mkdir(parents=True, exist_ok=True)
        path = _passwords_file(af_home)
        path.write_text(json.dumps({**stored, ADMIN_USER: password}) + "\n")
        path.chmod(0o600)
    return password


def _passwords_file(af_home: Path) -> Path:
    return af_home / "simple_auth_manager_passwords.json.generated"


def _stored_passwords(af_home: Path) -> dict[str, str]:
    path = _passwords_file(af_home)
    stored: dict[str, str] = json.loads(path.read_text() or "{}") if path.exists() else {}
    return stored


# --- ports and processes ----------------------------------------------------------------------


def free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct ports nobody listens on right now (the OS picks them).

    All sockets stay open until every port is picked, so the ports differ; another process
    could still take one before the server binds it, which tests accept.
    """
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def port_is_free(port: int, host: str = HOST) -> bool:
    """Nobody listens on `port`. Like a server, ignore connections left in TIME_WAIT."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _read_pid(home: Path, name: str) -> int | None:
    path = _run_dir(home) / f"{name}.pid"
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies of our own children excepted)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(home: Path) -> dict[str, int]:
    """Recorded components whose process group is still alive: name -> group id."""
    alive = {}
    for name in COMPONENTS:
        pid = _read_pid(home, name)
        if pid is not None and _group_alive(pid):
            alive[name] = pid
    return alive


def _spawn(home: Path, name: str, argv: list[str], env: Mapping[str, str]) -> int:
    log = _log_path(home, name)
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: one killpg reaches all its children
        )
    (_run_dir(home) / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def log_tail(home: Path, name: str, lines: int = 40) -> str:
    try:
        text = _log_path(home, name).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- health -----------------------------------------------------------------------------------


def _get_json(url: str) -> dict[str, object] | None:
    try:
        resp = requests.get(url, timeout=3)
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None
    try:
        body = resp.json()
    except ValueError:
        return {"status": resp.text.strip()}
    return body if isinstance(body, dict) else {"status": body}


def airflow_health(port: int) -> dict[str, str]:
    """Component -> status ('healthy', 'unhealthy', ...) from /api/v2/monitor/health.

    Empty when the API server does not answer yet.
    """
    body = _get_json(f"http://{HOST}:{port}/api/v2/monitor/health") or {}
    return {name: str(info.get("status")) for name, info in body.items() if isinstance(info, dict)}


def mlflow_healthy(port: int) -> bool:
    return _get_json(f"http://{HOST}:{port}/health") is not None


def serve_health(port: int) -> dict[str, object] | None:
    """The model server's /health (status ok or no_champion, version), None if no answer."""
    return _get_json(f"http://{HOST}:{port}/health")


# Health keys of the components this module starts (the API server answers for itself).
_HEALTH_KEYS = {
    "scheduler": "scheduler",
    "triggerer": "triggerer",
    "dag_processor": "dag-processor",
}


def _unhealthy_airflow(port: int) -> list[str]:
    """Components not reported healthy yet; all of them while the API server does not answer."""
    health = airflow_health(port)
    if health.get("metadatabase") != "healthy":
        return ["api-server"]
    return [name for key, name in _HEALTH_KEYS.items() if health.get(key) != "healthy"]


def wait_healthy(stack: Stack, timeout: float = 180.0) -> None:
    """Block until every component answers healthy; raise StackError with log tails if not."""
    deadline = time.monotonic() + timeout
    names = _wanted(stack.mlflow_port, stack.serve_port)
    while True:
        alive = running(stack.home)
        dead = [name for name in names if name not in alive]
        if dead:
            raise StackError(_report(stack.home, dead, "exited during startup"))
        slow = _unhealthy_airflow(stack.airflow_port)
        if stack.mlflow_port is not None and not mlflow_healthy(stack.mlflow_port):
            slow.append(MLFLOW)
        if stack.serve_port is not None and serve_health(stack.serve_port) is None:
            slow.append(SERVE)
        if not slow:
            return
        if time.monotonic() > deadline:
            raise StackError(_report(stack.home, slow, f"not healthy after {timeout:.0f} s"))
        time.sleep(1.0)


def _wanted(mlflow_port: int | None, serve_port: int | None) -> list[str]:
    return [
        *AIRFLOW_COMPONENTS,
        *([MLFLOW] if mlflow_port is not None else []),
        *([SERVE] if serve_port is not None else []),
    ]


def _report(home: Path, names: Iterable[str], what: str) -> str:
    parts = [f"{', '.join(names)} {what}."]
    for name in names:
        parts.append(f"--- last lines of {_log_path(home, name)}:\n{log_tail(home, name)}")
    return "\n".join(parts)


# --- start and stop ---------------------------------------------------------------------------


def _state_file(home: Path) -> Path:
    return _run_dir(home) / "stack.json"


def read_stack(home: Path | None = None) -> Stack | None:
    """The stack recorded by the last `start` under `home`, if any (running or not)."""
    home = (home or default_home()).resolve()
    try:
        raw = json.loads(_state_file(home).read_text())
    except FileNotFoundError:
        return None
    return Stack(
        home=home,
        airflow_port=int(raw["airflow_port"]),
        mlflow_port=None if raw["mlflow_port"] is None else int(raw["mlflow_port"]),
        dags_folder=Path(raw["dags_folder"]),
        password=_stored_passwords(airflow_home(home)).get(ADMIN_USER, ""),
        # Absent from state files written before the model server was part of the stack.
        serve_port=None if raw.get("serve_port") is None else int(raw["serve_port"]),
    )


def start(
    home: Path | None = None,
    *,
    airflow_port: int = 8080,
    mlflow_port: int | None = 5000,
    serve_port: int | None = 0,
    dags_folder: Path | None = None,
    timeout: float = 180.0,
) -> Stack:
    """Start whatever part of the stack is not running under `home` and wait until healthy.

    Idempotent: if the stack already runs, its recorded ports win and nothing is restarted.
    `mlflow_port=None` starts Airflow alone. The model server listens on `serve_port`; the
    default 0 picks a free port (callers that need a fixed one pass it: `up` passes
    $FLYWHEEL_SERVE_PORT or 5005), None leaves it out. It starts fine before any model exists
    (its /health says `no_champion`); `Stack.serve_url` is its address. On failure
    everything under `home` is stopped and StackError carries the tail of the failing
    component's log.
    """
    home = (home or default_home()).resolve()
    alive = running(home)
    previous = read_stack(home)
    if alive and previous is not None:  # running servers keep their ports and dags folder
        airflow_port, mlflow_port = previous.airflow_port, previous.mlflow_port
        serve_port = previous.serve_port
        dags_folder = previous.dags_folder
    elif dags_folder is None:
        dags_folder = previous.dags_folder if previous else REPO_ROOT / "dags"
    dags_folder = dags_folder.resolve()
    if serve_port == 0:  # any free port, but not one the caller just picked for the others
        serve_port = next(p for p in free_ports(3) if p not in (airflow_port, mlflow_port))
    for sub in ("logs", "run", "airflow", "mlflow/artifacts"):
        (home / sub).mkdir(parents=True, exist_ok=True)

    stack = Stack(
        home=home,
        airflow_port=airflow_port,
        mlflow_port=mlflow_port,
        dags_folder=dags_folder,
        password=ensure_admin_password(airflow_home(home)),
        serve_port=serve_port,
    )
    wanted = _wanted(mlflow_port, serve_port)
    missing = [name for name in wanted if name not in alive]
    if not missing:
        wait_healthy(stack, timeout)
        return stack

    _check_ports(stack, missing)
    # Ports and dags folder only: the password stays in Airflow's own 0600 file.
    state = {
        "airflow_port": airflow_port,
        "mlflow_port": mlflow_port,
        "serve_port": serve_port,
        "dags_folder": str(dags_folder),
    }
    _state_file(home).write_text(json.dumps(state, indent=2) + "\n")
    env = airflow_env(home, airflow_port, dags_folder, mlflow_uri=stack.mlflow_url)
    try:
        if MLFLOW in missing and mlflow_port is not None:
            # MLflow first: it does not depend on Airflow and takes ~15 s to come up.
            # Job execution (GenAI jobs) forks seven huey consumers that Flywheel never uses.
            _spawn(home, MLFLOW, mlflow_command(home, mlflow_port),
                   {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # fmt: skip
        if SERVE in missing and serve_port is not None:
            # Needs neither Airflow nor a model: it polls the registry until a champion shows.
            _spawn(home, SERVE, serve_command(serve_port), serve_env(home, stack.mlflow_url))
        if any(name in missing for name in AIRFLOW_COMPONENTS):
            _migrate(home, env, timeout=max(timeout, 300.0))
        for name in AIRFLOW_COMPONENTS:
            if name in missing:
                _spawn(home, name, _airflow_command(name), env)
        wait_healthy(stack, timeout)
    except BaseException:
        stop(home)
        raise
    return stack


def _airflow_command(name: str) -> list[str]:
    # The scheduler forks the LocalExecutor's workers, which fork every task: started with
    # the ML libraries imported, it hands them to every task (flywheel.preload).
    runner = "flywheel.preload" if name == "scheduler" else "airflow"
    argv = [sys.executable, "-m", runner, name]
    if name in ("scheduler", "triggerer"):
        # Their log servers bind 0.0.0.0 on fixed ports (8793/8794), so two stacks collide;
        # task logs are local files, which the API server reads directly anyway.
        argv.append("--skip-serve-logs")
    return argv


def _check_ports(stack: Stack, missing: list[str]) -> None:
    ports = {
        "api-server": (stack.airflow_port, "FLYWHEEL_AIRFLOW_PORT"),
        MLFLOW: (stack.mlflow_port, "FLYWHEEL_MLFLOW_PORT"),
        SERVE: (stack.serve_port, "FLYWHEEL_SERVE_PORT"),
    }
    for name, (port, env_var) in ports.items():
        if name in missing and port is not None and not port_is_free(port):
            raise StackError(f"port {port} for {name} is taken by another process; set {env_var}")


def _migrate(home: Path, env: Mapping[str, str], timeout: float) -> None:
    """`airflow db migrate`, skipped when this Airflow version already migrated the DB (~10 s)."""
    stamp = airflow_home(home) / f".migrated-{version('apache-airflow')}"
    if stamp.exists():
        return
    log = _log_path(home, "db-migrate")
    with log.open("ab") as out:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env={**os.environ, **env},
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StackError(_report(home, ["db-migrate"], f"took over {timeout:.0f} s")) from None
    if proc.returncode != 0:
        raise StackError(_report(home, ["db-migrate"], f"failed with exit code {proc.returncode}"))
    stamp.touch()


def _members(pgid: int) -> list[psutil.Process]:
    """Every process of the group plus all their descendants.

    Airflow 3 puts each task process in a group of its own (so the supervisor can killpg it),
    which a signal to the scheduler's group does not reach: collect descendants too, before
    anything dies and they get reparented out of reach.
    """
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.Error, OSError):  # gone meanwhile, or not ours to inspect
            continue
    return list(found.values())


def processes(home: Path) -> list[psutil.Process]:
    """Every live process of the stack under `home`, task processes included."""
    return [proc for pgid in running(home).values() for proc in _members(pgid)]


def stop(home: Path | None = None, timeout: float = 30.0) -> list[str]:
    """SIGTERM every recorded process group (API server last), SIGKILL what outlives `timeout`.

    Returns the names of the components that were running. Removes the PID files.
    """
    home = (home or default_home()).resolve()
    alive = running(home)
    first = [name for name in alive if name not in _STOP_LAST]
    last = [name for name in alive if name in _STOP_LAST]
    for batch in (first, last):
        procs = [proc for name in batch for proc in _members(alive[name])]
        # Every member, not just each group: the scheduler otherwise waits for running
        # tasks to finish, and task processes live in groups of their own.
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        for name in batch:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(alive[name], signal.SIGTERM)
        _, survivors = psutil.wait_procs(procs, timeout=timeout)
        for proc in survivors:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for name in batch:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(alive[name], signal.SIGKILL)
        psutil.wait_procs(survivors, timeout=5)
        for name in batch:
            _group_alive(alive[name])  # reap our own child, if it was one
    for name in COMPONENTS:
        (_run_dir(home) / f"{name}.pid").unlink(missing_ok=True)
    return list(alive)


# --- CLI --------------------------------------------------------------------------------------


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flywheel.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--home", type=Path, default=None, help="default: $FLYWHEEL_HOME or .flywheel"
    )
    parser.add_argument("--dags-folder", type=Path, default=None, help="default: <repo>/dags")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health")
    args = parser.parse_args(argv)
    home = (args.home or default_home()).resolve()

    if args.command == "up":
        began = time.monotonic()
        try:
            stack = start(
                home,
                airflow_port=_env_port("FLYWHEEL_AIRFLOW_PORT", 8080),
                mlflow_port=_env_port("FLYWHEEL_MLFLOW_PORT", 5000),
                serve_port=_env_port("FLYWHEEL_SERVE_PORT", 5005),
                dags_folder=args.dags_folder,
                timeout=args.timeout,
            )
        except StackError as exc:
            print(f"flywheel stack failed to start:\n{exc}", file=sys.stderr)
            return 1
        print(f"Flywheel stack up in {time.monotonic() - began:.0f} s (home {home})")
        print(f"  Airflow UI  {stack.airflow_url}   login {stack.username} / {stack.password}")
        print(f"  MLflow UI   {stack.mlflow_url}")
        print(f"  Model API   {stack.serve_url}   POST /predict, GET /health")
        print(f"  logs        {home / 'logs'}")
        return 0

    if args.command == "down":
        stopped = stop(home)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0

    alive = running(home)
    recorded = read_stack(home)
    for name in COMPONENTS:
        state = f"running (pid {alive[name]})" if name in alive else "stopped"
        print(f"{name:14} {state}")
    if recorded is not None and alive:
        print(f"airflow health {airflow_health(recorded.airflow_port) or 'no answer'}")
        print(f"Airflow UI     {recorded.airflow_url}   login {recorded.username}")
        print(f"MLflow UI      {recorded.mlflow_url}")
        if recorded.serve_port is not None:
            print(f"Model API      {recorded.serve_url}   {_serve_line(recorded.serve_port)}")
    return 0 if alive else 1


def _serve_line(port: int) -> str:
    health = serve_health(port)
    if health is None:
        return "no answer"
    if health.get("status") == "ok":
        return f"serving {health.get('model')} v{health.get('version')}"
    return f"{health.get('status')} ({health.get('model')})"


if __name__ == "__main__":
    sys.exit(main())
