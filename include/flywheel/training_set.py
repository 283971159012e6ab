"""Training sets: point-in-time features from Feast for a window of months, split by the
frozen holdout rule, fingerprinted so unchanged inputs are never trained twice.

Splits (never overlapping, never depending on which model asks):
- `train`: every labelled row of the window outside the holdout;
- `recent`: holdout rows of the window's last `eval_months` months: the freshest data no
  model ever trained on. The champion comparison is made here, on identical rows;
- `holdout`: holdout rows of the whole window (so `recent` is a subset of it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.config import Config, HoldoutSpec, month_bounds
from flywheel.paths import Home

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
EVENT_TS = "event_timestamp"


class TrainingSetError(ValueError):
    """The requested window cannot give a training set (no data, bad months, lost rows)."""


@dataclass(frozen=True)
class Window:
    """Months [first, last], both included, as YYYY-MM."""

    first: str
    last: str

    @property
    def end(self) -> datetime:
        """The instant after the window: no training row may be at or after it."""
        after = month_bounds(self.last)[1]
        return datetime(after.year, after.month, after.day, tzinfo=UTC)

    def months(self, cfg: Config) -> list[str]:
        return [m for m in cfg.months() if self.first <= m <= self.last]


def ingested_months(cfg: Config, home: Home) -> list[str]:
    folder = home.entity_rows(cfg.entity.name)
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


def resolve_window(cfg: Config, home: Home, first: str | None, last: str | None) -> Window:
    """The window asked for. By default it ends with the last ingested month and starts
    `training.window_months` before (or with the first ingested month when unset)."""
    have = ingested_months(cfg, home)
    if not have:
        raise TrainingSetError(f"no ingested months under {home.entity_rows(cfg.entity.name)}")
    last = last or have[-1]
    if first is None:
        earlier = [m for m in have if m <= last] or have
        first = earlier[-cfg.training.window_months :][0] if cfg.training.window_months else have[0]
    window = Window(first, last)
    for name, month in (("first", window.first), ("last", window.last)):
        month_bounds(month)  # validates the form
        if month not in have:
            raise TrainingSetError(f"window {name} month {month} is not ingested (have {have})")
    if window.first > window.last:
        raise TrainingSetError(f"window starts ({window.first}) after it ends ({window.last})")
    return window


def in_holdout(ids: pd.Series, spec: HoldoutSpec) -> pd.Series:
    """The frozen holdout rule: a stable hash of (salt, id) below `fraction`."""
    salt = spec.salt.encode()

    def unit(value: str) -> float:
        digest = hashlib.blake2b(value.encode(), key=salt, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return ids.astype(str).map(unit) < spec.fraction


def entity_frame(cfg: Config, home: Home, window: Window) -> pd.DataFrame:
    """Labelled entity rows of the window, with their join keys (the Feast entity_df)."""
    from flywheel.features import read_partitions

    rows = read_partitions(home.entity_rows(cfg.entity.name), window.months(cfg))
    rows = rows[rows[cfg.label.name].notna()]
    if rows.empty:
        raise TrainingSetError(f"no labelled rows in {window.first}..{window.last}")
    columns = [*cfg.entity_columns(), EVENT_TS, cfg.label.name]
    return rows[columns].reset_index(drop=True)


def retrieve(cfg: Config, home: Home, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join through the versioned FeatureService; no row may be lost."""
    from flywheel import feast_ops

    fs = feast_ops.store(cfg, home)
    service = fs.get_feature_service(cfg.feast.feature_service)
    with feast_ops.home_in_env(home):
        joined = feast_ops.while_materializing(
            lambda: fs.get_historical_features(entity_df=entity_df, features=service).to_df()
        )
    if len(joined) != len(entity_df):
        # The offline store drops rows whose entity has data, but none within the TTL.
        raise TrainingSetError(
            f"the point-in-time join returned {len(joined)} of {len(entity_df)} rows: "
            "a feature view's TTL is shorter than its data's cadence"
        )
    key = cfg.entity.join_key
    return joined.set_index(key).loc[entity_df[key]].reset_index()


@dataclass
class TrainingSet:
    window: Window
    frame: pd.DataFrame = field(repr=False)  # every labelled row with features + `split`
    fingerprint: str = ""

    def split(self, name: str) -> pd.DataFrame:
        """`train`, `recent`, or `holdout`: every holdout row, the recent ones included."""
        labels = self.frame["split"]
        mask = labels != "train" if name == "holdout" else labels == name
        return self.frame[mask].drop(columns="split")

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.frame["split"].value_counts().items()}


def assign_splits(cfg: Config, frame: pd.DataFrame, window: Window) -> pd.Series:
    import numpy as np
    import pandas as pd

    holdout = in_holdout(frame[cfg.entity.join_key], cfg.training.holdout).to_numpy()
    months = window.months(cfg)
    recent_months = months[-cfg.training.eval_months :]
    first_recent = month_bounds(recent_months[0])[0]
    recent = (frame[EVENT_TS] >= pd.Timestamp(first_recent, tz="UTC")).to_numpy()
    return pd.Series(
        np.where(~holdout, "train", np.where(recent, "recent", "holdout")), index=frame.index
    )


def build(cfg: Config, home: Home, window: Window) -> TrainingSet:
    entity_df = entity_frame(cfg, home, window)
    frame = retrieve(cfg, home, entity_df)
    frame["split"] = assign_splits(cfg, frame, window)
    return TrainingSet(window=window, frame=frame)


def data_fingerprint(frame: pd.DataFrame, columns: list[str]) -> str:
    """Content hash of the rows and columns a model sees (order-independent)."""
    import pandas as pd

    part = frame[sorted(columns)]
    row_hashes = pd.util.hash_pandas_object(part, index=False).sort_values().to_numpy()
    return hashlib.sha256(row_hashes.tobytes() + json.dumps(sorted(columns)).encode()).hexdigest()


def fingerprint(
    data: str, feature_definitions: dict[str, Any], code_version: str, params: dict[str, Any]
) -> str:
    """One hash of everything that decides a model: same fingerprint, same model."""
    blob = json.dumps(
        {"data": data, "features": feature_definitions, "code": code_version, "params": params},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def write_splits(ts: TrainingSet, folder: Path) -> dict[str, str]:
    """The splits as Parquet files the training entrypoint (local or pod) reads."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("train", "recent", "holdout"):
        path = folder / f"{name}.parquet"
        ts.split(name).to_parquet(path, index=False)
        paths[name] = str(path)
    (folder / "window.json").write_text(json.dumps(asdict(ts.window)))
    return paths
