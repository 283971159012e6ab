"""The steps of `train_model` and `rollback_model`, one function per task, free of Airflow.

State between steps travels as small JSON-able dicts (Airflow XComs) and files under
$FLYWHEEL_HOME/training/<run>/ (the splits, the run spec, the entrypoint's result), which
a Kubernetes pod reads and writes through the same volume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flywheel.config import Config
from flywheel.paths import REPO_ROOT, Home

log = logging.getLogger(__name__)


# XCom key of the MLflow run's URL; plugins/flywheel_links.py shows it as a task button.
MLFLOW_RUN_URL_KEY = "mlflow_run_url"


def mlflow_run_url(home: Home, info: dict[str, Any]) -> str | None:
    """The MLflow UI page of this training run (None without a tracking server)."""
    uri = tracking_uri(home)
    if not uri.startswith("http") or "mlflow_run_id" not in info:
        return None
    return f"{uri.rstrip('/')}/#/experiments/{info['experiment_id']}/runs/{info['mlflow_run_id']}"


class TrainingRefused(RuntimeError):
    """The training set failed its checks; nothing was trained."""


def tracking_uri(home: Home) -> str:
    """The MLflow tracking server ($MLFLOW_TRACKING_URI; the embedded stack sets it)."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home.root / 'mlflow' / 'mlflow.db'}"
    )


def code_version() -> str:
    """The git commit this code runs from (`-dirty` if tracked files changed), or what
    the training image was built from ($FLYWHEEL_CODE_VERSION)."""
    baked = os.environ.get("FLYWHEEL_CODE_VERSION")
    if baked:
        return baked
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty.strip() else head


@dataclass(frozen=True)
class Plan:
    """What this run was asked to do, from its Params (UI) or conf (drift trigger)."""

    window_first: str | None
    window_last: str | None
    model_type: str
    params: dict[str, Any]
    compute: str
    gpus: int
    force: bool
    dry_run: bool
    reason: str
    report_url: str | None

    @classmethod
    def from_params(cls, cfg: Config, params: dict[str, Any], default_reason: str) -> Plan:
        model_type = params.get("model_type") or cfg.training.model.type
        hyper = dict(cfg.training.model.params) if model_type == cfg.training.model.type else {}
        hyper.update(params.get("hyperparameters") or {})
        return cls(
            window_first=params.get("window_first") or None,
            window_last=params.get("window_last") or None,
            model_type=model_type,
            params=hyper,
            compute=params.get("compute") or "local",
            gpus=int(params.get("gpus") or 0),
            force=bool(params.get("force")),
            dry_run=bool(params.get("dry_run")),
            reason=params.get("reason") or default_reason,
            report_url=params.get("drift_report") or None,
        )


def new_features_verdict(cfg: Config, home: Home) -> str | None:
    """Whether a `features` event alone should train: None if so, else why not.

    Until the first champion exists, yes, once `training.bootstrap_months` are in. After
    that only with `training.retrain_on_new_features`; otherwise retraining is the drift
    policy's call (flywheel.policy), so new data does not retrain a model that still fits.
    """
    from flywheel import registry, training_set

    if cfg.training.retrain_on_new_features:
        return None
    current = registry.champion(tracking_uri(home), cfg.registry.model_name)
    if current is not None:
        return (
            f"@champion v{current.version} is serving: new features alone do not retrain it "
            "(training.retrain_on_new_features is off); monitor_drift's retrain policy decides"
        )
    have = len(training_set.ingested_months(cfg, home))
    need = cfg.training.bootstrap_months
    if have < need:
        return f"no champion yet: {have} of the {need} months the first model needs are in"
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


