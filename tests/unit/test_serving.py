"""The model server's app with fakes for its two external reads (the registry and Feast's
online store) and tiny real sklearn pipelines as the champion versions."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flywheel import prediction_log, serving
from flywheel.config import Config, load_config
from flywheel.features import MISSING_KEY
from flywheel.models import build_model
from flywheel.paths import Home

KNOWN = [f"2013-01-01T05:00Z|UA|{n}|EWR" for n in range(1, 6)]


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config()


def _numeric(cfg: Config) -> list[str]:
    return [f for f in cfg.feature_names() if f not in cfg.training.categorical]


def _features(cfg: Config, seed: int) -> dict[str, float | None]:
    rng = np.random.default_rng(seed)
    values: dict[str, float | None] = {f: float(rng.normal()) for f in cfg.feature_names()}
    values["wind_gust"] = None  # a known entity can still miss a value
    return values


@pytest.fixture(scope="module")
def models(cfg: Config) -> dict[str, Any]:
    """Two small fitted pipelines (the project's hist_gbm one) that disagree."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({f: rng.normal(size=n) for f in _numeric(cfg)})
    for col in cfg.training.categorical:
        frame[col] = rng.choice(["EWR", "JFK", "LGA"], size=n)
    label = (frame["distance"] > 0).astype(int)
    out = {}
    for version, y in (("1", label), ("2", 1 - label)):
        model = build_model(
            cfg.task, "hist_gbm", {"max_iter": 10}, _numeric(cfg), cfg.training.categorical
        )
        out[version] = model.fit(frame, y)
    return out


class FakeRegistry:
    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models
        self.champion: str | None = None
        self.loads: list[str] = []
        self.fail = False

    def version(self) -> str | None:
        if self.fail:
            raise ConnectionError("registry down")
        return self.champion

    def load(self, version: str) -> Any:
        self.loads.append(version)
        return self.models[version]


class FakeStore:
    """Feast's online response shape: feature -> one value per row, None when unknown."""

    def __init__(self, cfg: Config) -> None:
        self.names = cfg.feature_names()
        self.known = {fid: _features(cfg, i) for i, fid in enumerate(KNOWN)}
        self.calls: list[list[dict[str, Any]]] = []
        self.fail = False

    def __call__(self, rows: list[dict[str, Any]]) -> Mapping[str, Sequence[Any]]:
        if self.fail:
            raise OSError("online.db is locked")
        self.calls.append(rows)
        found = [self.known.get(r["flight_id"], {}) for r in rows]
        out: dict[str, list[Any]] = {"flight_id": [r["flight_id"] for r in rows]}
        out.update({f: [values.get(f) for values in found] for f in self.names})
        return out


@pytest.fixture
def registry(models: dict[str, Any]) -> FakeRegistry:
    return FakeRegistry(models)


@pytest.fixture
def store(cfg: Config) -> FakeStore:
    return FakeStore(cfg)


@pytest.fixture
def server(
    cfg: Config, flywheel_home: Path, registry: FakeRegistry, store: FakeStore
) -> serving.ModelServer:
    return serving.ModelServer(
        cfg,
        Home(flywheel_home),
        champion_version=registry.version,
        load_model=registry.load,
        read_features=store,
    )


@pytest.fixture
def client(server: serving.ModelServer) -> Iterator[TestClient]:
    with TestClient(serving.create_app(server, background=False)) as c:
        yield c


def row(flight_id: str = KNOWN[0], **override: Any) -> dict[str, Any]:
    base = {"flight_id": flight_id, "origin": "EWR", "tailnum": "N14228", "carrier": "UA"}
    return {**base, "dest": "IAH", **override}


def test_entity_keys_come_from_the_config(cfg: Config, server: serving.ModelServer):
    assert (
        server.keys == cfg.entity_columns() == ["flight_id", "origin", "tailnum", "carrier", "dest"]
    )


def test_health_before_and_after_a_champion(client, server, registry):
    before = client.get("/health")
    assert before.status_code == 200
    assert before.json()["status"] == "no_champion"
    assert before.json()["version"] is None
    assert before.json()["model"] == "flight_delay"

    assert server.reload() is False  # the registry has no champion yet
    assert client.get("/health").json()["checked_at"] is not None
    registry.champion = "1"
    assert server.reload() is True

    after = client.get("/health").json()
    assert (after["status"], after["version"], after["error"]) == ("ok", "1", None)
    assert after["loaded_at"].startswith(str(pd.Timestamp.now(tz="UTC").year))


def test_predict_without_champion_is_503(client):
    resp = client.post("/predict", json={"rows": [row()]})
    assert resp.status_code == 503
    assert "no @champion yet" in resp.json()["detail"]


def test_predict_scores_with_the_champion(cfg, client, server, registry, store, models):
    registry.champion = "1"
    server.reload()
    assert store.calls == [[dict.fromkeys(cfg.entity_columns(), MISSING_KEY)]]  # probe
    store.calls.clear()
    rows = [row(KNOWN[0]), row(KNOWN[1]), row("2014-01-01T05:00Z|XX|1|EWR", tailnum=None)]

    resp = client.post("/predict", json={"rows": rows})

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "flight_delay"
    assert body["version"] == "1"
    assert len(body["request_id"]) == 32
    assert len(store.calls) == 1  # one online-store read for the whole request
    assert store.calls[0][2]["tailnum"] == MISSING_KEY  # null key, ingestion's way
    preds = body["predictions"]
    assert [p["flight_id"] for p in preds] == [r["flight_id"] for r in rows]
    # The scores are the model's own on the features the store returned.
    features = [store.known.get(r["flight_id"], {}) for r in rows]
    frame = pd.DataFrame([{**r, **f} for r, f in zip(rows, features, strict=True)])
    frame = frame.reindex(columns=[*cfg.entity_columns(), *cfg.feature_names()]).astype(
        dict.fromkeys(cfg.feature_names(), "float64")
    )
    expected = models["1"].predict_proba(frame)[:, 1]
    assert [p["score"] for p in preds] == pytest.approx(expected.tolist())
    assert [p["label"] for p in preds] == [int(s >= 0.5) for s in expected]
    assert preds[0]["missing_features"] == ["wind_gust"]
    # An entity the store does not know: every feature missing, still scored.
    assert preds[2]["missing_features"] == cfg.feature_names()
    assert 0.0 <= preds[2]["score"] <= 1.0


def test_the_champion_scores_on_the_fast_path_with_its_own_numbers(
    cfg, client, server, registry, store, models
):
    registry.champion = "1"
    server.reload()
    assert server.served.scorer is not None
    assert server.scores_inline(1)
    assert not server.scores_inline(serving.INLINE_ROWS + 1)
    rows = [
        row(KNOWN[0]),
        row(KNOWN[1], dest="ZZZ", carrier=None),  # unseen and missing categories
        row("2014-01-01T05:00Z|XX|1|EWR"),  # every feature missing
    ]
    preds = client.post("/predict", json={"rows": rows}).json()["predictions"]
    entities = server.entity_rows(rows)
    values, _ = server._values(entities, store(entities))
    expected = models["1"].predict_proba(server._frame(entities, values))[:, 1]
    assert [p["score"] for p in preds] == expected.tolist()  # exactly, not approximately


class Wrapped:
    """A champion that is no Pipeline: it has no fast path, its own predict_proba scores."""

    def __init__(self, model: Any) -> None:
        self.model, self.calls = model, 0

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        self.calls += 1
        return self.model.predict_proba(frame)


def test_a_model_without_fast_path_scores_itself(client, server, registry, models):
    registry.models = {**models, "5": Wrapped(models["1"])}
    registry.champion = "1"
    server.reload()
    fast = client.post("/predict", json={"rows": [row(), row(KNOWN[2])]}).json()
    registry.champion = "5"
    server.reload()
    assert server.served.scorer is None
    assert not server.scores_inline(1)  # tens of ms a call: kept off the event loop
    calls = registry.models["5"].calls
    slow = client.post("/predict", json={"rows": [row(), row(KNOWN[2])]}).json()
    assert registry.models["5"].calls == calls + 1
    assert [p["score"] for p in slow["predictions"]] == [p["score"] for p in fast["predictions"]]


def test_request_id_is_passed_through(client, server, registry):
    registry.champion = "1"
    server.reload()
    resp = client.post("/predict", json={"rows": [row()], "request_id": "abc-123"})
    assert resp.json()["request_id"] == "abc-123"


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"rows": [{k: v for k, v in row().items() if k != "dest"}]}, "missing keys ['dest']"),
        ({"rows": [row(), {**row(), "dst": "IAH"}]}, "rows[1]: unknown keys ['dst']"),
        ({"rows": [row(origin=7)]}, "'origin' (int 7)"),
        ({"rows": [row(flight_id=None)]}, "'flight_id' (NoneType None)"),
        ({"rows": []}, "rows: List should have at least 1 item"),
        ({"rows": [row()] * (serving.MAX_ROWS + 1)}, "rows: List should have at most 1000"),
        ({"rows": ["EWR"]}, "rows.0: Input should be a valid dictionary"),
        ({"entities": [row()]}, "rows: Field required"),
    ],
)
def test_bad_requests_are_422_naming_the_key(client, server, registry, payload, named):
    registry.champion = "1"
    server.reload()
    resp = client.post("/predict", json=payload)
    assert resp.status_code == 422
    assert named in resp.json()["detail"]


