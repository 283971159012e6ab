"""
### rollback_model

Moves `@champion` back: to `@previous_champion`, or to the version given. The version
rolled back from becomes `@previous_champion`, so a rollback can itself be undone. Who
asked and why are recorded as tags on both versions, and the `model` Asset gets an event
so everything that follows the champion (scoring, monitoring) picks the change up.

Only versions with complete lineage and a passed gate can be rolled back to.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, dag, task

from flywheel.paths import Home

HOME = Home.from_env()
MODEL = Asset(name="model", uri=HOME.model_uri)


@dag(
    schedule=None,
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A rollback is an operator's deliberate act: retrying it blindly could move twice.
    default_args={"owner": "flywheel", "retries": 1, "retry_delay": timedelta(seconds=10)},
    tags=["flywheel", "registry"],
    params={
        "reason": Param(type="string", minLength=3, description="Why roll back (recorded)"),
        "to_version": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d+$",
            description="Version to restore. Empty: @previous_champion",
        ),
    },
    doc_md=__doc__,
)
def rollback_model() -> None:
    @task(outlets=[MODEL])
    def restore_previous_champion(**context: Any) -> dict[str, Any]:
        from flywheel.config import load_config
        from flywheel.training import rollback

        dag_run = context["dag_run"]
        who = getattr(dag_run, "triggering_user_name", None) or "unknown user"
        record = rollback(load_config(), HOME, context["params"]["to_version"],
                          who=f"{who} via airflow:{context['run_id']}",
                          why=context["params"]["reason"])  # fmt: skip
        context["outlet_events"][MODEL].extra = {
            "version": record["new"],
            "rolled_back_from": record["old"],
        }
        return record

    restore_previous_champion()


rollback_model()