def prepare(cfg: Config, home: Home, plan: Plan, dag_id: str, run_id: str) -> dict[str, Any]:
    """Training set → fingerprint (skip if already registered) → GX checkpoint → MLflow
    run with the lineage → run spec. Returns what later steps need."""
    import mlflow

    from flywheel import feast_ops, registry, training_set, validation
    from flywheel.runspec import RunSpec

    window = training_set.resolve_window(cfg, home, plan.window_first, plan.window_last)
    ts = training_set.build(cfg, home, window)
    folder = home.root / "training" / _safe(f"{dag_id}__{run_id}")
    paths = training_set.write_splits(ts, folder)
    train = ts.split("train")
    inputs = [*cfg.feature_names(), *cfg.training.categorical]
    data_fp = training_set.data_fingerprint(train, [cfg.entity.join_key, cfg.label.name, *inputs])
    fs = feast_ops.store(cfg, home)
    service = feast_ops.service_definition(cfg, fs)
    code = code_version()
    fp = training_set.fingerprint(
        data_fp,
        service,
        code,
        {
            "task": cfg.task,
            "model_type": plan.model_type,
            "params": plan.params,
            "holdout": cfg.training.holdout.model_dump(),
        },
    )
    uri = tracking_uri(home)
    info: dict[str, Any] = {
        "window": asdict(window),
        "fingerprint": fp,
        "dataset_fingerprint": data_fp,
        "code_version": code,
        "rows": ts.counts(),
        "folder": str(folder),
        "plan": asdict(plan),
        "feast": {
            "project": service["project"],
            "service": service["service"],
            "registry": str(home.feast / "registry.db"),
        },
    }
    existing = registry.find_by_fingerprint(uri, cfg.registry.model_name, fp)
    if existing and not plan.force:
        info["skip"] = f"unchanged inputs: version {existing} already has fingerprint {fp}"
        return info

    report = validation.validate_training_set(cfg, train, window.end, _safe(run_id), home.gx)
    info["validation"] = {
        "success": report.success,
        "failures": report.failures,
        "data_docs": str(report.docs_path) if report.docs_path else None,
    }
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(cfg.registry.experiment)
    with mlflow.start_run(
        run_name=f"{cfg.registry.model_name} {window.first}..{window.last}"
    ) as run:
        info["mlflow_run_id"] = run.info.run_id
        info["experiment_id"] = run.info.experiment_id
        mlflow.set_tags(
            {
                "airflow.dag_id": dag_id,
                "airflow.run_id": run_id,
                "feast.project": service["project"],
                "feast.feature_service": service["service"],
                "dataset.fingerprint": data_fp,
                "training.fingerprint": fp,
                "code.version": code,
                "training.window": f"{window.first}..{window.last}",
                "trigger.reason": plan.reason[:5000],
                "trigger.drift_report": plan.report_url or "",
                "validation.training_set": "passed" if report.success else "failed",
            }
        )
        mlflow.log_dict(service, "lineage/feature_service.json")
        mlflow.log_dict(info["validation"], "lineage/training_set_validation.json")
        mlflow.log_input(
            mlflow.data.from_pandas(train.head(1000), source=paths["train"], name="train"),
            context="training",
        )
        if not report.success:
            mlflow.end_run(status="FAILED")
            raise TrainingRefused(
                "the training set failed validation, nothing was trained:\n  - "
                + "\n  - ".join(report.failures)
            )
    numeric = [f for f in cfg.feature_names() if f not in cfg.training.categorical]
    spec = RunSpec(
        task=cfg.task,
        label=cfg.label.name,
        numeric=numeric,
        categorical=list(cfg.training.categorical),
        model_type=plan.model_type,
        params=plan.params,
        train_path=paths["train"],
        eval_paths={"recent": paths["recent"], "holdout": paths["holdout"]},
        slices=list(cfg.training.slices),
        tracking_uri=_pod_tracking_uri() if plan.compute == "kubernetes" else uri,
        run_id=info["mlflow_run_id"],
        output_path=str(folder / "result.json"),
        reference_rows=cfg.monitoring.reference_rows,
    )
    info["spec_path"] = str(spec.write(folder / "spec.json"))
    return info


def _pod_tracking_uri() -> str:
    # A pod cannot reach the worker's loopback: it logs to the cluster-visible server.
    from flywheel.k8s import PodSettings

    uri = PodSettings.from_env().mlflow_tracking_uri
    if not uri:
        raise ValueError("compute=kubernetes needs FLYWHEEL_K8S_MLFLOW_TRACKING_URI")
    return uri


def train_local(spec_path: str) -> None:
    """The one entrypoint (`flywheel.train.main`), in a child process of the worker; its
    output goes to the task log, line by line.

    Forked where the platform can, so the child starts with the libraries the task already
    imported (the embedded stack preloads them: flywheel.preload) instead of importing them
    again for ~20 s; a fresh `python -m flywheel.train` otherwise. Either way the same code
    runs with the same spec, as it does in the Kubernetes pod."""
    if hasattr(os, "fork") and os.environ.get("FLYWHEEL_TRAIN_FORK", "1") == "1":
        code, lines = _forked_entrypoint(spec_path)
    else:
        from flywheel.runspec import command

        proc = subprocess.run(
            command(spec_path, python=sys.executable), capture_output=True, text=True
        )
        code, lines = proc.returncode, (proc.stdout + proc.stderr).splitlines()
    for line in lines:
        log.info("train: %s", line)
    if code != 0:
        last = next((ln for ln in reversed(lines) if ln.strip()), "(no output)")
        raise RuntimeError(f"training exited with {code}: {last}")


