"""`feast_ops.OnlineReader` against Feast's own `get_online_features` on a real home: one
month built into the offline store, applied and materialized into the SQLite online store.
The reader must answer exactly what the SDK answers, for known and unknown entities."""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

import pytest

from flywheel import feast_ops, features, ingest, landing
from flywheel.config import load_config
from flywheel.paths import Home

pytestmark = pytest.mark.integration

MONTH = "2013-01"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    cfg, home = load_config(), Home(tmp_path_factory.mktemp("home"))
    landing.land(cfg, MONTH, home)
    assert ingest.resolve_month(cfg, home, None, "asset_triggered", None) == MONTH
    ingest.build_and_store(cfg, home, MONTH)
    ingest.apply_repo(cfg, home)
    ingest.materialize(cfg, home, MONTH)
    return cfg, home


@pytest.fixture(scope="module")
def sdk(home):
    """The SDK's answer for entity rows: what the reader must reproduce."""
    cfg, h = home
    fs = feast_ops.store(cfg, h)

    def read(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        service = fs.get_feature_service(cfg.feast.feature_service)
        return dict(fs.get_online_features(features=service, entity_rows=rows).to_dict())

    read.store = fs  # type: ignore[attr-defined]
    return read


@pytest.fixture(scope="module")
def rows(home) -> list[dict[str, Any]]:
    cfg, h = home
    spine = features.read_partitions(h.entity_rows(cfg.entity.name), [MONTH])
    return spine[cfg.entity_columns()].sample(40, random_state=3).to_dict("records")


def _absent(cfg, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows whose entities the store does not know, one view at a time, then all at once."""
    return [
        {**row, cfg.entity.join_key: "2013-01-01T00:00Z|ZZ|0|XXX"},
        {**row, "tailnum": "NOPLANE"},
        {**row, "dest": "NOWHERE"},  # an unknown route; origin and carrier still known
        {k: f"unknown-{k}" for k in row},
    ]


def _same(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert len(a[name]) == len(b[name]), name
        for x, y in zip(a[name], b[name], strict=True):
            nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
            assert nan or (x == y and type(x) is type(y)), (name, x, y)


@pytest.mark.parametrize("batch_sqlite", [True, False], ids=["one_select", "online_read"])
def test_reader_returns_what_get_online_features_returns(home, sdk, rows, batch_sqlite):
    cfg, h = home
    reader = feast_ops.OnlineReader(cfg, h, batch_sqlite=batch_sqlite)
    batch = [*rows, *_absent(cfg, rows[0]), rows[0], rows[5]]  # repeats too
    got, want = reader(batch), sdk(batch)
    _same(dict(got), want)
    _same(dict(reader(batch)), want)  # again, with the plan's remembered keys
    # The comparison means something: known values and unknown ones are both in it.
    assert set(got) == set(cfg.entity_columns()) | set(cfg.feature_names())
    assert all(v is not None for v in got["distance"][: len(rows)])
    assert got["distance"][len(rows)] is None  # the unknown flight
    assert got["plane_seats"][len(rows) + 1] is None  # the unknown plane
    assert got["route_history_count_28d"][len(rows) + 2] is None  # the unknown route
    assert got["temp"][len(rows) + 2] is not None  # ... whose origin is known
    assert all(got[f][len(rows) + 3] is None for f in cfg.feature_names())
    assert got[cfg.entity.join_key] == [r[cfg.entity.join_key] for r in batch]


def test_batches_beyond_one_statement(home, sdk, rows):
    """SQLite bounds a statement's parameters: bigger batches are read in several."""
    cfg, h = home
    reader = feast_ops.OnlineReader(cfg, h)
    plan = reader._plan
    assert plan is not None
    assert plan.tables  # the one-SELECT path is the one taken
    reader._plan = dataclasses.replace(plan, max_rows=7, selects={})  # instead of ~50,000
    batch = [*rows, *_absent(cfg, rows[3])]
    _same(dict(reader(batch)), sdk(batch))


def test_single_rows_and_no_ttl_filter(home, sdk, rows):
    cfg, h = home
    reader = feast_ops.OnlineReader(cfg, h)
    for row in [*rows[:10], *_absent(cfg, rows[1])]:
        _same(dict(reader([row])), sdk([row]))
    # January 2013 is years past every view's TTL, yet Feast's online read serves it.
    key = cfg.entity.join_key
    offline = features.read_partitions(h.offline / "flight", [MONTH]).set_index(key)
    assert reader([rows[2]])["distance"] == [offline.loc[rows[2][key], "distance"]]


def test_online_features_uses_the_reader(home, sdk, rows):
    cfg, h = home
    got = feast_ops.online_features(cfg, h, rows[:3])
    want = sdk(rows[:3])
    assert got == [{k: v[i] for k, v in want.items()} for i in range(3)]


def test_unservable_view_refused_until_back(home, sdk, rows):
    """A view Feast marks MATERIALIZING is refused by both, then served again by both."""
    from feast.feature_view import FeatureViewState

    cfg, h = home
    reader = feast_ops.OnlineReader(cfg, h)
    fs = sdk.store
    view = fs.get_feature_view("origin_weather")
    before = view.state
    view.state = FeatureViewState.MATERIALIZING
    fs.registry.apply_feature_view(view, fs.project, commit=True)
    try:
        reader.refresh()  # this test does not wait out the registry cache
        with pytest.raises(ValueError, match="MATERIALIZING"):
            reader(rows[:1])
        with pytest.raises(ValueError, match="MATERIALIZING"):
            sdk(rows[:1])
    finally:
        view.state = before
        fs.registry.apply_feature_view(view, fs.project, commit=True)
    reader.refresh()
    _same(dict(reader(rows[:2])), sdk(rows[:2]))


def test_rows_must_share_keys_and_carry_join_keys(home, rows):
    cfg, h = home
    reader = feast_ops.OnlineReader(cfg, h)
    with pytest.raises(ValueError, match="same keys"):
        reader([rows[0], {k: v for k, v in rows[1].items() if k != "dest"}])
    with pytest.raises(ValueError, match="dest"):
        reader([{k: v for k, v in rows[0].items() if k != "dest"}])
    with pytest.raises(ValueError, match="null"):
        reader([{**rows[0], "tailnum": None}])
    assert reader([]) == {f: [] for f in cfg.feature_names()}
    # A key no view joins on is ignored, as get_online_features ignores it.
    assert "extra" not in reader([{**rows[0], "extra": "x"}])


def test_concurrent_calls_get_their_own_rows(home, sdk, rows):
    cfg, h = home
    reader = feast_ops.OnlineReader(cfg, h)
    want = {r[cfg.entity.join_key]: sdk([r]) for r in rows[:8]}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(60):
                row = rows[(offset + i) % 8]
                _same(dict(reader([row])), want[row[cfg.entity.join_key]])
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
