"""A small client for Airflow 3's public REST API (v2), enough to drive DAGs end to end.

Endpoint shapes follow the installed `airflow.api_fastapi` source (3.3): JWTs come from
`POST /auth/token`; `POST /api/v2/dags/{id}/dagRuns` requires `logical_date` (null allowed);
logs come back as structured events from `.../taskInstances/{task}/logs/{try}`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import requests

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})

JSON = dict[str, Any]


class AirflowError(RuntimeError):
    """The API answered with an error, or something did not happen in time."""


class DagRunFailed(AirflowError):
    """A DAG run ended in `failed`; carries the failed task ids and their log tails."""

    def __init__(self, dag_id: str, run_id: str, failed_tasks: list[str], logs: str) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.failed_tasks = failed_tasks
        self.logs = logs
        super().__init__(
            f"DAG run {dag_id}/{run_id} failed; failed tasks: {', '.join(failed_tasks) or 'none'}"
            f"\n{logs}"
        )


class AirflowClient:
    """Authenticated calls to one Airflow API server (SimpleAuthManager or any JWT login)."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._timeout = timeout
        self._session = requests.Session()

    # --- plumbing -----------------------------------------------------------------------------

    def login(self) -> None:
        resp = self._session.post(
            f"{self.base_url}/auth/token", json=self._credentials, timeout=self._timeout
        )
        if resp.status_code != 201:
            raise AirflowError(f"login failed: HTTP {resp.status_code} {resp.text[:300]}")
        token = resp.json()["access_token"]
        self._session.headers["Authorization"] = f"Bearer {token}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        if "Authorization" not in self._session.headers:
            self.login()
        url = f"{self.base_url}/api/v2{path}"
        resp = self._session.request(method, url, timeout=self._timeout, **kwargs)
        if resp.status_code == 401:  # token expired: log in again, once
            self.login()
            resp = self._session.request(method, url, timeout=self._timeout, **kwargs)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> JSON:
        return _body(self._request(method, path, **kwargs), method, path)

    def _all(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[JSON]:
        """Every item of a list endpoint: the server caps a page at [api] maximum_page_limit."""
        items: list[JSON] = []
        while True:
            page = self._json(
                "GET", path, params={**(params or {}), "limit": 100, "offset": len(items)}
            )
            items.extend(page[key])
            if not page[key] or len(items) >= (page.get("total_entries") or 0):
                return items

    # --- DAGs ---------------------------------------------------------------------------------

    def get_dag(self, dag_id: str) -> JSON | None:
        """The DAG as the API server knows it; None until the dag-processor registered it."""
        resp = self._request("GET", f"/dags/{dag_id}")
        if resp.status_code == 404:
            return None
        if not resp.ok:
            raise AirflowError(f"GET /dags/{dag_id}: HTTP {resp.status_code} {resp.text[:500]}")
        body: JSON = resp.json()
        return body

    def import_errors(self) -> list[JSON]:
        return self._all("/importErrors", "import_errors")

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0, poll: float = 2.0) -> JSON:
        """Wait until the dag-processor has parsed and registered `dag_id`.

        On timeout the error lists the current import errors, the usual reason.
        """
        deadline = time.monotonic() + timeout
        while (dag := self.get_dag(dag_id)) is None:
            if time.monotonic() > deadline:
                errors = "\n".join(
                    f"{err['filename']}:\n{err['stack_trace']}" for err in self.import_errors()
                )
                raise AirflowError(
                    f"DAG {dag_id!r} not registered after {timeout:.0f} s; "
                    f"import errors: {errors or 'none'}"
                )
            time.sleep(poll)
        return dag

    def set_paused(self, dag_id: str, paused: bool) -> JSON:
        return self._json(
            "PATCH",
            f"/dags/{dag_id}",
            params={"update_mask": "is_paused"},
            json={"is_paused": paused},
        )

    def unpause(self, dag_id: str) -> JSON:
        return self.set_paused(dag_id, False)

    # --- runs ---------------------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        logical_date: datetime | None = None,
        run_id: str | None = None,
        note: str | None = None,
    ) -> JSON:
        """Create a manual run and return it (its id is `["dag_run_id"]`).

        `logical_date` must be timezone-aware; None makes a run without a data interval.
        """
        if logical_date is not None and logical_date.tzinfo is None:
            raise ValueError("logical_date must be timezone-aware")
        body: JSON = {
            "logical_date": logical_date.isoformat() if logical_date else None,
            "conf": conf or {},
        }
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self._json("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def get_run(self, dag_id: str, run_id: str) -> JSON:
        return self._json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def list_runs(self, dag_id: str, *, state: str | None = None) -> list[JSON]:
        """Runs of `dag_id` (optionally only those in `state`), oldest first."""
        params: dict[str, Any] = {"order_by": "run_after"}
        if state:
            params["state"] = state
        return self._all(f"/dags/{dag_id}/dagRuns", "dag_runs", params)

    def task_instances(self, dag_id: str, run_id: str) -> list[JSON]:
        return self._all(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> str:
        """The task's log as text, one line per structured event (exceptions included)."""
        resp = self._request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        if not resp.ok:
            return f"(log unavailable: HTTP {resp.status_code} {resp.text[:200]})"
        return "\n".join(_format_event(event) for event in resp.json().get("content", []))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (its return value by default), deserialized."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._json("GET", path, params={"deserialize": "true"})["value"]

    def task_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """A task's extra links (name -> URL), as the UI shows them."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        links: dict[str, str | None] = self._json("GET", path)["extra_links"]
        return links

    def asset_events(
        self, *, source_dag_id: str | None = None, queued_wait: float = 60.0
    ) -> list[JSON]:
        """Asset events, oldest first, optionally only those a DAG produced.

        Airflow 3.3's endpoint answers 500 while a run that an event created is queued and
        not started (its null start_date fails the response model: apache/airflow#71360,
        fixed upstream by #71379). Runs start within seconds, so this asks again, for up to
        `queued_wait` seconds, before it gives up with the server's answer."""
        params: dict[str, Any] = {"limit": 100, "order_by": "timestamp"}
        if source_dag_id:
            params["source_dag_id"] = source_dag_id
        deadline = time.monotonic() + queued_wait
        while (resp := self._request("GET", "/assets/events", params=params)).status_code == 500:
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
        events: list[JSON] = _body(resp, "GET", "/assets/events")["asset_events"]
        return events

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 600.0, poll: float = 2.0
    ) -> JSON:
        """Wait for the run to end; return it on success, raise DagRunFailed on failure."""
        deadline = time.monotonic() + timeout
        while (run := self.get_run(dag_id, run_id))["state"] not in TERMINAL_RUN_STATES:
            if time.monotonic() > deadline:
                states = {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
                raise AirflowError(
                    f"DAG run {dag_id}/{run_id} still {run['state']} after {timeout:.0f} s; "
                    f"tasks: {states}"
                )
            time.sleep(poll)
        if run["state"] == "success":
            return run
        failed = [
            ti for ti in self.task_instances(dag_id, run_id) if ti["state"] in FAILED_TASK_STATES
        ]
        logs = [
            f"--- {ti['task_id']} (try {ti['try_number']}) log tail:\n"
            + _tail(self.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], ti["map_index"]))
            for ti in failed
            if ti["state"] == "failed"
        ]
        raise DagRunFailed(dag_id, run_id, [ti["task_id"] for ti in failed], "\n".join(logs))

    def run_dag(
        self, dag_id: str, *, conf: dict[str, Any] | None = None,
        logical_date: datetime | None = None, timeout: float = 600.0,
    ) -> JSON:  # fmt: skip
        """Wait for registration, unpause, trigger and wait: one DAG run, end to end."""
        self.wait_for_dag(dag_id)
        self.unpause(dag_id)
        run = self.trigger(dag_id, conf=conf, logical_date=logical_date)
        return self.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout)


def _format_event(event: Any) -> str:
    if not isinstance(event, dict):
        return str(event)
    line = " ".join(
        str(part)
        for part in (event.get("timestamp"), event.get("level"), event.get("event"))
        if part
    )
    # Exceptions arrive as structured `error_detail` frames, not as a traceback string.
    for err in event.get("error_detail") or []:
        line += f"\n  {err.get('exc_type')}: {err.get('exc_value')}"
        for frame in (err.get("frames") or [])[-3:]:
            line += f"\n    {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}"
    return line


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _body(resp: requests.Response, method: str, path: str) -> JSON:
    """The response's JSON, or AirflowError naming the call and the server's answer."""
    if not resp.ok:
        raise AirflowError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:500]}")
    body: JSON = resp.json()
    return body