_INHERITED_STREAMS: list[Any] = []


def _forked_entrypoint(spec_path: str) -> tuple[int, list[str]]:
    import io

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stdout, stderr and logging into the pipe, then the entrypoint
        code = 1
        # Airflow's task runner opened fds 1 and 2 as sys.stdout / sys.stderr with
        # closefd=True: replaced and collected, they would close the pipe under the child
        # (mid-training, at a garbage collection), and its output and exit code with it.
        # Held until os._exit, they never are.
        _INHERITED_STREAMS.extend((sys.stdout, sys.stderr))
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            sys.stdout = sys.stderr = io.TextIOWrapper(
                os.fdopen(write_fd, "wb", closefd=False), line_buffering=True
            )
            # The parent's handlers write to Airflow's log channel: not from two processes.
            logging.root.handlers = [logging.StreamHandler(sys.stderr)]
            from flywheel.train import main

            code = main(["--spec", spec_path])
        except BaseException:  # e.g. an import error: say so, or the task log shows nothing
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "r", errors="replace") as pipe:
        lines = [line.rstrip("\n") for line in pipe]
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), lines


def register_candidate(cfg: Config, home: Home, info: dict[str, Any]) -> dict[str, Any]:
    """Register the trained model as a new version carrying its lineage and metrics."""
    from flywheel import registry
    from flywheel.runspec import RunResult

    result = RunResult.read(Path(info["folder"]) / "result.json")
    tags = {
        "feast.feature_service": info["feast"]["service"],
        "feast.project": info["feast"]["project"],
        "dataset.fingerprint": info["dataset_fingerprint"],
        "training.fingerprint": info["fingerprint"],
        "code.version": info["code_version"],
        "training.window": f"{info['window']['first']}..{info['window']['last']}",
        "trigger.reason": info["plan"]["reason"],
        "model.type": result.model_type,
        "train.device": result.device,
    }
    version = registry.register(
        tracking_uri(home), cfg.registry.model_name, info["mlflow_run_id"], result.model_uri, tags
    )
    return {
        "version": version,
        "metrics": result.metrics,
        "device": result.device,
        "train_seconds": result.train_seconds,
        "model_uri": result.model_uri,
    }


def load_model(model_uri: str) -> Any:
    """A registered model as the estimator it was logged as (mlflow sklearn flavour)."""
    import mlflow

    return mlflow.sklearn.load_model(model_uri)


def predict(model: Any, frame: Any, cfg: Config) -> Any:
    """A model's scores on a frame: P(label=1) for classification, the value otherwise."""
    if cfg.task == "classification":
        return model.predict_proba(frame)[:, 1]
    return model.predict(frame)


def score(model_uri: str, frame: Any, cfg: Config) -> Any:
    return predict(load_model(model_uri), frame, cfg)


def fit_like_champion(cfg: Config, train: Any, seed: int = 0) -> Any:
    """The configured model fitted in-process on `train`: the report's baselines, trained
    exactly like the entrypoint trains (same builder, same hyperparameters)."""
    from flywheel.models import build_model

    categorical = list(cfg.training.categorical)
    numeric = [f for f in cfg.feature_names() if f not in categorical]
    model = build_model(
        cfg.task, cfg.training.model.type, cfg.training.model.params, numeric, categorical, seed
    )
    model.fit(train, train[cfg.label.name])
    return model


def gate(
    cfg: Config, home: Home, info: dict[str, Any], candidate: dict[str, Any], dry_run: bool
) -> dict[str, Any]:
    """Compare the candidate with the champion on the same unseen rows, decide, record."""
    import mlflow
    import pandas as pd

    from flywheel import gates, metrics, registry

    uri = tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    name = cfg.registry.model_name
    current = registry.champion(client, name)
    champion_metrics = None
    if current is not None:
        recent = pd.read_parquet(Path(info["folder"]) / "recent.parquet")
        scores = score(f"models:/{name}/{current.version}", recent, cfg)
        champion_metrics = metrics.evaluate(cfg.task, recent[cfg.label.name], scores)
    version_tags = client.get_model_version(name, candidate["version"]).tags
    decision = gates.decide(
        candidate["metrics"]["recent"], champion_metrics, version_tags, cfg.gates, dry_run=dry_run
    )
    registry.record_decision(client, name, candidate["version"], decision)
    with mlflow.start_run(run_id=info["mlflow_run_id"]):
        mlflow.set_tags({f"{k}": v[:5000] for k, v in decision.as_tags().items()})
        mlflow.log_text(decision.summary(), "gate/decision.txt")
        if champion_metrics:
            mlflow.log_metrics({f"champion_recent_{k}": v for k, v in champion_metrics.items()})
    if decision.promote:
        registry.set_challenger(client, name, candidate["version"])
    log.info("gate for %s v%s:\n%s", name, candidate["version"], decision.summary())
    return {
        "decision": decision.as_dict(),
        "promote": decision.promote,
        "summary": decision.summary(),
        "champion": current.version if current is not None else None,
        "champion_metrics": champion_metrics,
    }


