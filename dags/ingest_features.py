"""
### ingest_features

Turns one month of raw flights, weather and planes from the landing zone into features:

1. **resolve_batch**: which month: the `month` Param, else the batch that just landed
   (runs started by the landing-zone doorbell), else the run's data interval.
2. **validate_batch**: a Great Expectations checkpoint on the raw files (schema, types,
   null keys, ranges, row count, freshness). A failing batch is moved to
   `landing/quarantine/` with its validation result, the run fails naming the failed
   expectations, and nothing downstream runs. Data Docs are linked from the log.
3. **build_features**: feature engineering into the Feast offline store, one Parquet
   partition per month and view: a re-run overwrites, never appends.
4. **apply_feature_repo** (`feast apply`, idempotent) and **materialize_online**: the
   month's features go to the online store; the `features` Asset gets an event whose
   extra holds the month and row counts.

Starts on its monthly schedule (data interval = the previous month) and as soon as a
batch lands: `python -m flywheel.landing land 2013-04` rings a doorbell file that an
AssetWatcher consumes. Set `FLYWHEEL_INGEST_CRON=none` to be driven by landings only
(simulated time, as the demo does).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.triggers.file import DirectoryFileDeleteTrigger
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronDataIntervalTimetable,
    Param,
    dag,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from flywheel.paths import DOORBELL, Home

HOME = Home.from_env()
FEATURES = Asset(name="features", uri=HOME.features_uri)
LANDING = Asset(
    name="landing_zone",
    uri=HOME.landing_uri,
    # Fires once per doorbell file and deletes it; ingestion re-rings while batches wait.
    watchers=[
        AssetWatcher(
            name="landing_doorbell",
            trigger=DirectoryFileDeleteTrigger(
                directory=str(HOME.incoming), filename=DOORBELL, poke_interval=5
            ),
        )
    ],
)
CRON = os.environ.get("FLYWHEEL_INGEST_CRON", "0 0 1 * *")


def _schedule() -> Any:
    if CRON.lower() in ("", "none"):
        return [LANDING]
    return AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable(CRON, timezone="UTC"), assets=[LANDING]
    )


@dag(
    schedule=_schedule(),
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    # History is replayed through the landing zone, not by scheduler backfill.
    catchup=False,
    # Months are independent until the Feast steps, which run one at a time.
    max_active_runs=3,
    default_args={"owner": "flywheel", "retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["flywheel", "features"],
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="Month to (re-)ingest, YYYY-MM. Empty: the landed or scheduled one.",
        )
    },
    doc_md=__doc__,
)
def ingest_features() -> None:
    @task
    def resolve_batch(**context: Any) -> str:
        from flywheel.config import load_config
        from flywheel.ingest import NothingToIngest, resolve_month

        try:
            return resolve_month(
                load_config(),
                HOME,
                requested=context["params"].get("month"),
                # An enum on the Task SDK's DagRun: compare its value.
                run_type=getattr(context["dag_run"].run_type, "value", context["dag_run"].run_type),
                interval_start=context.get("data_interval_start"),
            )
        except NothingToIngest as err:
            raise AirflowSkipException(str(err)) from None

    @task(retries=0)  # a rejected batch stays rejected: retrying cannot help
    def validate_batch(month: str) -> dict[str, Any]:
        import dataclasses
        import logging

        from flywheel.config import load_config
        from flywheel.ingest import validate

        outcome = validate(load_config(), HOME, month)
        log = logging.getLogger("airflow.task")
        log.info("Data Docs: %s", outcome.docs_path)
        if not outcome.success:
            raise AirflowFailException(
                f"batch {month} failed validation and was quarantined to "
                f"{outcome.quarantined_to}:\n  - " + "\n  - ".join(outcome.failures)
            )
        return dataclasses.asdict(outcome)

    @task
    def build_features(month: str, validated: dict[str, Any]) -> dict[str, int]:
        from flywheel.config import load_config
        from flywheel.ingest import build_and_store

        return build_and_store(load_config(), HOME, month)

    # One at a time across runs: the registry file and SQLite online store are shared.
    @task(max_active_tis_per_dag=1)
    def apply_feature_repo(counts: dict[str, int]) -> list[str]:
        from flywheel.config import load_config
        from flywheel.ingest import apply_repo

        return apply_repo(load_config(), HOME)

    @task(max_active_tis_per_dag=1, outlets=[FEATURES])
    def materialize_online(
        month: str, counts: dict[str, int], views: list[str], **context: Any
    ) -> dict[str, Any]:
        from flywheel.config import load_config
        from flywheel.ingest import materialize

        interval = materialize(load_config(), HOME, month)
        extra = {"month": month, **interval, "rows": counts, "views": views}
        context["outlet_events"][FEATURES].extra = extra
        return extra

    month = resolve_batch()
    counts = build_features(month, validate_batch(month))
    # Apply after the partitions exist: Feast reads a source when it first registers it.
    materialize_online(month, counts, apply_feature_repo(counts))


ingest_features()
