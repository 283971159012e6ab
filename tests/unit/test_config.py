"""The config file: the default loads with the right derived facts, and every kind of
mistake is refused with a `ConfigError` whose message names the offending key."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    LabelRateView,
    load_config,
    month_bounds,
    parse_config,
)

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The default config file as plain data; tests mutate deep copies of it."""
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return data


def _has(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in:\n{message}"


def _bad(raw: dict[str, Any], mutate: Mutation) -> str:
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml"), message  # says which file
    return message


# --- the default config -------------------------------------------------------------------


def test_default_config_loads_and_describes_the_flights_data_set() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    assert isinstance(cfg, Config)
    assert cfg.name == "flights"
    assert cfg.task == "classification"
    assert cfg.source.primary == "flights"
    assert cfg.primary is cfg.source.tables["flights"]
    assert cfg.primary.timestamp == "time_hour"
    assert cfg.label.column == "arr_delay"
    assert cfg.label.threshold == 15
    assert set(cfg.source.tables) == {"flights", "weather", "planes"}
    assert cfg.source.tables["planes"].timestamp is None  # a dimension snapshot


def test_default_config_months_cover_2013_in_order() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.months() == [f"2013-{m:02d}" for m in range(1, 13)]


def test_months_cross_a_year_boundary(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["source"].update(first_month="2012-11", last_month="2013-02")
    assert parse_config(data).months() == ["2012-11", "2012-12", "2013-01", "2013-02"]


def test_single_month_source(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["source"].update(first_month="2013-05", last_month="2013-05")
    assert parse_config(data).months() == ["2013-05"]


def test_default_feature_names_per_view_and_overall() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    expected = {
        "flight": [
            "distance",
            "sched_dep_time",
            "sched_arr_time",
            "dep_hour",
            "dep_weekday",
            "dep_month",
        ],
        "origin_weather": [
            "temp",
            "dewp",
            "humid",
            "wind_dir",
            "wind_speed",
            "wind_gust",
            "precip",
            "pressure",
            "visib",
        ],
        "plane": ["plane_year", "plane_engines", "plane_seats"],
        "carrier_history": [
            "carrier_history_rate_7d",
            "carrier_history_rate_28d",
            "carrier_history_count_28d",
        ],
        "route_history": ["route_history_rate_28d", "route_history_count_28d"],
    }
    assert list(cfg.features) == list(expected)
    for view, names in expected.items():
        assert cfg.view_features(view) == names, view
    assert cfg.feature_names() == [n for names in expected.values() for n in names]
    assert len(set(cfg.feature_names())) == len(cfg.feature_names())


def test_default_join_keys_and_entity_columns() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.view_keys("flight") == ["flight_id"]
    assert cfg.view_keys("origin_weather") == ["origin"]
    assert cfg.view_keys("plane") == ["tailnum"]
    assert cfg.view_keys("route_history") == ["origin", "dest"]
    # The entity's own key first, then every view's keys once, in declaration order.
    assert cfg.entity_columns() == ["flight_id", "origin", "tailnum", "carrier", "dest"]
    assert not set(cfg.entity_columns()) & set(cfg.feature_names())


def test_label_rate_count_feature_uses_the_widest_window(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["features"]["carrier_history"]["windows_days"] = [14, 3, 56]
    data["monitoring"]["drift"]["ignore"] = []  # it named the 28-day count
    cfg = parse_config(data)
    assert isinstance(cfg.features["carrier_history"], LabelRateView)
    assert cfg.view_features("carrier_history") == [
        "carrier_history_rate_14d",
        "carrier_history_rate_3d",
        "carrier_history_rate_56d",
        "carrier_history_count_56d",
    ]


def test_config_is_frozen() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    with pytest.raises(ValueError, match="frozen"):
        cfg.name = "other"


def test_month_bounds() -> None:
    assert month_bounds("2013-01") == (date(2013, 1, 1), date(2013, 2, 1))
    assert month_bounds("2013-12") == (date(2013, 12, 1), date(2014, 1, 1))
    for bad in ("2013-13", "2013-1", "2013-00", "13-01", "2013/01", ""):
        with pytest.raises(ValueError, match="YYYY-MM"):
            month_bounds(bad)


# --- bad configs: each error names the key path -------------------------------------------


def test_misspelt_top_level_key_is_refused(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d.update(gaets=d["gates"]))
    assert re.search(r"^\s+gaets: .*not permitted", msg, re.M), msg


def test_misspelt_nested_key_is_refused_with_its_full_path(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["source"]["tables"]["flights"]["columns"]["distance"]["nullabel"] = True

    msg = _bad(raw, mutate)
    assert "source.tables.flights.columns.distance.nullabel" in msg, msg
    assert "not permitted" in msg


def test_unknown_key_in_a_feature_view_is_refused(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["carrier_history"].update(window_days=[7]))
    _has(msg, "features.carrier_history", "window_days")


def test_wrong_type_names_the_key(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["source"]["tables"]["flights"].update(min_rows="lots"))
    assert "source.tables.flights.min_rows" in msg, msg
    assert "integer" in msg


def test_unknown_column_type_names_the_key(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["source"]["tables"]["weather"]["columns"]["temp"]["type"] = "double"

    msg = _bad(raw, mutate)
    assert "source.tables.weather.columns.temp.type" in msg, msg


def test_wrong_task_names_the_key(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d.update(task="ranking"))
    assert re.search(r"^\s+task: ", msg, re.M), msg


def test_missing_required_key_names_the_key(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["label"].pop("column"))
    _has(msg, "label.column", "required")


def test_missing_required_section_names_it(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d.pop("feast"))
    assert re.search(r"^\s+feast: Field required", msg, re.M), msg


def test_empty_gates_are_refused(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d.update(gates=[]))
    assert re.search(r"^\s+gates: ", msg, re.M), msg


def test_primary_table_must_be_a_table(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["source"].update(primary="departures"))
    assert re.search(r"source: .*primary table 'departures' is not in tables", msg), msg


def test_primary_table_needs_a_timestamp(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["source"].update(primary="planes"))
    assert re.search(r"source: .*primary table 'planes' needs a timestamp", msg), msg


def test_key_column_must_be_declared(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["source"]["tables"]["weather"].update(keys=["origin", "station"]))
    assert re.search(r"source\.tables\.weather: .*'station' .*not in columns", msg), msg


def test_key_column_cannot_be_nullable(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["source"]["tables"]["planes"]["columns"]["tailnum"]["nullable"] = True

    msg = _bad(raw, mutate)
    assert re.search(r"source\.tables\.planes: .*key column 'tailnum' cannot be nullable", msg), msg


def test_timestamp_column_must_be_declared(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["source"]["tables"]["weather"].update(timestamp="observed_at"))
    assert re.search(r"source\.tables\.weather: .*'observed_at'", msg), msg


def test_timestamp_must_be_a_datetime(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["source"]["tables"]["weather"]["columns"]["time_hour"]["type"] = "str"

    msg = _bad(raw, mutate)
    assert re.search(
        r"source\.tables\.weather: .*timestamp column 'time_hour' must have type datetime", msg
    ), msg


def test_classification_needs_a_threshold(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["label"].pop("threshold"))
    _has(msg, "label.threshold", "classification")


def test_regression_takes_no_threshold(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d.update(task="regression"))
    _has(msg, "label.threshold", "regression")


def test_regression_without_threshold_is_valid(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["task"] = "regression"
    del data["label"]["threshold"]
    data["gates"] = [{"metric": "rmse", "threshold": 30.0, "min_improvement": 0.5}]
    del data["monitoring"]["performance"]["metric"]  # then the task's default: rmse
    cfg = parse_config(data)
    assert cfg.label.threshold is None
    assert cfg.gates[0].higher_is_better is False


def test_gate_metric_must_suit_the_task(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["gates"][0].update(metric="rmse"))
    _has(msg, "gates.0.metric", "rmse", "classification")


def test_gate_direction_follows_the_metric(raw: dict[str, Any]) -> None:
    cfg = parse_config(copy.deepcopy(raw))
    assert {g.metric: g.higher_is_better for g in cfg.gates} == {
        "roc_auc": True,
        "log_loss": False,
    }


def test_training_columns_must_be_entity_columns(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["training"].update(slices=["distance"]))
    _has(msg, "training", "distance", "entity column")


def test_class_balance_must_be_ordered_rates(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["training"].update(class_balance=[0.6, 0.05]))
    _has(msg, "training.class_balance")


def test_registry_section_is_required(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d.pop("registry"))
    _has(msg, "registry", "Field required")


def test_unknown_model_type_is_named(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["training"]["model"].update(type="xgboost"))
    _has(msg, "training.model.type", "xgboost")


def test_label_column_must_be_on_the_primary_table(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["label"].update(column="late_minutes"))
    _has(msg, "label.column", "late_minutes")


def test_entity_id_columns_must_be_on_the_primary_table(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["entity"]["id_columns"].append("gate"))
    _has(msg, "entity.id_columns", "'gate'")


def test_negative_label_delay_is_refused(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["label"].update(delay_days=-1))
    assert "label.delay_days" in msg, msg


def test_derived_expression_of_unknown_form(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["features"]["flight"]["derived"]["dep_minute"] = "minute(time_hour)"

    msg = _bad(raw, mutate)
    _has(msg, "features.flight", "dep_minute", "minute(time_hour)")
    # ...and says what would have been accepted.
    assert "hour(<timestamp>)" in msg


def test_derived_expression_that_is_not_a_function_call(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["flight"]["derived"].update(x="time_hour.hour"))
    _has(msg, "features.flight", "'x'")


def test_derived_expression_must_use_the_timestamp(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["flight"]["derived"].update(x="hour(sched_dep_time)"))
    _has(msg, "features.flight.derived", "time_hour")


def test_unknown_view_kind_names_the_view(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["route_history"].update(kind="rolling"))
    _has(msg, "features.route_history", "rolling")


def test_feature_view_on_a_missing_table(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["plane"].update(table="aircraft"))
    _has(msg, "features.plane.table", "aircraft")


def test_feature_view_with_a_missing_column(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["origin_weather"]["columns"].append("snow_depth"))
    _has(msg, "features.origin_weather.columns", "snow_depth")


def test_dimension_view_with_a_missing_column(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["plane"]["columns"].update(model="plane_model"))
    _has(msg, "features.plane.columns", "'model'")


def test_row_view_with_a_column_not_on_the_primary_table(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["flight"]["columns"].append("temp"))
    _has(msg, "features.flight", "'temp'")


def test_label_rate_view_with_a_key_not_on_the_primary_table(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["route_history"]["keys"].append("gate"))
    _has(msg, "features.route_history", "'gate'")


def test_view_key_missing_from_the_primary_table(raw: dict[str, Any]) -> None:
    # `type` is a column of planes but not of flights: nothing would join on it.
    msg = _bad(raw, lambda d: d["features"]["plane"].update(keys=["type"]))
    _has(msg, "features.plane.keys", "'type'")


def test_table_view_on_a_table_without_timestamp(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["features"]["plane"] = {
            "kind": "table",
            "table": "planes",
            "keys": ["tailnum"],
            "columns": ["seats"],
        }

    msg = _bad(raw, mutate)
    _has(msg, "features.plane", "dimension")


def test_duplicate_feature_names(raw: dict[str, Any]) -> None:
    # The plane snapshot's year renamed onto a name the flight view already produces.
    msg = _bad(raw, lambda d: d["features"]["plane"]["columns"].update(year="distance"))
    assert re.search(r"features: names produced twice: \['distance'\]", msg), msg


def test_feature_name_clashing_with_a_join_key(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["features"]["flight"]["columns"].append("carrier"))
    assert re.search(r"features: \['carrier'\] are join keys", msg), msg


def test_range_min_above_max(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["source"]["tables"]["flights"]["columns"]["distance"].update(min=7000)

    msg = _bad(raw, mutate)
    _has(msg, "source.tables.flights.columns.distance", "greater than max")


def test_mostly_outside_zero_one(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["source"]["tables"]["weather"]["columns"]["wind_speed"]["mostly"] = 1.5

    msg = _bad(raw, mutate)
    assert "source.tables.weather.columns.wind_speed.mostly" in msg, msg


@pytest.mark.parametrize("field", ["first_month", "last_month"])
@pytest.mark.parametrize("value", ["2013-1", "2013-13", "2013-00", "Jan 2013"])
def test_bad_month_format(raw: dict[str, Any], field: str, value: str) -> None:
    msg = _bad(raw, lambda d: d["source"].update({field: value}))
    assert re.search(rf"source: .*{field} must look like YYYY-MM", msg), msg


def test_first_month_after_last_month(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["source"].update(first_month="2014-01"))
    assert re.search(r"source: .*first_month is after last_month", msg), msg


def test_directory_source_needs_a_root(raw: dict[str, Any]) -> None:
    msg = _bad(raw, lambda d: d["source"].update(kind="directory"))
    assert re.search(r"source: .*root", msg), msg


def test_every_error_is_reported_at_once(raw: dict[str, Any]) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["nmae"] = "x"
        d["feast"].pop("feature_service")

    msg = _bad(raw, mutate)
    _has(msg, "nmae", "feast.feature_service")


# --- loading files --------------------------------------------------------------------------


def test_non_mapping_top_level_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"src\.yaml: expected a mapping .* got list"):
        parse_config(["name", "flights"], "src.yaml")


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"cannot read config {missing}")):
        load_config(missing)


def test_load_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)


def test_load_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: flights\ntask: [classification\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path} is not valid YAML")):
        load_config(path)


@pytest.mark.parametrize("text", ["", "just a string\n", "- a\n- b\n"])
def test_load_yaml_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "scalar.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: expected a mapping")):
        load_config(path)


def test_load_invalid_file_names_file_and_key(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["label"]["delay_days"] = "tomorrow"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path} is invalid")
    assert "label.delay_days" in str(info.value)


def test_flywheel_config_env_var_is_respected(
    tmp_path: Path, raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = copy.deepcopy(raw)
    data["name"] = "flights_from_env"
    data["source"]["last_month"] = "2013-06"
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(path))
    cfg = load_config()
    assert cfg.name == "flights_from_env"
    assert cfg.months()[-1] == "2013-06"
    # An explicit path still wins over the environment.
    assert load_config(DEFAULT_CONFIG).name == "flights"


def test_flywheel_config_env_var_pointing_nowhere_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.yaml"
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config()


def test_without_env_var_the_default_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_CONFIG", raising=False)
    assert load_config() == load_config(DEFAULT_CONFIG)


def test_monitoring_ignores_only_known_features(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["monitoring"]["drift"]["ignore"] = ["dep_month", "tempp"]
    with pytest.raises(ConfigError, match=r"monitoring.drift.ignore: \['tempp'\] are not features"):
        parse_config(data)


def test_retrain_policy_k_cannot_exceed_n(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["monitoring"]["policy"] = {"k": 3, "n": 2}
    with pytest.raises(ConfigError, match=r"k \(3\) cannot exceed n \(2\)"):
        parse_config(data)


def test_performance_metric_defaults_to_the_tasks_first(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["monitoring"]["performance"]["metric"]
    assert parse_config(data).performance_metric == "roc_auc"
    data["monitoring"]["performance"]["metric"] = "rmse"
    with pytest.raises(ConfigError, match="'rmse' is not a classification metric"):
        parse_config(data)
