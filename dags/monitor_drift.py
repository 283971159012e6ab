"""
### monitor_drift

Watches what the champion sees, and asks for a retrain only when the policy allows.

1. **wait_for_predictions**: a sensor in `reschedule` mode (it frees its worker slot
   between checks) waiting for a scored month without a drift report; the `month` Param
   re-checks one by hand.
2. **check_drift**: attaches the labels that have matured (a flight's delay is known once
   it has landed), then an Evidently report compares the month with the reference
   snapshot the serving model recorded when it was trained: drift per feature, drift of
   the scores, and performance on the matured labels. HTML + JSON go to
   `$FLYWHEEL_HOME/monitoring/windows/` and to the MLflow monitoring experiment (the
   task's "MLflow run" button).
3. **decide_retrain**: the retrain policy (`flywheel.policy`: drift or decay in k of the
   last n months, cooldown, budget, green data gate) decides, and the decision with its
   reasons is recorded either way. A retrain is filed as a durable request.
4. **trigger_retrain**: every open request starts `train_model` with the reason, the
   drifted features and the report link in its conf, under the request's own run id
   (`drift__<month>`): a request is never trained twice, and one whose trigger was lost
   is triggered again by the next run. `train_model` closes the request when it ends.

Runs whenever predictions land (the `predictions` Asset) and on its own schedule
(`FLYWHEEL_MONITOR_CRON`, daily by default; `none` in the demo's simulated time).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    PokeReturnValue,
    dag,
    task,
)

from flywheel.paths import Home

HOME = Home.from_env()
PREDICTIONS = Asset(name="predictions", uri=HOME.predictions_uri)
CRON = os.environ.get("FLYWHEEL_MONITOR_CRON", "0 6 * * *")


def _schedule() -> Any:
    if CRON.lower() in ("", "none"):
        return [PREDICTIONS]
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CRON, timezone="UTC"), assets=[PREDICTIONS]
    )


@dag(
    schedule=_schedule(),
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    # The policy reads every earlier decision: one run at a time.
    max_active_runs=1,
    default_args={"owner": "flywheel", "retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["flywheel", "monitoring"],
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="Re-check this scored month, YYYY-MM. Empty: every unchecked month.",
        )
    },
    doc_md=__doc__,
)
def monitor_drift() -> None:
    @task.sensor(poke_interval=30, timeout=6 * 3600, mode="reschedule", soft_fail=True)
    def wait_for_predictions(**context: Any) -> PokeReturnValue:
        from flywheel.monitoring import unmonitored

        asked = context["params"].get("month")
        months = [asked] if asked else unmonitored(HOME)
        return PokeReturnValue(is_done=bool(months), xcom_value=months)

    @task
    def check_drift(months: list[str], **context: Any) -> list[dict[str, Any]]:
        import logging

        from flywheel.config import load_config
        from flywheel.monitoring import check_window
        from flywheel.training import MLFLOW_RUN_URL_KEY

        cfg = load_config()
        log = logging.getLogger("airflow.task")
        checked = []
        for month in months:
            record = check_window(cfg, HOME, month, context["dag"].dag_id, context["run_id"])
            log.info(
                "%s: drift=%s (share %.2f, prediction %.3f), decay=%s; drifted: %s; report: %s",
                month, record["drift"], record["drift_share"], record["prediction_score"] or 0,
                record["decay"], ", ".join(record["drifted_features"]) or "none",
                record["report_url"],
            )  # fmt: skip
            checked.append({k: record[k] for k in ("window", "drift", "decay", "report_url")})
        if checked[-1]["report_url"].startswith("http"):
            context["ti"].xcom_push(key=MLFLOW_RUN_URL_KEY, value=checked[-1]["report_url"])
        return checked

    @task
    def decide_retrain(checked: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from flywheel.config import load_config
        from flywheel.monitoring import decide_retrain as decide

        cfg = load_config()
        return [decide(cfg, HOME, c["window"]) for c in checked]

    @task
    def open_requests(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from flywheel.monitoring import open_requests as pending
        from flywheel.monitoring import trigger_kwargs

        return [trigger_kwargs(r) for r in pending(HOME)]

    requests = open_requests(decide_retrain(check_drift(wait_for_predictions())))
    TriggerDagRunOperator.partial(
        task_id="trigger_retrain",
        trigger_dag_id="train_model",
        # The request's run id: a request already triggered is skipped, never run twice.
        skip_when_already_exists=True,
        retries=2,
    ).expand_kwargs(requests)


monitor_drift()