def test_invalid_rows_are_422_even_without_champion(client):
    resp = client.post("/predict", json={"rows": [row(dest=None, carrier=3)]})
    assert resp.status_code == 422
    assert "'carrier' (int 3)" in resp.json()["detail"]


def test_online_store_failure_is_503(client, server, registry, store):
    registry.champion = "1"
    server.reload()
    store.fail = True
    resp = client.post("/predict", json={"rows": [row()]})
    assert resp.status_code == 503
    assert "online.db is locked" in resp.json()["detail"]


def test_reload_swaps_in_the_new_champion(client, server, registry):
    registry.champion = "1"
    server.reload()
    first = client.post("/predict", json={"rows": [row()]}).json()
    assert server.reload() is False  # unchanged: nothing loaded again
    assert registry.loads == ["1"]

    registry.champion = "2"
    assert server.reload() is True

    second = client.post("/predict", json={"rows": [row()]}).json()
    assert (first["version"], second["version"]) == ("1", "2")
    assert registry.loads == ["1", "2"]
    # v2 was trained on the opposite labels: the answer comes from the new model.
    assert second["predictions"][0]["score"] == pytest.approx(
        1 - first["predictions"][0]["score"], abs=0.2
    )
    assert client.get("/health").json()["version"] == "2"


def test_failed_reload_keeps_serving_and_reports(client, server, registry):
    registry.champion = "1"
    server.reload()
    registry.fail = True
    assert server.reload() is False
    health = client.get("/health").json()
    assert (health["status"], health["version"]) == ("ok", "1")
    assert "registry down" in health["error"]

    registry.fail = False
    registry.champion = "3"  # a version that cannot be loaded
    assert server.reload() is False
    health = client.get("/health").json()
    assert health["version"] == "1"
    assert "cannot load flight_delay v3" in health["error"]
    assert client.post("/predict", json={"rows": [row()]}).json()["version"] == "1"


