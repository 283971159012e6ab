"""The steps of `ingest_features`, one function per task, free of Airflow.

Each step is idempotent for its month: re-running overwrites the month's partitions
and re-materializes the same interval, so the stores end in the same state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from flywheel import landing
from flywheel.config import Config, month_bounds
from flywheel.paths import Home

log = logging.getLogger(__name__)


class NothingToIngest(LookupError):
    """An event arrived but no batch is waiting (its batch was already taken)."""


def resolve_month(
    cfg: Config, home: Home, requested: str | None, run_type: str, interval_start: datetime | None
) -> str:
    """Which month this run ingests: the one asked for, the next landed, or the interval's."""
    if requested:
        month_bounds(requested)  # validates the form
        if requested not in cfg.months():
            raise ValueError(
                f"month {requested} is outside the source's {cfg.months()[0]}..{cfg.months()[-1]}"
            )
        month = requested
    elif run_type == "asset_triggered":
        claimed = landing.claim(home)
        if claimed is None:
            raise NothingToIngest("woken by the landing zone, but no batch is waiting")
        month = claimed
    elif interval_start is not None:
        month = interval_start.strftime("%Y-%m")
    else:
        raise ValueError("no month given, no batch landed and no data interval: nothing to do")
    landing.locate(month, home)  # fails with the paths it looked in
    return month


@dataclass(frozen=True)
class ValidationOutcome:
    month: str
    success: bool
    failures: list[str]
    docs_path: str | None
    quarantined_to: str | None


def validate(cfg: Config, home: Home, month: str) -> ValidationOutcome:
    """Great Expectations on the raw batch; a failing batch goes to quarantine."""
    from flywheel import validation

    folder = landing.locate(month, home)
    report = validation.check_batch(cfg, month, folder, home.gx)
    moved = None
    if not report.success:
        moved = landing.quarantine(month, home, {"month": month, **report.as_dict()})
        log.error("batch %s quarantined to %s", month, moved)
        ring_if_pending(home)
    return ValidationOutcome(
        month=month,
        success=report.success,
        failures=report.failures,
        docs_path=str(report.docs_path) if report.docs_path else None,
        quarantined_to=str(moved) if moved else None,
    )


def build_and_store(cfg: Config, home: Home, month: str) -> dict[str, int]:
    """Engineer the month's features and (over)write their offline partitions."""
    from flywheel import features, validation

    folder = landing.locate(month, home)
    tables = validation.read_batch(cfg, folder)
    spine_dir = home.entity_rows(cfg.entity.name)
    history = features.read_partitions(spine_dir, features.history_months(cfg, month))
    frames = features.build_features(cfg, month, tables, history)
    counts = {}
    for view, frame in frames.items():
        target = spine_dir if view == "entity_rows" else home.offline / view
        features.write_partition(target, month, frame)
        counts[view] = len(frame)
    landing.archive(month, home)
    ring_if_pending(home)
    return counts


def apply_repo(cfg: Config, home: Home) -> list[str]:
    from flywheel import feast_ops

    fs = feast_ops.apply(cfg, home)
    return sorted(v.name for v in fs.list_feature_views())


def materialize(cfg: Config, home: Home, month: str) -> dict[str, str]:
    from flywheel import feast_ops

    start, end = (datetime(d.year, d.month, d.day, tzinfo=UTC) for d in month_bounds(month))
    feast_ops.materialize(cfg, home, start, end)
    return {"start": start.isoformat(), "end": end.isoformat()}


def ring_if_pending(home: Home) -> None:
    """Re-ring the doorbell while batches wait: one run per month, none forgotten."""
    if landing.pending(home):
        landing.ring(home)
