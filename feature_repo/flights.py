"""Feast definitions for the flights data set (configs/flights.yaml).

Each feature view reads the Parquet partitions Flywheel's ingestion writes under
$FLYWHEEL_HOME/offline/<view>/. The views' names and features must match the config's
`features:` section; `flywheel.feast_ops.check_repo` enforces that at every apply.
TTLs say how long a value stays valid after its event time, which is also how far back
a point-in-time join looks: choose them from how the data arrives.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64

from flywheel.paths import Home

OFFLINE = Home.from_env().offline


def _source(view: str) -> FileSource:
    # One Parquet file per month; in-progress writes are dot-files the glob never matches.
    return FileSource(
        name=f"{view}_source",
        path=str(OFFLINE / view / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
    )


def _floats(*names: str) -> list[Field]:
    return [Field(name=n, dtype=Float64) for n in names]


flight = Entity(
    name="flight",
    join_keys=["flight_id"],
    value_type=ValueType.STRING,
    description="One scheduled departure",
)
origin = Entity(
    name="origin",
    join_keys=["origin"],
    value_type=ValueType.STRING,
    description="Departure airport (IATA)",
)
dest = Entity(
    name="dest",
    join_keys=["dest"],
    value_type=ValueType.STRING,
    description="Arrival airport (IATA)",
)
carrier = Entity(
    name="carrier", join_keys=["carrier"], value_type=ValueType.STRING, description="Airline (IATA)"
)
plane = Entity(
    name="plane",
    join_keys=["tailnum"],
    value_type=ValueType.STRING,
    description="Aircraft tail number",
)

flight_view = FeatureView(
    name="flight",
    entities=[flight],
    # Known at scheduling time, stamped with the scheduled hour itself.
    ttl=timedelta(hours=1),
    schema=_floats(
        "distance", "sched_dep_time", "sched_arr_time", "dep_hour", "dep_weekday", "dep_month"
    ),
    source=_source("flight"),
)

origin_weather_view = FeatureView(
    name="origin_weather",
    entities=[origin],
    # Hourly observations; a flight may use the last reading up to 3 hours old.
    ttl=timedelta(hours=3),
    schema=_floats(
        "temp",
        "dewp",
        "humid",
        "wind_dir",
        "wind_speed",
        "wind_gust",
        "precip",
        "pressure",
        "visib",
    ),
    source=_source("origin_weather"),
)

plane_view = FeatureView(
    name="plane",
    entities=[plane],
    # A monthly snapshot of the fleet: valid until the next one, with slack for a late feed.
    ttl=timedelta(days=62),
    schema=_floats("plane_year", "plane_engines", "plane_seats"),
    source=_source("plane"),
)

carrier_history_view = FeatureView(
    name="carrier_history",
    entities=[carrier],
    # One row per carrier and day; two days of slack covers a missed daily update.
    ttl=timedelta(days=2),
    schema=_floats(
        "carrier_history_rate_7d", "carrier_history_rate_28d", "carrier_history_count_28d"
    ),
    source=_source("carrier_history"),
)

route_history_view = FeatureView(
    name="route_history",
    entities=[origin, dest],
    ttl=timedelta(days=2),
    schema=_floats("route_history_rate_28d", "route_history_count_28d"),
    source=_source("route_history"),
)

# Versioned: a change of features is a new service (v2), so models trained on v1 keep
# reading exactly what they were trained on.
flight_delay_v1 = FeatureService(
    name="flight_delay_v1",
    features=[
        flight_view,
        origin_weather_view,
        plane_view,
        carrier_history_view,
        route_history_view,
    ],
    description="Features of the flight-delay classifier, version 1",
)