class Broken:
    def predict_proba(self, frame: pd.DataFrame) -> Any:
        raise ValueError(f"expects other columns than {len(frame.columns)}")


def test_a_model_that_cannot_score_is_never_served(client, server, registry, models):
    registry.models = {**models, "4": Broken()}
    registry.champion = "1"
    server.reload()
    registry.champion = "4"
    assert server.reload() is False
    health = client.get("/health").json()
    assert health["version"] == "1"
    assert "cannot load flight_delay v4: expects other columns" in health["error"]


def test_a_champion_loads_before_the_online_store_is_ready(client, server, registry, store):
    store.fail = True
    registry.champion = "1"
    assert server.reload() is True
    assert client.post("/predict", json={"rows": [row()]}).status_code == 503
    store.fail = False
    assert client.post("/predict", json={"rows": [row()]}).json()["version"] == "1"


def test_champion_alias_removed_stops_serving(client, server, registry):
    registry.champion = "1"
    server.reload()
    registry.champion = None
    assert server.reload() is True
    assert client.get("/health").json()["status"] == "no_champion"
    assert client.post("/predict", json={"rows": [row()]}).status_code == 503


def test_requests_land_in_the_prediction_log(cfg, client, server, registry, flywheel_home):
    home = Home(flywheel_home)
    registry.champion = "1"
    server.reload()
    one = client.post("/predict", json={"rows": [row(KNOWN[0]), row("unknown")]}).json()
    registry.champion = "2"
    server.reload()
    two = client.post("/predict", json={"rows": [row(KNOWN[1])], "request_id": "r2"}).json()
    assert prediction_log.read_online(home).empty  # nothing written in the request path

    assert server.flush() == 3
    assert server.flush() == 0

    logged = prediction_log.read_online(home)
    assert list(logged.columns) == prediction_log.columns(cfg)
    assert len(logged) == 3
    assert logged["flight_id"].tolist() == [KNOWN[0], "unknown", KNOWN[1]]
    assert logged["source"].unique().tolist() == ["online"]
    assert logged["model_name"].unique().tolist() == ["flight_delay"]
    assert logged["model_version"].tolist() == ["1", "1", "2"]
    assert logged["request_id"].tolist() == [one["request_id"], one["request_id"], "r2"]
    scores = [p["score"] for p in one["predictions"] + two["predictions"]]
    assert logged["prediction"].tolist() == pytest.approx(scores)
    # The event is the request itself: its time is the scoring time.
    assert (logged["event_timestamp"] == logged["scored_at"]).all()
    assert str(logged["scored_at"].dt.tz) == "UTC"
    assert logged.loc[0, "distance"] == pytest.approx(FakeStore(cfg).known[KNOWN[0]]["distance"])
    assert logged.loc[1, cfg.feature_names()].isna().all()
    assert np.isnan(logged.loc[0, "wind_gust"])
    health = client.get("/health").json()
    assert health["log"] == {"pending_rows": 0, "logged_rows": 3, "dropped_rows": 0}


