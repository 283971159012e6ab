"""The run card: "what exactly is serving, and where did it come from", on one page.

`build_run_card` joins the facts a train run gathers (Airflow run, MLflow run, Feast feature
service, Great Expectations result on the training set, training window, fingerprints, code
version, model, metrics per evaluation set, gate decision, aliases after promotion) into one
plain, JSON-ready dict; `render_markdown` turns it into a short page (a heading, a table of
facts, metrics, the gate checks). Train runs log both to MLflow and keep them for reports.

Plain data in, plain data out; standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

SCHEMA = "flywheel.run_card/v1"
SECTIONS = (
    "model",
    "airflow",
    "mlflow",
    "features",
    "validation",
    "data",
    "code",
    "training",
    "metrics",
    "gate",
    "serving",
)


def _join(base: str | None, *parts: str) -> str | None:
    if not base:
        return None
    return base.rstrip("/") + "".join(parts)


def airflow_run_link(base_url: str | None, dag_id: str, run_id: str) -> str | None:
    """The Airflow 3 UI page of a DAG run (run ids carry ':' and '+': quoted)."""
    return _join(base_url, f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}")


def mlflow_run_link(base_url: str | None, experiment_id: str | None, run_id: str) -> str | None:
    if not experiment_id:
        return None
    return _join(base_url, f"/#/experiments/{experiment_id}/runs/{run_id}")


def mlflow_version_link(base_url: str | None, model_name: str, version: str | None) -> str | None:
    if version is None:
        return None
    return _join(base_url, f"/#/models/{quote(model_name, safe='')}/versions/{version}")


def _window(window: Mapping[str, Any] | Sequence[Any]) -> dict[str, str]:
    if isinstance(window, Mapping):
        return {"start": str(window["start"]), "end": str(window["end"])}
    start, end = window
    return {"start": str(start), "end": str(end)}


def build_run_card(
    *,
    model_name: str,
    version: str | None,
    dag_id: str,
    dag_run_id: str,
    run_type: str,
    trigger_reason: str | None,
    mlflow_run_id: str,
    experiment_name: str,
    experiment_id: str | None,
    feast_project: str,
    feature_service: str,
    features: Sequence[str],
    feast_registry: str,
    validation: Mapping[str, Any],
    training_window: Mapping[str, Any] | Sequence[Any],
    dataset_fingerprint: str,
    code_version: str,
    model_type: str,
    model_params: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]],
    gate: Mapping[str, Any] | None,
    aliases: Mapping[str, str],
    airflow_url: str | None = None,
    mlflow_url: str | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """One train run's card.

    `validation`: the GX result on the training set, {"success": bool, "failures": [str],
    "data_docs": path or URL}. `training_window`: {"start", "end"} or (start, end).
    `metrics`: evaluation set -> metric -> value. `gate`: `gates.Decision.as_dict()` (None:
    no gate ran, e.g. a skipped retrain). `aliases`: alias -> version after promotion.
    `airflow_url` / `mlflow_url`: UI base URLs for links (None: no links).
    """
    version = None if version is None else str(version)
    serving = {str(a): str(v) for a, v in aliases.items()}
    this_aliases = sorted(a for a, v in serving.items() if v == version)
    failures = [str(f) for f in validation.get("failures") or []]
    gate_dict: dict[str, Any] | None = None
    if gate is not None:
        gate_dict = {
            "decision": gate.get("decision"),
            "promote": bool(gate.get("promote")),
            "dry_run": bool(gate.get("dry_run")),
            "checks": [
                {"name": str(c["name"]), "passed": bool(c["passed"]), "detail": str(c["detail"])}
                for c in gate.get("checks") or []
            ],
        }
    return {
        "schema": SCHEMA,
        "created_at": created_at
        or datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "model": {
            "name": model_name,
            "version": version,
            "uri": f"models:/{model_name}/{version}" if version else None,
            "link": mlflow_version_link(mlflow_url, model_name, version),
        },
        "airflow": {
            "dag_id": dag_id,
            "run_id": dag_run_id,
            "run_type": run_type,
            "trigger_reason": trigger_reason,
            "link": airflow_run_link(airflow_url, dag_id, dag_run_id),
        },
        "mlflow": {
            "run_id": mlflow_run_id,
            "experiment": experiment_name,
            "experiment_id": experiment_id,
            "link": mlflow_run_link(mlflow_url, experiment_id, mlflow_run_id),
        },
        "features": {
            "feast_project": feast_project,
            "feature_service": feature_service,
            "features": list(features),
            "registry": feast_registry,
        },
        "validation": {
            "success": bool(validation.get("success")),
            "failures": failures,
            "data_docs": validation.get("data_docs"),
        },
        "data": {"training_window": _window(training_window), "fingerprint": dataset_fingerprint},
        "code": {"version": code_version},
        "training": {"model_type": model_type, "params": dict(model_params)},
        "metrics": {str(s): {str(k): float(v) for k, v in m.items()} for s, m in metrics.items()},
        "gate": gate_dict,
        "serving": {
            "aliases": serving,
            "this_version_aliases": this_aliases,
            "is_champion": version is not None and serving.get("champion") == version,
            "champion": serving.get("champion"),
        },
    }


def _link(text: str, url: str | None) -> str:
    return f"[{text}]({url})" if url else text


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(card: Mapping[str, Any]) -> str:
    """A short page: heading, a facts table, metrics per evaluation set, the gate checks."""
    model, af, ml = card["model"], card["airflow"], card["mlflow"]
    feats, val, data, gate, serving = (
        card["features"],
        card["validation"],
        card["data"],
        card["gate"],
        card["serving"],
    )
    version = f"v{model['version']}" if model["version"] else "(not registered)"
    if serving["is_champion"]:
        status = "serving as @champion"
    elif gate is None:
        status = "no gate ran"
    elif gate["dry_run"]:
        status = f"dry run ({gate['decision']}), not promoted"
    elif gate["promote"]:
        status = "promoted"
    else:
        status = f"not promoted: gate {gate['decision']}"
    window = data["training_window"]
    names = feats["features"]
    shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
    gx = "passed" if val["success"] else f"FAILED ({len(val['failures'])} failures)"
    if val.get("data_docs"):
        gx += f", [Data Docs]({val['data_docs']})"
    params = ", ".join(f"{k}={v}" for k, v in sorted(card["training"]["params"].items()))
    trigger = af["run_type"] + (f" ({af['trigger_reason']})" if af["trigger_reason"] else "")
    aliases = ", ".join(f"@{a} → v{v}" for a, v in sorted(serving["aliases"].items())) or "none"
    rows = [
        ("Model", _link(f"{model['name']} {version}", model["link"])),
        ("Status", status),
        ("Aliases now", aliases),
        ("Airflow run", _link(f"{af['dag_id']} / {af['run_id']}", af["link"])),
        ("Trigger", trigger),
        ("MLflow run", _link(f"{ml['run_id']} ({ml['experiment']})", ml["link"])),
        ("Feature service", f"{feats['feature_service']} (Feast project {feats['feast_project']})"),
        ("Features", shown),
        ("Feast registry", feats["registry"]),
        (
            "Training data",
            f"{window['start']} → {window['end']}, fingerprint {data['fingerprint']}",
        ),
        ("Data validation (GX)", gx),
        ("Code version", card["code"]["version"]),
        ("Estimator", f"{card['training']['model_type']}" + (f" ({params})" if params else "")),
    ]
    lines = [
        f"# Run card: {model['name']} {version} — {status}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in rows),
    ]
    if val["failures"]:
        lines += ["", "Validation failures:", *(f"- {f}" for f in val["failures"][:10])]
    metrics = card["metrics"]
    if metrics:
        cols = sorted({m for per_set in metrics.values() for m in per_set})
        lines += [
            "",
            "## Metrics",
            "",
            "| eval set | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for eval_set, per_set in metrics.items():
            cells = [f"{per_set[c]:.4f}" if c in per_set else "–" for c in cols]
            lines.append(f"| {_cell(eval_set)} | " + " | ".join(cells) + " |")
    lines += ["", "## Gate", ""]
    if gate is None:
        lines.append("No gate decision recorded.")
    else:
        lines.append(f"Decision: **{gate['decision']}**")
        lines.append("")
        lines += [
            f"- {'✓' if c['passed'] else '✗'} {c['name']}: {c['detail']}" for c in gate["checks"]
        ]
    return "\n".join(lines) + "\n"