def promote(
    cfg: Config,
    home: Home,
    candidate: dict[str, Any],
    verdict: dict[str, Any],
    who: str,
    reason: str,
) -> dict[str, Any]:
    import mlflow

    from flywheel import registry

    uri = tracking_uri(home)
    client = mlflow.MlflowClient(uri)
    name = cfg.registry.model_name
    tags = client.get_model_version(name, candidate["version"]).tags
    record = registry.promote(
        client,
        name,
        candidate["version"],
        registry.default_lock_path(name),
        tags,
        who=who,
        reason=reason,
    )
    return record.as_dict()


def run_outcome(
    task_states: dict[str, str | None],
    candidate: dict[str, Any] | None,
    verdict: dict[str, Any] | None,
    promoted: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a train_model run came to, from its tasks' states and results: the answer a
    retrain request gets, and whether the run must end failed. A task that failed (after
    its retries) decides: the run failed, whatever else got done."""
    failed = sorted(task for task, state in task_states.items() if state == "failed")
    if failed:
        result = "failed"
    elif promoted:
        result = "promoted"
    else:
        result = "refused" if verdict else "no candidate"
    return {
        "result": result,
        "failed_tasks": failed,
        "version": candidate["version"] if candidate else None,
        "gate": verdict["summary"] if verdict else None,
        "promoted": bool(promoted),
    }


def write_run_card(
    cfg: Config,
    home: Home,
    dag_id: str,
    run_id: str,
    run_type: str,
    info: dict[str, Any],
    candidate: dict[str, Any],
    verdict: dict[str, Any] | None,
) -> str:
    """The one page that says what is serving and where it came from (JSON + Markdown),
    logged to the MLflow run and kept under $FLYWHEEL_HOME/runcards/."""
    import json

    import mlflow

    from flywheel import registry, runcard

    uri = tracking_uri(home)
    name = cfg.registry.model_name
    card = runcard.build_run_card(
        model_name=name,
        version=candidate["version"],
        dag_id=dag_id,
        dag_run_id=run_id,
        run_type=run_type,
        trigger_reason=info["plan"]["reason"],
        mlflow_run_id=info["mlflow_run_id"],
        experiment_name=cfg.registry.experiment,
        experiment_id=info.get("experiment_id"),
        feast_project=info["feast"]["project"],
        feature_service=info["feast"]["service"],
        features=cfg.feature_names(),
        feast_registry=info["feast"]["registry"],
        validation=info["validation"],
        training_window={"start": info["window"]["first"], "end": info["window"]["last"]},
        dataset_fingerprint=info["dataset_fingerprint"],
        code_version=info["code_version"],
        model_type=info["plan"]["model_type"],
        model_params=info["plan"]["params"],
        metrics=candidate["metrics"],
        gate=verdict["decision"] if verdict else None,
        aliases=registry.aliases(uri, name),
        airflow_url=os.environ.get("AIRFLOW__API__BASE_URL"),
        mlflow_url=uri if uri.startswith("http") else None,
    )
    markdown = runcard.render_markdown(card)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=info["mlflow_run_id"]):
        mlflow.log_dict(card, "run_card.json")
        mlflow.log_text(markdown, "run_card.md")
    folder = home.root / "runcards"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-v{candidate['version']}.md"
    path.write_text(markdown)
    (folder / f"{name}-v{candidate['version']}.json").write_text(json.dumps(card, indent=2))
    return str(path)


def rollback(cfg: Config, home: Home, to_version: str | None, who: str, why: str) -> dict[str, Any]:
    from flywheel import registry

    name = cfg.registry.model_name
    record = registry.rollback(
        tracking_uri(home),
        name,
        registry.default_lock_path(name),
        who=who,
        why=why,
        to_version=to_version,
    )
    return record.as_dict()
