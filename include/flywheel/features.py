"""Feature engineering: one validated raw batch in, one frame per Feast feature view out.

Pure pandas. Every output frame carries its join keys and `event_timestamp`, the time
from which the values are known; point-in-time joins rely on that being honest, so
label-derived features only look at labels that had matured before the row's day.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel.config import (
    _DERIVED,
    Config,
    DimensionView,
    LabelRateView,
    RowView,
    TableView,
    month_bounds,
)

EVENT_TS = "event_timestamp"
MISSING_KEY = "__missing__"  # a null join key joins nothing instead of breaking the join


def entity_ids(cfg: Config, primary: pd.DataFrame) -> pd.Series:
    """Stable entity ids: the id columns joined with '|' (timestamps in ISO form)."""
    parts = []
    for col in cfg.entity.id_columns:
        values = primary[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            values = values.dt.strftime("%Y-%m-%dT%H:%MZ")
        parts.append(values.astype(str))
    out = parts[0]
    for p in parts[1:]:
        out = out + "|" + p
    return out


def label_values(cfg: Config, primary: pd.DataFrame) -> pd.Series:
    raw = pd.to_numeric(primary[cfg.label.column], errors="coerce")
    if cfg.task == "regression":
        return raw.astype("float64")
    # Unknown outcome (cancelled, diverted) stays unknown, never "on time".
    return (raw >= cfg.label.threshold).astype("float64").where(raw.notna())


def entity_rows(cfg: Config, primary: pd.DataFrame) -> pd.DataFrame:
    """The spine for training and scoring: ids, every join key, timestamp and label."""
    ts_col = cfg.primary.timestamp
    assert ts_col is not None
    out = pd.DataFrame({cfg.entity.join_key: entity_ids(cfg, primary)})
    for key in cfg.entity_columns()[1:]:
        out[key] = primary[key].astype("string").fillna(MISSING_KEY).to_numpy()
    out[EVENT_TS] = primary[ts_col].to_numpy()
    out[cfg.label.name] = label_values(cfg, primary).to_numpy()
    out[cfg.label.column] = pd.to_numeric(primary[cfg.label.column], errors="coerce").to_numpy()
    return out


def _as_feature(values: pd.Series, kind: str) -> pd.Series:
    # Feast gets two types: String for categories, Float64 for everything numeric (NaN-able).
    return values.astype("string") if kind == "str" else pd.to_numeric(values).astype("float64")


def _row_view(cfg: Config, view: RowView, primary: pd.DataFrame) -> pd.DataFrame:
    ts = primary[cfg.primary.timestamp]
    out = pd.DataFrame({cfg.entity.join_key: entity_ids(cfg, primary), EVENT_TS: ts})
    for col in view.columns:
        out[col] = _as_feature(primary[col], cfg.primary.columns[col].type)
    for name, expr in view.derived.items():
        m = _DERIVED.match(expr)
        assert m is not None
        part = m["part"]
        out[name] = getattr(ts.dt, part if part != "weekday" else "dayofweek").astype("float64")
    return out


def _table_view(cfg: Config, view: TableView, table: pd.DataFrame) -> pd.DataFrame:
    spec = cfg.source.tables[view.table]
    out = table[view.keys].astype("string").copy()
    out[EVENT_TS] = table[spec.timestamp]
    for col in view.columns:
        out[col] = _as_feature(table[col], spec.columns[col].type)
    return out.drop_duplicates([*view.keys, EVENT_TS], keep="last")


def _dimension_view(
    cfg: Config, view: DimensionView, table: pd.DataFrame, month: str
) -> pd.DataFrame:
    spec = cfg.source.tables[view.table]
    out = table[view.keys].astype("string").copy()
    # A snapshot landed with month M describes the world from M's first instant on.
    out[EVENT_TS] = pd.Timestamp(month_bounds(month)[0], tz="UTC").as_unit("ns")
    for src, name in view.columns.items():
        out[name] = _as_feature(table[src], spec.columns[src].type)
    return out.drop_duplicates(view.keys, keep="last")


def _label_rate_view(
    cfg: Config, name: str, view: LabelRateView, spine: pd.DataFrame, month: str
) -> pd.DataFrame:
    """Per key and day d: the label rate over days [d - delay - w, d - delay - 1].

    `spine` holds this month's entity rows and earlier months' (the history); only rows
    whose label is known count.
    """
    start, end = (pd.Timestamp(d, tz="UTC") for d in month_bounds(month))
    delay, widest = cfg.label.delay_days, max(view.windows_days)
    label = cfg.label.name
    known = spine[spine[label].notna()]
    days = pd.date_range(
        start - pd.Timedelta(days=delay + widest), end - pd.Timedelta(days=1), freq="D", tz="UTC"
    )
    day = known[EVENT_TS].dt.floor("D")
    known = known[(day >= days[0]) & (day <= days[-1])]
    day = known[EVENT_TS].dt.floor("D")
    keys = view.keys
    grouped = known.assign(_day=day).groupby([*keys, "_day"], observed=True)[label]
    daily = grouped.agg(["sum", "count"])
    if daily.empty:
        return pd.DataFrame(columns=[*keys, EVENT_TS, *cfg.view_features(name)])
    # Wide: one column per key, one row per day, so rolling windows are plain cumsums.
    sums = daily["sum"].unstack(keys).reindex(days, fill_value=0).fillna(0)
    counts = daily["count"].unstack(keys).reindex(days, fill_value=0).fillna(0)
    month_days = days[days >= start]
    out_cols: dict[str, pd.DataFrame] = {}
    for w in sorted(set(view.windows_days)):
        # Shift by delay+1 days: day d sees nothing from days >= d - delay.
        s = sums.rolling(w, min_periods=1).sum().shift(delay + 1).loc[month_days]
        c = counts.rolling(w, min_periods=1).sum().shift(delay + 1).loc[month_days]
        out_cols[f"{name}_rate_{w}d"] = s / c.where(c > 0)
        if w == widest:
            out_cols[f"{name}_count_{widest}d"] = c
    long = pd.concat({k: v.stack(keys, future_stack=True) for k, v in out_cols.items()}, axis=1)
    long.index = long.index.set_names([EVENT_TS, *keys])
    long = long.reset_index()
    long = long[long[f"{name}_count_{widest}d"].notna()]
    for key in keys:
        long[key] = long[key].astype("string")
    return (
        long[[*keys, EVENT_TS, *cfg.view_features(name)]]
        .astype(dict.fromkeys(cfg.view_features(name), "float64"))
        .reset_index(drop=True)
    )


def build_features(
    cfg: Config, month: str, tables: dict[str, pd.DataFrame], history: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """All feature-view frames for one month, plus the entity rows under `entity_rows`.

    `history` is earlier months' entity rows (for label rates); it may be empty.
    """
    primary = tables[cfg.source.primary]
    spine = entity_rows(cfg, primary)
    past = spine if history is None or history.empty else pd.concat([history, spine])
    out: dict[str, pd.DataFrame] = {"entity_rows": spine}
    for name, view in cfg.features.items():
        if isinstance(view, RowView):
            out[name] = _row_view(cfg, view, primary)
        elif isinstance(view, TableView):
            out[name] = _table_view(cfg, view, tables[view.table])
        elif isinstance(view, DimensionView):
            out[name] = _dimension_view(cfg, view, tables[view.table], month)
        else:
            out[name] = _label_rate_view(cfg, name, view, past, month)
    return out


# --- the offline store: Parquet partitions, one file per view and month ---------------


def write_partition(folder: Path, month: str, frame: pd.DataFrame) -> Path:
    """Write `<folder>/<month>.parquet` atomically: a re-run replaces it, never appends."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{month}.parquet"
    # Dot-files are invisible to readers of the folder (pyarrow datasets skip them).
    tmp = folder / f".{month}.parquet.{os.getpid()}.tmp"
    # Microsecond timestamps: DuckDB (Feast's offline engine here) cannot cast ns ones.
    stamps = frame.select_dtypes(include=["datetimetz", "datetime"]).columns
    frame = frame.astype(dict.fromkeys(stamps, "datetime64[us, UTC]"))
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, final)
    return final


def read_partitions(folder: Path, months: list[str] | None = None) -> pd.DataFrame:
    """Read the partitions of `months` (all if None) from a view's folder."""
    files = sorted(folder.glob("*.parquet"))
    if months is not None:
        files = [f for f in files if f.stem in set(months)]
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    # Stored as µs with pyarrow's UTC; fresh frames are ns with pandas' UTC. Mixing the
    # two in a concat silently gives an object column, so hand back the canonical form.
    stamps = frame.select_dtypes(include=["datetimetz"]).columns
    return frame.astype(dict.fromkeys(stamps, "datetime64[ns, UTC]"))


def months_before(month: str, count: int) -> list[str]:
    y, m = map(int, month.split("-"))
    out = []
    for _ in range(count):
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
        out.append(f"{y:04d}-{m:02d}")
    return out[::-1]


def history_months(cfg: Config, month: str) -> list[str]:
    """The earlier months whose labels the widest rolling window can reach."""
    widest = max(
        (max(v.windows_days) for v in cfg.features.values() if isinstance(v, LabelRateView)),
        default=0,
    )
    if widest == 0:
        return []
    return months_before(month, int(np.ceil((widest + cfg.label.delay_days) / 28)))