def test_shutdown_flushes_the_buffer(server, registry, flywheel_home):
    registry.champion = "1"
    server.reload()
    with TestClient(serving.create_app(server, background=False)) as c:
        c.post("/predict", json={"rows": [row()]})
    assert len(prediction_log.read_online(Home(flywheel_home))) == 1


def test_background_threads_reload_and_flush(server, registry, flywheel_home):
    registry.champion = "1"
    app = serving.create_app(server, reload_s=0.05, flush_s=0.05, background=True)
    with TestClient(app) as c:
        _wait(lambda: c.get("/health").json()["version"] == "1")
        c.post("/predict", json={"rows": [row()]})
        _wait(lambda: server.logged_rows == 1)
        registry.champion = "2"
        _wait(lambda: c.get("/health").json()["version"] == "2")
    assert not [t for t in server._threads if t.is_alive()]
    assert len(prediction_log.read_online(Home(flywheel_home))) == 1


def test_a_failed_log_write_is_retried(server, registry, flywheel_home, monkeypatch):
    registry.champion = "1"
    server.reload()
    with TestClient(serving.create_app(server, background=False)) as c:
        c.post("/predict", json={"rows": [row()]})
        real = prediction_log.append_online
        monkeypatch.setattr(prediction_log, "append_online", _raise)
        assert server.flush() == 0
        assert c.get("/health").json()["log"]["pending_rows"] == 1
        monkeypatch.setattr(prediction_log, "append_online", real)
        assert server.flush() == 1


def test_importing_the_module_stays_light():
    heavy = "{'pandas', 'mlflow', 'feast', 'fastapi', 'sklearn'}"
    code = f"import sys, flywheel.serving; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _raise(*args: Any, **kwargs: Any) -> None:
    raise OSError("disk full")


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
