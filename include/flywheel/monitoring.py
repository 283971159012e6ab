"""The steps of `score_batch` and `monitor_drift`, free of Airflow.

State lives under $FLYWHEEL_HOME/monitoring, one JSON file per fact, so every step can be
re-run and a lost message is found again:

  references/<run_id>.parquet   each champion's reference snapshot (cached from MLflow)
  windows/<month>/              Evidently report (HTML + JSON), drift.json
  windows/<month>.json          the window's signal and the policy's decision
  retrains/<month>.json         a durable retrain request: pending until train_model closes it
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.config import Config, month_bounds
from flywheel.paths import Home
from flywheel.runspec import PREDICTION, REFERENCE_ARTIFACT

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

RETRAIN_RUN_PREFIX = "drift__"  # run ids of drift-triggered train_model runs
PENDING, CLOSED = "pending", "closed"


class NoChampion(RuntimeError):
    """Nothing to score with yet."""


class MonitoringError(RuntimeError):
    pass


# --- small durable records ---------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def window_end(month: str) -> datetime:
    end = month_bounds(month)[1]
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


def data_clock(home: Home) -> datetime:
    """Now, on the data's clock: the end of the newest ingested month."""
    from flywheel import landing

    months = landing.archived_months(home)
    if not months:
        raise MonitoringError(f"nothing ingested yet under {home.archive}")
    return window_end(months[-1])


def data_gate_green(home: Home) -> bool:
    """Did the newest batch pass validation? Red while a month newer than (or equal to)
    every ingested one sits in quarantine without a good copy archived since."""
    from flywheel import landing

    archived = set(landing.archived_months(home))
    quarantined = (
        {p.name.split("__")[0] for p in home.quarantine.iterdir() if p.is_dir()}
        if home.quarantine.is_dir()
        else set()
    )
    bad = quarantined - archived
    return not bad or (bool(archived) and max(archived) > max(bad))


# --- scoring -------------------------------------------------------------------------------


def score_month(cfg: Config, home: Home, month: str) -> dict[str, Any]:
    """Score the month's flights with @champion on Feast features; write the log partition."""
    import mlflow

    from flywheel import prediction_log, registry, training, training_set
    from flywheel.features import EVENT_TS, read_partitions

    uri = training.tracking_uri(home)
    name = cfg.registry.model_name
    current = registry.champion(uri, name)
    if current is None:
        raise NoChampion(f"no @champion for {name} yet: nothing scores {month}")
    # Every flight of the month, labelled or not (a cancelled flight is still scored).
    entities = read_partitions(home.entity_rows(cfg.entity.name), [month])
    if entities.empty:
        raise MonitoringError(f"no entity rows for {month}: is it ingested?")
    frame = training_set.retrieve(cfg, home, entities[[*cfg.entity_columns(), EVENT_TS]])
    mlflow.set_tracking_uri(uri)
    scores = training.score(f"models:/{name}/{current.version}", frame, cfg)
    rows = prediction_log.make_rows(cfg, frame, scores, current.version, "batch")
    path = prediction_log.write_batch(home, month, rows)
    return {
        "month": month,
        "rows": len(rows),
        "model_version": current.version,
        "mean_prediction": round(float(rows[PREDICTION].mean()), 4),
        "path": str(path),
    }


# --- reference -----------------------------------------------------------------------------


def reference_for(cfg: Config, home: Home, version: str) -> tuple[pd.DataFrame, str]:
    """The reference snapshot the model `version` recorded at training time (cached)."""
    import mlflow
    import pandas as pd

    from flywheel import training

    uri = training.tracking_uri(home)
    client = mlflow.MlflowClient(uri)
    run_id = client.get_model_version(cfg.registry.model_name, version).run_id
    if not run_id:
        raise MonitoringError(f"{cfg.registry.model_name} v{version} has no training run")
    cached = home.monitoring / "references" / f"{run_id}.parquet"
    if not cached.exists():
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=uri
            )
        except Exception as err:  # MLflow raises several types for a missing artifact
            raise MonitoringError(
                f"{cfg.registry.model_name} v{version} (run {run_id}) has no reference "
                f"snapshot ({REFERENCE_ARTIFACT}): was it trained before monitoring existed? "
                f"({type(err).__name__}: {err})"
            ) from None
        cached.parent.mkdir(parents=True, exist_ok=True)
        pd.read_parquet(local).to_parquet(cached, index=False)
    return pd.read_parquet(cached), run_id


