"""
### train_model

Every model Flywheel serves got there through this DAG, with its lineage on record and
every gate passed. It starts:
- when monitor_drift's retrain policy asks (run id `drift__<month>`; conf: `reason`,
  `drifted_features`, `drift_report`, `retrain_request`);
- by hand, with typed Params;
- when new features land (the `features` Asset), but that trains only the first champion,
  once `training.bootstrap_months` are in (or every month with
  `training.retrain_on_new_features`).

1. **prepare_training**: point-in-time training set from Feast through the versioned
   FeatureService over the window; splits by the frozen holdout rule; fingerprint of
   (data, feature definitions, code version, params): a registered model with the same
   fingerprint ends the run here, unless `force`. Then a Great Expectations checkpoint on
   the training set (a failure stops the run, and is recorded in MLflow) and the MLflow run
   with the lineage tags.
2. **train_local** or **train_kubernetes** (`compute` Param): the same entrypoint,
   `python -m flywheel.train --spec ...`, as a subprocess here or as a GPU pod when a
   cluster is configured (`FLYWHEEL_K8S_NAMESPACE`).
3. **register_candidate**: a new version in the MLflow registry, with its lineage tags.
4. **gate_candidate**: lineage complete, absolute thresholds, and beats `@champion` on the
   same unseen rows by the configured margin. The decision and its numbers go to the task
   log and to the version's tags. `dry_run` decides and records, never promotes.
5. **approve_promotion** (only with `require_approval`): a human approves in the UI.
6. **promote_champion**: `@champion` moves (the old one becomes `@previous_champion`) under
   a lock, so promotions never interleave; emits the `model` Asset.
7. **write_run_card**: one page joining the Airflow run, MLflow run, Feast service,
   validation result and alias state, logged to MLflow.
8. **close_retrain_request**: a drift-triggered run marks its request answered, with the
   outcome (promoted, refused, no candidate, or failed), whatever happened before; and
   the run ends failed when any task in it failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from flywheel.k8s import cluster_configured
from flywheel.paths import Home

HOME = Home.from_env()
FEATURES = Asset(name="features", uri=HOME.features_uri)
MODEL = Asset(name="model", uri=HOME.model_uri)
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"


def _link_mlflow_run(info: dict[str, Any], context: dict[str, Any]) -> None:
    """Publish the MLflow run's URL: the task's "MLflow run" button (plugins/)."""
    from flywheel.training import MLFLOW_RUN_URL_KEY, mlflow_run_url

    url = mlflow_run_url(HOME, info)
    if url:
        context["ti"].xcom_push(key=MLFLOW_RUN_URL_KEY, value=url)


def _reason(context: dict[str, Any]) -> str:
    """Why this run happened, for the MLflow run and the run card."""
    dag_run = context["dag_run"]
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    if run_type == "asset_triggered":
        months = [
            e.extra.get("month")
            for events in context["triggering_asset_events"].values()
            for e in events
        ]
        return f"new features: {', '.join(m for m in months if m) or 'features Asset'}"
    return f"{run_type} run"


@dag(
    schedule=[FEATURES],
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    # One training at a time: each run compares against the champion the last one left.
    max_active_runs=1,
    default_args={"owner": "flywheel", "retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["flywheel", "training"],
    params={
        "window_first": Param(
            None,
            type=["null", "string"],
            pattern=MONTH,
            description="First month of the training window (default: first ingested)",
        ),
        "window_last": Param(
            None,
            type=["null", "string"],
            pattern=MONTH,
            description="Last month of the window (default: last ingested)",
        ),
        "model_type": Param(
            "hist_gbm",
            enum=["hist_gbm", "torch_mlp"],
            description="hist_gbm: scikit-learn, CPU. torch_mlp: PyTorch, CUDA if present",
        ),
        "hyperparameters": Param(
            {}, type="object", description="Overrides of the config's hyperparameters"
        ),
        "compute": Param(
            "local",
            enum=["local", "kubernetes"],
            description="local: a subprocess on the worker. kubernetes: a GPU pod",
        ),
        "gpus": Param(
            1, type="integer", minimum=1, maximum=8, description="GPUs for the kubernetes pod"
        ),
        "force": Param(False, type="boolean", description="Retrain even if inputs are unchanged"),
        "dry_run": Param(
            False, type="boolean", description="Gate decides and records, never promotes"
        ),
        "require_approval": Param(
            False, type="boolean", description="A human approves the promotion in the UI"
        ),
        "reason": Param(None, type=["null", "string"], description="Why (set by drift triggers)"),
        "drift_report": Param(
            None, type=["null", "string"], description="Link to the drift report"
        ),
        "drifted_features": Param(
            [], type="array", description="Features whose drift led to this run (drift triggers)"
        ),
        "retrain_request": Param(
            None,
            type=["null", "string"],
            description="The monitor_drift retrain request this run answers; closed at the end",
        ),
    },
    doc_md=__doc__,
)
def train_model() -> None:
    @task
    def prepare_training(**context: Any) -> dict[str, Any]:
        import logging

        from flywheel.config import load_config
        from flywheel.training import Plan, TrainingRefused, new_features_verdict, prepare

        cfg = load_config()
        log = logging.getLogger("airflow.task")
        run_type = getattr(context["dag_run"].run_type, "value", context["dag_run"].run_type)
        if run_type == "asset_triggered":
            why_not = new_features_verdict(cfg, HOME)
            if why_not:
                log.info("Not training: %s", why_not)
                raise AirflowSkipException(why_not)
        plan = Plan.from_params(cfg, dict(context["params"]), _reason(context))
        if plan.compute == "kubernetes" and not cluster_configured():
            raise AirflowFailException(
                "compute=kubernetes, but no cluster is configured: set FLYWHEEL_K8S_NAMESPACE "
                "(and the other FLYWHEEL_K8S_* variables, see .env.example)"
            )
        try:
            info = prepare(cfg, HOME, plan, context["dag"].dag_id, context["run_id"])
        except TrainingRefused as err:
            raise AirflowFailException(str(err)) from None
        if "skip" in info:
            log.info("Not training: %s", info["skip"])
            raise AirflowSkipException(info["skip"])
        _link_mlflow_run(info, context)
        return info

    @task.branch
    def choose_compute(info: dict[str, Any]) -> str:
        return "train_kubernetes" if info["plan"]["compute"] == "kubernetes" else "train_local"

    @task
    def train_local(info: dict[str, Any]) -> None:
        from flywheel.training import train_local as run

        run(info["spec_path"])

    @task(trigger_rule="none_failed_min_one_success")
    def register_candidate(info: dict[str, Any]) -> dict[str, Any]:
        from flywheel.config import load_config
        from flywheel.training import register_candidate as register

        return register(load_config(), HOME, info)

    @task
    def gate_candidate(info: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
        from flywheel.config import load_config
        from flywheel.training import gate

        return gate(load_config(), HOME, info, candidate, dry_run=info["plan"]["dry_run"])

    @task.branch
    def decide_promotion(verdict: dict[str, Any], **context: Any) -> list[str]:
        import logging

        logging.getLogger("airflow.task").info("%s", verdict["summary"])
        if not verdict["promote"]:
            return []  # refused or dry run: @champion stays where it is
        return [
            "approve_promotion" if context["params"]["require_approval"] else "promote_champion"
        ]

    approve_promotion = ApprovalOperator(
        task_id="approve_promotion",
        subject="Promote the new model to @champion?",
        body="{{ ti.xcom_pull(task_ids='gate_candidate')['summary'] }}",
        response_timeout=timedelta(days=1),
    )

    @task(trigger_rule="none_failed_min_one_success", outlets=[MODEL])
    def promote_champion(
        info: dict[str, Any], candidate: dict[str, Any], verdict: dict[str, Any], **context: Any
    ) -> dict[str, Any]:
        from flywheel.config import load_config
        from flywheel.training import promote

        record = promote(load_config(), HOME, candidate, verdict,
                         who=f"airflow:{context['dag'].dag_id}/{context['run_id']}",
                         reason=info["plan"]["reason"])  # fmt: skip
        context["outlet_events"][MODEL].extra = {
            "version": candidate["version"], "previous": record.get("old"),
            "metrics": candidate["metrics"].get("recent", {}),
        }  # fmt: skip
        return record

    @task(trigger_rule="none_failed_min_one_success")
    def write_run_card(
        info: dict[str, Any], candidate: dict[str, Any], verdict: dict[str, Any], **context: Any
    ) -> str:
        from flywheel.config import load_config
        from flywheel.training import write_run_card as write

        run_type = getattr(context["dag_run"].run_type, "value", context["dag_run"].run_type)
        _link_mlflow_run(info, context)
        return write(load_config(), HOME, context["dag"].dag_id, context["run_id"], run_type,
                     info, candidate, verdict)  # fmt: skip

    info = prepare_training()
    branch = choose_compute(info)
    trained = [train_local(info)]
    if cluster_configured():
        # Only where a cluster exists: the provider costs seconds to import at parse time.
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

        from flywheel.k8s import PodSettings, pod_operator_kwargs

        trained.append(
            KubernetesPodOperator(
                task_id="train_kubernetes",
                **pod_operator_kwargs(
                    PodSettings.from_env(),
                    "{{ ti.xcom_pull(task_ids='prepare_training')['spec_path'] }}",
                    "{{ params.gpus }}",
                    run_id_label="{{ run_id }}",
                ),
            )
        )
    branch >> trained
    candidate = register_candidate(info)
    trained >> candidate
    verdict = gate_candidate(info, candidate)
    promoted = promote_champion(info, candidate, verdict)
    decide_promotion(verdict) >> [approve_promotion, promoted]
    approve_promotion >> promoted
    card = write_run_card(info, candidate, verdict)
    promoted >> card

    @task(trigger_rule="all_done")
    def close_retrain_request(**context: Any) -> dict[str, Any]:
        """Answers monitor_drift's request, whatever happened, so it is not triggered again;
        and fails if a task before it failed: this last task decides the run's colour, and a
        failed training must not end in a green run."""
        from flywheel.monitoring import close_request
        from flywheel.training import run_outcome

        ti, run_id = context["ti"], context["run_id"]
        states = ti.get_task_states(dag_id=context["dag"].dag_id, run_ids=[run_id])
        outcome = run_outcome(
            {t: s for t, s in states.get(run_id, {}).items() if t != ti.task_id},
            ti.xcom_pull(task_ids="register_candidate"),
            ti.xcom_pull(task_ids="gate_candidate"),
            ti.xcom_pull(task_ids="promote_champion"),
        )
        request = context["params"].get("retrain_request")
        closed = close_request(HOME, request, {"dag_run_id": run_id, **outcome}) if request else {}
        if outcome["failed_tasks"]:
            raise AirflowFailException(
                f"failed: {', '.join(outcome['failed_tasks'])}"
                + (f"; retrain request {request} closed as failed" if request else "")
            )
        if not request:
            raise AirflowSkipException("not started by a retrain request")
        return closed

    card >> close_retrain_request()


train_model()
