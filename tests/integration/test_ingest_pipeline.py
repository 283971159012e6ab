"""The ingest steps, in the DAG's order, for two real months against real Feast stores
(file offline store, SQLite online store, file registry) and a real GX context."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support import offline_rows

from flywheel import features, ingest, landing
from flywheel.config import load_config
from flywheel.feast_ops import online_features
from flywheel.paths import Home

pytestmark = pytest.mark.integration

MONTHS = ["2013-01", "2013-02"]


def _ingest(cfg, home: Home, month: str) -> dict[str, int]:
    assert ingest.validate(cfg, home, month).success
    counts = ingest.build_and_store(cfg, home, month)
    ingest.apply_repo(cfg, home)
    ingest.materialize(cfg, home, month)
    return counts


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    cfg, home = load_config(), Home(tmp_path_factory.mktemp("home"))
    for month in MONTHS:
        landing.land(cfg, month, home)
    counts = {}
    for month in MONTHS:
        assert ingest.resolve_month(cfg, home, None, "asset_triggered", None) == month
        counts[month] = _ingest(cfg, home, month)
    return cfg, home, counts


def test_months_are_archived_and_counted(ingested):
    cfg, home, counts = ingested
    assert landing.pending(home) == []
    assert landing.archived_months(home) == MONTHS
    raw = landing.source_batch(cfg, "2013-02")
    assert counts["2013-02"]["entity_rows"] == len(raw["flights"])
    assert counts["2013-02"]["flight"] == len(raw["flights"])
    assert offline_rows(cfg, home)["entity_rows"] == sum(c["entity_rows"] for c in counts.values())


def test_online_features_read_back(ingested):
    cfg, home, _ = ingested
    spine = features.read_partitions(home.entity_rows(cfg.entity.name), ["2013-02"])
    sample = spine.sample(5, random_state=1)
    rows = sample[cfg.entity_columns()].to_dict("records")
    got = online_features(cfg, home, rows)
    offline = features.read_partitions(home.offline / "flight", ["2013-02"]).set_index("flight_id")
    for row, feats in zip(rows, got, strict=True):
        assert feats["flight_id"] == row["flight_id"]
        # The online value is the offline value of the same flight.
        assert feats["distance"] == offline.loc[row["flight_id"], "distance"]
        assert feats["temp"] is not None
        # February has January's labels behind it: the 28-day rates are known.
        assert feats["carrier_history_rate_28d"] is not None


def test_rerun_overwrites_instead_of_appending(ingested):
    cfg, home, counts = ingested
    before = offline_rows(cfg, home)
    files_before = sorted(p.relative_to(home.offline) for p in home.offline.rglob("*.parquet"))
    again = _ingest(cfg, home, "2013-01")  # the archived month, re-run
    assert again == counts["2013-01"]
    assert offline_rows(cfg, home) == before
    assert (
        sorted(p.relative_to(home.offline) for p in home.offline.rglob("*.parquet")) == files_before
    )


def test_broken_batch_is_quarantined_and_store_unchanged(ingested):
    cfg, home, _ = ingested
    before = offline_rows(cfg, home)
    landing.land_broken(cfg, "2013-03", "null_keys", home)
    month = ingest.resolve_month(cfg, home, None, "asset_triggered", None)
    outcome = ingest.validate(cfg, home, month)
    assert not outcome.success
    assert any("carrier" in f for f in outcome.failures), outcome.failures
    assert outcome.quarantined_to is not None
    assert (Path(outcome.quarantined_to) / "validation.json").is_file()
    assert Path(outcome.quarantined_to).parent == home.quarantine
    assert landing.pending(home) == []
    assert "2013-03" not in landing.archived_months(home)
    assert offline_rows(cfg, home) == before


def test_historical_features_are_point_in_time(ingested):
    cfg, home, _ = ingested
    from flywheel.feast_ops import store

    fs = store(cfg, home)
    spine = features.read_partitions(home.entity_rows(cfg.entity.name), ["2013-02"]).head(300)
    entity_df = spine[[*cfg.entity_columns(), "event_timestamp"]]
    service = fs.get_feature_service(cfg.feast.feature_service)
    hist = fs.get_historical_features(entity_df=entity_df, features=service).to_df()
    # Every entity row survives the join (TTLs cover the data's cadence).
    assert len(hist) == len(entity_df)
    assert set(cfg.feature_names()) <= set(hist.columns)
    assert hist["distance"].notna().all()
    assert hist["temp"].notna().mean() > 0.95
    assert pd.api.types.is_float_dtype(hist["carrier_history_rate_28d"])