# --- a window's check -------------------------------------------------------------------


def _window_path(home: Home, month: str) -> Path:
    month_bounds(month)
    return home.monitoring / "windows" / f"{month}.json"


def monitored_windows(home: Home) -> list[str]:
    folder = home.monitoring / "windows"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def unmonitored(home: Home) -> list[str]:
    """Scored months without a drift check, oldest first: what the sensor waits for."""
    from flywheel import prediction_log

    done = set(monitored_windows(home))
    return [m for m in prediction_log.batch_months(home) if m not in done]


def check_window(cfg: Config, home: Home, month: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """Matured labels → Evidently report against the scoring model's own reference →
    the window's signal, saved and logged to the MLflow monitoring experiment."""
    import mlflow

    from flywheel import drift, metrics, prediction_log, training
    from flywheel.config import LOWER_IS_BETTER

    as_of = data_clock(home)
    current = prediction_log.join_labels(cfg, home, month, as_of)
    versions = current[prediction_log.MODEL_VERSION].value_counts()
    version = str(versions.index[0])  # the model that served the window (a month's scores
    reference, reference_run = reference_for(cfg, home, version)  # come from one version)
    out_dir = home.monitoring / "windows" / month
    result, files = drift.check_window(
        cfg, reference, current, out_dir, f"{cfg.registry.model_name} v{version}: {month}"
    )
    perf = cfg.monitoring.performance
    metric = cfg.performance_metric
    label = cfg.label.name
    reference_perf = metrics.evaluate(cfg.task, reference[label], reference[PREDICTION])
    decay = False
    drop = None
    if result.performance is not None:
        ref_value, cur_value = reference_perf[metric], result.performance[metric]
        drop = cur_value - ref_value if metric in LOWER_IS_BETTER else ref_value - cur_value
        decay = drop > perf.max_drop
    record: dict[str, Any] = {
        "window": month,
        "end": window_end(month).isoformat(),
        "as_of": as_of.isoformat(),
        "model_version": version,
        "reference_run_id": reference_run,
        "drift": result.data_drift or result.prediction_drifted,
        "data_drift": result.data_drift,
        "prediction_drifted": result.prediction_drifted,
        "decay": decay,
        "performance_drop": drop,
        "drifted_features": result.drifted,
        "drift_share": result.share,
        "prediction_score": result.prediction_score,
        "performance": result.performance,
        "reference_performance": {metric: reference_perf[metric]},
        "labelled_rows": result.labelled_rows,
        "rows": result.rows,
        "report": files,
        "checked_at": datetime.now(UTC).isoformat(),
        "airflow": {"dag_id": dag_id, "run_id": run_id},
    }
    uri = training.tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(cfg.monitoring.experiment)
    with mlflow.start_run(run_name=f"drift {month} v{version}") as run:
        mlflow.set_tags(
            {
                "window": month,
                "model.name": cfg.registry.model_name,
                "model.version": version,
                "reference.run_id": reference_run,
                "airflow.dag_id": dag_id,
                "airflow.run_id": run_id,
                "drift": str(record["drift"]),
                "decay": str(decay),
                "drifted_features": ", ".join(result.drifted)[:5000],
            }
        )
        values = {
            "drift_share": result.share,
            "labelled_rows": float(result.labelled_rows),
            **{f"drift/{col}": score for col, score in result.scores.items()},
            **({"prediction_drift": result.prediction_score} if result.prediction_score else {}),
            **{f"window_{k}": v for k, v in (result.performance or {}).items()},
            f"reference_{metric}": reference_perf[metric],
        }
        mlflow.log_metrics(values)
        for path in files.values():
            mlflow.log_artifact(path, "evidently")
        record["mlflow_run_id"] = run.info.run_id
        record["mlflow_experiment_id"] = run.info.experiment_id
    if uri.startswith("http"):
        record["report_url"] = (
            f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        )
    else:
        record["report_url"] = Path(files["html"]).as_uri()
    _write_json(_window_path(home, month), record)
    return record


def read_window(home: Home, month: str) -> dict[str, Any]:
    path = _window_path(home, month)
    if not path.exists():
        raise MonitoringError(f"no drift check for {month} yet ({path})")
    return _read_json(path)


# --- the policy's decision and retrain requests ----------------------------------------


def _request_path(home: Home, month: str) -> Path:
    return home.monitoring / "retrains" / f"{month}.json"


def requests(home: Home) -> list[dict[str, Any]]:
    folder = home.monitoring / "retrains"
    return [_read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def decide_retrain(cfg: Config, home: Home, month: str) -> dict[str, Any]:
    """Run the policy for `month` over every checked window up to it; record the decision
    in the window's record (and its MLflow run); on RETRAIN, file a durable request."""
    import mlflow

    from flywheel import policy, training

    signals = []
    for m in monitored_windows(home):
        if m > month:
            break
        w = read_window(home, m)
        signals.append(
            policy.WindowSignal(
                window=m,
                end=datetime.fromisoformat(w["end"]),
                drift=bool(w["drift"]),
                decay=bool(w["decay"]),
                drifted_features=tuple(w["drifted_features"]),
            )
        )
    if not signals or signals[-1].window != month:
        raise MonitoringError(f"no drift check for {month}: run check_window first")
    earlier = [datetime.fromisoformat(r["window_end"]) for r in requests(home)]
    gate_green = data_gate_green(home)
    decision = policy.decide(cfg.monitoring.policy, signals, earlier, gate_green)
    record = read_window(home, month)
    record["decision"] = {**decision.as_dict(), "decided_at": datetime.now(UTC).isoformat()}
    request = None
    existing = _request_path(home, month)
    if decision.retrain and not existing.exists():
        features = decision.drifted_features
        request = {
            "id": month,
            "run_id": f"{RETRAIN_RUN_PREFIX}{month}",
            "window": month,
            "window_end": record["end"],
            "state": PENDING,
            "created_at": datetime.now(UTC).isoformat(),
            "reason": (
                f"drift confirmed in {', '.join(decision.flagged_windows)}"
                + (f" ({', '.join(features[:5])})" if features else "")
                + f"; policy: {'; '.join(decision.reasons)}"
            ),
            "drifted_features": features,
            "report_url": record.get("report_url"),
        }
        _write_json(existing, request)
    elif existing.exists():
        request = _read_json(existing)
    record["request"] = request["id"] if request else None
    _write_json(_window_path(home, month), record)
    if record.get("mlflow_run_id"):
        mlflow.set_tracking_uri(training.tracking_uri(home))
        with mlflow.start_run(run_id=record["mlflow_run_id"]):
            mlflow.set_tags(
                {
                    "policy.retrain": str(decision.retrain),
                    "policy.summary": decision.summary()[:5000],
                }
            )
    log.info("%s", decision.summary())
    return {"decision": record["decision"], "request": request}


def open_requests(home: Home) -> list[dict[str, Any]]:
    """Requests not yet closed by a train_model run: each is (re-)triggered until closed.
    Triggering uses the request's own run id, so a request never trains twice."""
    return [r for r in requests(home) if r["state"] == PENDING]


def trigger_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    """TriggerDagRunOperator arguments for one request (conf = train_model's Params)."""
    return {
        "trigger_run_id": request["run_id"],
        "conf": {
            "reason": request["reason"][:1000],
            "drift_report": request["report_url"],
            "drifted_features": request["drifted_features"],
            "retrain_request": request["id"],
        },
        "note": f"Triggered by drift: {request['reason'][:400]}\nReport: {request['report_url']}",
    }


def close_request(home: Home, request_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
    path = _request_path(home, request_id)
    if not path.exists():
        raise MonitoringError(f"no retrain request {request_id!r} ({path})")
    request = _read_json(path)
    request.update(state=CLOSED, closed_at=datetime.now(UTC).isoformat(), outcome=outcome)
    _write_json(path, request)
    return request
