"""The prediction log: what the champion saw and said, in one format for batch and online.

Every row: the entity keys, the event time, the feature values the model received, the
prediction, which model version made it, when, and from where (`batch` scoring or the
`online` REST server). Labels arrive later: `join_labels` attaches the matured ones.

Layout under $FLYWHEEL_HOME/predictions:
  batch/<YYYY-MM>.parquet       one partition per scored month; a re-run overwrites it
  online/<YYYY-MM-DD>/<id>.parquet  small files flushed by the REST server
  labelled/<YYYY-MM>.parquet    batch rows with the labels matured by `as_of`
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.config import Config, month_bounds
from flywheel.features import EVENT_TS
from flywheel.paths import Home
from flywheel.runspec import PREDICTION

if TYPE_CHECKING:
    import pandas as pd

MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
SCORED_AT = "scored_at"
SOURCE = "source"
REQUEST_ID = "request_id"
LABEL_KNOWN_AT = "label_known_at"
SOURCES = ("batch", "online")


class PredictionLogError(ValueError):
    pass


def columns(cfg: Config) -> list[str]:
    """The log's columns, in order."""
    inputs = [c for c in cfg.feature_names() if c not in cfg.entity_columns()]
    return [
        *cfg.entity_columns(),
        EVENT_TS,
        *inputs,
        PREDICTION,
        MODEL_NAME,
        MODEL_VERSION,
        SCORED_AT,
        SOURCE,
        REQUEST_ID,
    ]


def make_rows(
    cfg: Config,
    frame: pd.DataFrame,
    scores: Any,
    version: str,
    source: str,
    request_id: str | None = None,
    scored_at: datetime | None = None,
) -> pd.DataFrame:
    """Log rows for `frame` (entity keys, event time, features) and the model's scores."""
    import pandas as pd

    if source not in SOURCES:
        raise PredictionLogError(f"source must be one of {SOURCES}, got {source!r}")
    missing = [c for c in [*cfg.entity_columns(), *cfg.feature_names()] if c not in frame]
    if missing:
        raise PredictionLogError(f"cannot log predictions: columns missing: {missing}")
    if len(scores) != len(frame):
        raise PredictionLogError(f"{len(scores)} scores for {len(frame)} rows")
    out = frame.reset_index(drop=True).copy()
    if EVENT_TS not in out:
        out[EVENT_TS] = pd.NaT
    out[EVENT_TS] = pd.to_datetime(out[EVENT_TS], utc=True)
    out[PREDICTION] = pd.Series(scores, dtype="float64").to_numpy()
    out[MODEL_NAME] = cfg.registry.model_name
    out[MODEL_VERSION] = str(version)
    out[SCORED_AT] = pd.Timestamp(scored_at or datetime.now().astimezone()).tz_convert("UTC")
    out[SOURCE] = source
    out[REQUEST_ID] = request_id
    return out[columns(cfg)]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    """Atomic: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # Microseconds: DuckDB and Feast both read them, neither reads pandas' nanoseconds.
    frame.to_parquet(tmp, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    os.replace(tmp, path)
    return path


def batch_path(home: Home, month: str) -> Path:
    month_bounds(month)  # validates the name
    return home.predictions / "batch" / f"{month}.parquet"


def labelled_path(home: Home, month: str) -> Path:
    month_bounds(month)
    return home.predictions / "labelled" / f"{month}.parquet"


def write_batch(home: Home, month: str, rows: pd.DataFrame) -> Path:
    """The month's batch partition, replaced as a whole: scoring a month twice is harmless."""
    return _write(rows, batch_path(home, month))


def append_online(home: Home, rows: pd.DataFrame) -> Path:
    """One small file per flush of the REST server; never rewrites what is there."""
    day = str(rows[SCORED_AT].iloc[0].date())
    name = f"{datetime.now():%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
    return _write(rows, home.predictions / "online" / day / name)


def batch_months(home: Home) -> list[str]:
    folder = home.predictions / "batch"
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


def read_batch(home: Home, month: str) -> pd.DataFrame:
    import pandas as pd

    path = batch_path(home, month)
    if not path.exists():
        raise PredictionLogError(f"no batch predictions for {month} ({path})")
    return pd.read_parquet(path)


def read_online(home: Home) -> pd.DataFrame:
    import pandas as pd

    files = sorted((home.predictions / "online").glob("*/*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def join_labels(cfg: Config, home: Home, month: str, as_of: datetime) -> pd.DataFrame:
    """The month's batch predictions with every label known by `as_of` attached.

    A label is known `label.delay_days` after its event (a flight's delay is known once
    it has landed); later ones stay empty until a later join. Written to labelled/,
    replacing the previous join of the month."""
    import pandas as pd

    from flywheel.features import read_partitions

    rows = read_batch(home, month)
    truth = read_partitions(home.entity_rows(cfg.entity.name), [month])
    key, label = cfg.entity.join_key, cfg.label.name
    truth = truth[[key, label, EVENT_TS]].rename(columns={EVENT_TS: LABEL_KNOWN_AT})
    truth[LABEL_KNOWN_AT] = truth[LABEL_KNOWN_AT] + pd.Timedelta(days=cfg.label.delay_days)
    out = rows.drop(columns=[label, LABEL_KNOWN_AT], errors="ignore").merge(
        truth.drop_duplicates(key), on=key, how="left"
    )
    cutoff = pd.Timestamp(as_of)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    matured = out[LABEL_KNOWN_AT] <= cutoff
    out[label] = out[label].where(matured)
    _write(out, labelled_path(home, month))
    return out


def read_labelled(home: Home, month: str) -> pd.DataFrame:
    import pandas as pd

    path = labelled_path(home, month)
    if not path.exists():
        raise PredictionLogError(f"no labelled predictions for {month} ({path})")
    return pd.read_parquet(path)
