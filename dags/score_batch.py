"""
### score_batch

The champion at work: when a month's features land (the `features` Asset), `@champion`
scores every flight of the month on features from Feast (point-in-time, as training saw
them) and writes the month's prediction-log partition: entity keys, feature values,
score, model version, time. A re-run replaces the partition, so scoring is idempotent per
month. The `predictions` Asset event tells `monitor_drift` there is something to watch.

No champion yet (the first quarter is still coming in): the run is skipped and says so.
Re-score a month by hand with the `month` Param.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from flywheel.paths import Home

HOME = Home.from_env()
FEATURES = Asset(name="features", uri=HOME.features_uri)
PREDICTIONS = Asset(name="predictions", uri=HOME.predictions_uri)


def _months(context: dict[str, Any]) -> list[str]:
    """The Param's month, else every month whose features event started this run."""
    if context["params"].get("month"):
        return [context["params"]["month"]]
    months = {
        e.extra["month"]
        for events in context["triggering_asset_events"].values()
        for e in events
        if e.extra.get("month")
    }
    return sorted(months)


@dag(
    schedule=[FEATURES],
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "flywheel", "retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["flywheel", "serving"],
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="Month to (re-)score, YYYY-MM. Empty: the months that just landed.",
        )
    },
    doc_md=__doc__,
)
def score_batch() -> None:
    @task(outlets=[PREDICTIONS])
    def score_month(**context: Any) -> list[dict[str, Any]]:
        import logging

        from flywheel.config import load_config
        from flywheel.monitoring import NoChampion, score_month

        months = _months(context)
        if not months:
            raise AirflowSkipException("no month to score: no Param and no features event")
        cfg = load_config()
        log = logging.getLogger("airflow.task")
        scored = []
        try:
            for month in months:
                scored.append(score_month(cfg, HOME, month))
                log.info("scored %s", scored[-1])
        except NoChampion as err:
            log.info("Not scoring: %s", err)
            raise AirflowSkipException(str(err)) from None
        context["outlet_events"][PREDICTIONS].extra = {
            "months": [s["month"] for s in scored],
            "model_version": scored[-1]["model_version"],
            "rows": sum(s["rows"] for s in scored),
        }
        return scored

    score_month()


score_batch()
