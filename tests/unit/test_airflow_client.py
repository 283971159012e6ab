"""AirflowClient's own logic around the API's answers (the API itself is exercised by the
integration tests against a real API server)."""

from __future__ import annotations

import pytest
import requests

from flywheel.airflow_client import AirflowClient, AirflowError

NULL_START = (
    "1 validation error for AssetEventResponse\ncreated_dagruns.0.start_date\n"
    "  Input should be a valid datetime"
)


def _response(status: int, body: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body.encode()
    return resp


def _client(answers: list[requests.Response], calls: list[str]) -> AirflowClient:
    client = AirflowClient("http://127.0.0.1:9", "admin", "admin")

    def request(method: str, path: str, **kwargs: object) -> requests.Response:
        calls.append(f"{method} {path}")
        return answers.pop(0) if len(answers) > 1 else answers[0]

    client._request = request  # type: ignore[method-assign]
    return client


def test_asset_events_asks_again_while_a_created_run_is_queued(monkeypatch):
    monkeypatch.setattr("flywheel.airflow_client.time.sleep", lambda s: None)
    calls: list[str] = []
    ok = _response(200, '{"asset_events": [{"id": 1}], "total_entries": 1}')
    client = _client([_response(500, NULL_START), _response(500, NULL_START), ok], calls)
    assert client.asset_events(source_dag_id="ingest_features") == [{"id": 1}]
    assert calls == ["GET /assets/events"] * 3


def test_asset_events_gives_up_with_the_servers_answer():
    calls: list[str] = []
    client = _client([_response(500, NULL_START)], calls)
    with pytest.raises(AirflowError, match="GET /assets/events: HTTP 500") as err:
        client.asset_events(queued_wait=0.0)
    assert "start_date" in str(err.value)  # the server's reason, for whoever reads it
    assert calls == ["GET /assets/events"]


def test_other_errors_are_not_retried():
    calls: list[str] = []
    client = _client([_response(403, '{"detail": "Forbidden"}')], calls)
    with pytest.raises(AirflowError, match="HTTP 403"):
        client.asset_events()
    assert calls == ["GET /assets/events"]
