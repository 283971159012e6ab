"""The year in review: did retraining pay off? One self-contained HTML page + the same
numbers as JSON, from what the loop left behind (prediction log, drift windows, retrain
requests, the MLflow registry) and the replay's timeline.

Quality per month compares three models on the same flights (every flight of the month
with a known label, scored on the features the champion really received):
- **served**: what Flywheel's champion of the day predicted (the prediction log);
- **static**: the first champion, trained once on the first quarter and never replaced;
- **oracle**: a model retrained before every month on everything before it, with the
  champion's hyperparameters: what retraining every month would have bought.
"""

from __future__ import annotations

import html
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.config import Config
from flywheel.paths import Home

if TYPE_CHECKING:
    import pandas as pd


def _month(ts: Any) -> Any:
    return ts.dt.strftime("%Y-%m")


def quality(cfg: Config, home: Home, oracle: bool = True) -> dict[str, Any]:
    """Served vs static vs oracle on every scored month."""
    import mlflow
    import numpy as np

    from flywheel import metrics, monitoring, prediction_log, registry, training, training_set
    from flywheel.features import EVENT_TS
    from flywheel.runspec import PREDICTION

    metric = cfg.performance_metric
    uri = training.tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    name = cfg.registry.model_name
    versions = registry.history(uri, name)
    promoted = [v for v in versions if v.get("promoted_at")] or versions
    first = min(promoted, key=lambda v: int(v["version"]))["version"] if promoted else None
    months = prediction_log.batch_months(home)
    as_of = monitoring.data_clock(home)
    label = cfg.label.name
    # Where the loop already trained exactly the oracle's model (same window, the
    # configured model and hyperparameters), the report loads it instead of refitting.
    client = mlflow.MlflowClient(uri)
    trained = {
        v["window"]: v["version"]
        for v in versions
        if v.get("window") and _trained_as_configured(cfg, client.get_run(v["run_id"]).data.params)
    }
    year: pd.DataFrame | None = None
    static_model = training.load_model(f"models:/{name}/{first}") if first else None
    months_ingested = training_set.ingested_months(cfg, home)
    rows = []
    oracle_seconds = 0.0
    for month in months:
        logged = prediction_log.join_labels(cfg, home, month, as_of)
        logged = logged[logged[label].notna()]
        if logged.empty:
            continue
        y = logged[label]
        entry: dict[str, Any] = {
            "month": month,
            "rows": len(logged),
            "served_versions": sorted(logged[prediction_log.MODEL_VERSION].unique().tolist()),
            "served": metrics.evaluate(cfg.task, y, logged[PREDICTION])[metric],
        }
        if static_model is not None:
            entry["static"] = metrics.evaluate(
                cfg.task, y, training.predict(static_model, logged, cfg)
            )[metric]
        before = training_set.Window(*_lookback(cfg, months_ingested, month))
        if oracle and before.last:
            key = f"{before.first}..{before.last}"
            if key in trained:
                model = training.load_model(f"models:/{name}/{trained[key]}")
                entry["oracle_model"] = f"v{trained[key]} (the loop trained the same window)"
            else:
                if year is None:  # one point-in-time retrieval; each oracle fits a slice
                    window = training_set.Window(months_ingested[0], months_ingested[-1])
                    year = training_set.build(cfg, home, window).frame
                    year["_month"] = _month(year[EVENT_TS])
                train = year[
                    (year["_month"] >= before.first)
                    & (year["_month"] <= before.last)
                    & (year["split"] == "train")
                ]
                began = time.perf_counter()
                model = training.fit_like_champion(cfg, train)
                oracle_seconds += time.perf_counter() - began
                entry["oracle_model"] = f"fitted on {key}"
            entry["oracle"] = metrics.evaluate(cfg.task, y, training.predict(model, logged, cfg))[
                metric
            ]
        rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()})
    return {
        "metric": metric,
        "static_version": first,
        "by_month": rows,
        "oracle_fit_seconds": round(oracle_seconds, 1),
        "mean": {
            line: float(np.mean([r[line] for r in rows if line in r]))
            for line in ("served", "static", "oracle")
            if any(line in r for r in rows)
        },
    }


def _trained_as_configured(cfg: Config, params: dict[str, str]) -> bool:
    """Whether a training run used the configured model type and hyperparameters."""
    if params.get("model_type") != cfg.training.model.type:
        return False
    return all(params.get(f"model.{k}") == str(v) for k, v in cfg.training.model.params.items())


def _lookback(cfg: Config, months: list[str], month: str) -> tuple[str, str]:
    """The oracle's window for `month`: what a retrain just before it would have seen."""
    earlier = [m for m in months if m < month]
    if not earlier:
        return month, ""  # empty window
    span = cfg.training.window_months or len(earlier)
    return earlier[-span:][0], earlier[-1]


def summarize(q: dict[str, Any], since: str) -> dict[str, Any]:
    """Mean of each line over the months from `since` (the months after drift set in)."""
    import numpy as np

    rows = [r for r in q["by_month"] if r["month"] >= since]
    means = {
        line: round(float(np.mean([r[line] for r in rows])), 4)
        for line in ("served", "static", "oracle")
        if rows and all(line in r for r in rows)
    }
    out: dict[str, Any] = {"since": since, "months": [r["month"] for r in rows], **means}
    if "served" in means and "static" in means:
        out["served_minus_static"] = round(means["served"] - means["static"], 4)
    if "served" in means and "oracle" in means:
        out["oracle_minus_served"] = round(means["oracle"] - means["served"], 4)
    return out


def _read_jsons(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def loop_facts(cfg: Config, home: Home) -> dict[str, Any]:
    """Drift windows, policy decisions, retrain requests, gate decisions, alias moves."""
    from flywheel import registry, training

    uri = training.tracking_uri(home)
    name = cfg.registry.model_name
    windows = _read_jsons(home.monitoring / "windows")
    return {
        "drift": [
            {
                "window": w["window"],
                "model_version": w["model_version"],
                "drift": w["drift"],
                "decay": w["decay"],
                "drift_share": w["drift_share"],
                "prediction_score": w["prediction_score"],
                "drifted_features": w["drifted_features"],
                "performance": w.get("performance"),
                "reference_performance": w.get("reference_performance"),
                "report_html": w["report"]["html"],
                "report_url": w.get("report_url"),
                "decision": w.get("decision"),
            }
            for w in windows
        ],
        "retrains": _read_jsons(home.monitoring / "retrains"),
        "versions": registry.history(uri, name),
        "alias_moves": registry.alias_moves(uri, name),
    }


STAGES = {
    "ingest": ("ingest_features", None),
    "validate": ("ingest_features", "validate_batch"),
    "train": ("train_model", None),
    "score": ("score_batch", None),
    "monitor": ("monitor_drift", None),
}


def timings(timeline: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Seconds per stage (runs that did work), and how much of the runs' time was
    orchestration: run time not spent inside any task."""
    stages = dict.fromkeys(STAGES, 0.0)
    run_s = task_s = 0.0
    for month in timeline:
        for run in month["runs"]:
            tasks = run["tasks"]
            busy = sum(t["seconds"] for t in tasks.values())
            run_s += run["seconds"]
            task_s += busy
            for stage, (dag_id, task_id) in STAGES.items():
                if run["dag_id"] != dag_id:
                    continue
                stages[stage] += tasks.get(task_id, {}).get("seconds", 0.0) if task_id else busy
    stages["ingest"] -= stages["validate"]  # "ingest" = the rest of ingest_features
    return {
        "stages_s": {k: round(v, 1) for k, v in stages.items()},
        "task_s": round(task_s, 1),
        "run_s": round(run_s, 1),
        "orchestration_overhead_s": round(run_s - task_s, 1),
        "wall_s": round(wall_s, 1),
    }


def plot_svg(q: dict[str, Any], retrain_months: list[str], title: str) -> str:
    """The three quality lines by month, retrains marked; an inline SVG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = q["by_month"]
    months = [r["month"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=100)
    # Drawn bottom to top: where two lines agree (same model), the served one stays visible.
    styles = {
        "oracle": ("#9aa0a6", "--", 2.0, "oracle: retrained before every month"),
        "static": ("#d93025", "-", 5.0, f"static: v{q['static_version']}, trained once on Q1"),
        "served": ("#1a73e8", "-", 2.2, "served by Flywheel"),
    }
    for line, (color, dash, width, label) in styles.items():
        points = [(m, r[line]) for m, r in zip(months, rows, strict=True) if line in r]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, dash, color=color, marker="o", linewidth=width, label=label,
                    alpha=0.55 if line == "static" else 1.0)  # fmt: skip
    for m in retrain_months:
        # A retrain after window m serves from the next month: mark between the two.
        if m in months:
            ax.axvline(months.index(m) + 0.5, color="#188038", alpha=0.35, linewidth=6)
    if retrain_months:
        ax.plot([], [], color="#188038", alpha=0.35, linewidth=6, label="drift-triggered retrain")
    ax.set_ylabel("ROC AUC" if q["metric"] == "roc_auc" else q["metric"])
    ax.set_title(title, fontsize=12)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9, frameon=False)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def _a(url: str | None, text: str) -> str:
    if not url:
        return html.escape(text)
    return f'<a href="{html.escape(url)}">{html.escape(text)}</a>'


def _file_url(path: str | Path) -> str:
    return Path(path).resolve().as_uri()


def render_html(data: dict[str, Any], svg: str) -> str:
    e = html.escape
    q, s = data["quality"], data["summary"]
    facts, t = data["loop"], data["timings"]
    metric = q["metric"]

    def num(v: Any, digits: int = 3) -> str:
        return f"{v:.{digits}f}" if isinstance(v, int | float) else "–"

    quality_rows = "".join(
        f"<tr><td>{r['month']}</td><td>{num(r.get('served'))}</td><td>{num(r.get('static'))}"
        f"</td><td>{num(r.get('oracle'))}</td><td>v{', v'.join(r['served_versions'])}</td>"
        f"<td>{r['rows']:,}</td></tr>"
        for r in q["by_month"]
    )
    drift_rows = "".join(
        f"<tr class='{'flag' if w['drift'] or w['decay'] else ''}'><td>{w['window']}</td>"
        f"<td>v{e(w['model_version'])}</td><td>{num(w['drift_share'], 2)}</td>"
        f"<td>{num(w['prediction_score'])}</td><td>{'yes' if w['decay'] else 'no'}</td>"
        f"<td>{e(', '.join(w['drifted_features'][:6]) or '–')}</td>"
        f"<td>{'<b>RETRAIN</b>' if (w.get('decision') or {}).get('retrain') else 'no'}</td>"
        f"<td>{_a(_file_url(w['report_html']), 'Evidently')} · {_a(w.get('report_url'), 'MLflow')}"
        f"</td></tr>"
        for w in facts["drift"]
    )
    decision_rows = "".join(
        f"<tr><td>{w['window']}</td>"
        f"<td>{e('; '.join((w.get('decision') or {}).get('reasons', [])))}</td></tr>"
        for w in facts["drift"]
    )
    retrain_rows = "".join(
        f"<tr><td>{r['window']}</td><td><code>{e(r['run_id'])}</code></td>"
        f"<td>{e(r['reason'])}</td><td>{e(str((r.get('outcome') or {}).get('result', r['state'])))}"
        f" {e(str((r.get('outcome') or {}).get('version') or ''))}</td>"
        f"<td>{e(str((r.get('outcome') or {}).get('gate') or ''))}</td></tr>"
        for r in facts["retrains"]
    )
    version_rows = "".join(
        f"<tr><td>v{e(v['version'])}</td><td>{e(v.get('window') or '')}</td>"
        f"<td>{e(v.get('reason') or '')}</td><td>{e(v.get('gate') or '')}</td>"
        f"<td>{e(v.get('aliases') or '')}</td></tr>"
        for v in data["versions_table"]
    )
    move_rows = "".join(
        f"<tr><td>{e(str(m.get('at', '')))}</td><td>{e(str(m.get('action', '')))}</td>"
        f"<td>{e(str(m.get('old') or '–'))} → {e(str(m.get('new') or '–'))}</td>"
        f"<td>{e(str(m.get('reason') or ''))}</td></tr>"
        for m in facts["alias_moves"]
    )
    stage_rows = "".join(
        f"<tr><td>{k}</td><td>{v:.0f} s</td></tr>" for k, v in t["stages_s"].items()
    )
    links = data["links"]
    verdict = (
        f"Over {e(s['since'])}..{e(s['months'][-1] if s['months'] else '')}, the served model "
        f"averaged {metric.upper()} {num(s.get('served'))}: "
        f"<b>{num(s.get('served_minus_static'), 3)}</b> vs the static Q1 model "
        f"({num(s.get('static'))}) and {num(s.get('oracle_minus_served'), 3)} below the monthly "
        f"oracle ({num(s.get('oracle'))}), with {data['retrains']['served']} retrain(s) against "
        f"the oracle's {data['retrains']['oracle']}."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Flywheel: the year in review</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
  color: #202124; padding: 0 1rem; }}
h1 {{ margin-bottom: .2rem; }} h2 {{ margin-top: 2.2rem; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #eee; padding: 4px 8px; text-align: left;
  vertical-align: top; }}
th {{ background: #f6f8fa; }} tr.flag td {{ background: #fff4e5; }}
.verdict {{ font-size: 16px; background: #e8f0fe; padding: .8rem 1rem; border-radius: 6px; }}
.muted {{ color: #5f6368; }} svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>Flywheel: the year in review</h1>
<p class="muted">{e(data["config"])} · {e(data["first_month"])}..{e(data["last_month"])} replayed
through the Airflow scheduler · generated {e(data["generated_at"])} ·
{_a(links.get("airflow"), "Airflow")} · {_a(links.get("mlflow"), "MLflow")} ·
{_a(links.get("data_docs"), "Great Expectations Data Docs")}</p>
<p class="verdict">{verdict}</p>
<h2>Model quality by month</h2>
{svg}
<table><tr><th>month</th><th>served</th><th>static</th><th>oracle</th><th>served by</th>
<th>labelled flights</th></tr>{quality_rows}</table>
<h2>Drift, month by month</h2>
<p class="muted">Distance of each month from the serving model's own training snapshot
(share of drifted features; score drift = normed Wasserstein of the predictions).</p>
<table><tr><th>window</th><th>model</th><th>drift share</th><th>score drift</th><th>decay</th>
<th>drifted features</th><th>policy</th><th>reports</th></tr>{drift_rows}</table>
<h2>Why each policy decision</h2>
<table><tr><th>window</th><th>reasons</th></tr>{decision_rows}</table>
<h2>Retrains</h2>
<table><tr><th>window</th><th>train_model run</th><th>why</th><th>outcome</th><th>gate</th>
</tr>{retrain_rows}</table>
<h2>Model versions and gate decisions</h2>
<table><tr><th>version</th><th>window</th><th>trained because</th><th>gate</th><th>aliases</th>
</tr>{version_rows}</table>
<h2>Promotions and rollbacks</h2>
<table><tr><th>when</th><th>what</th><th>@champion</th><th>why</th></tr>{move_rows}</table>
<h2>Where the time went</h2>
<table><tr><th>stage</th><th>task time</th></tr>{stage_rows}
<tr><td>orchestration overhead (run time outside tasks)</td>
<td>{t["orchestration_overhead_s"]:.0f} s</td></tr>
<tr><td><b>replay, wall clock</b></td><td><b>{t["wall_s"]:.0f} s</b></td></tr></table>
</body></html>
"""


def versions_table(facts: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "version": str(v["version"]),
            "window": v.get("window"),
            "reason": (v.get("reason") or "")[:200],
            "gate": f"{v.get('gate_decision') or 'not gated'}: "
            + "; ".join(
                f"{'ok' if c['passed'] else 'FAILED'} {c['detail']}" for c in v["gate_checks"]
            ),
            "aliases": ", ".join(f"@{a}" for a in v.get("aliases", [])),
        }
        for v in facts["versions"]
    ]


def build(
    cfg: Config,
    home: Home,
    timeline: list[dict[str, Any]],
    wall_s: float,
    out_dir: Path,
    links: dict[str, str | None],
    since: str = "2013-05",
    oracle: bool = True,
) -> dict[str, Path]:
    """Write report.html and report.json; returns their paths."""
    q = quality(cfg, home, oracle=oracle)
    facts = loop_facts(cfg, home)
    retrain_months = [r["window"] for r in facts["retrains"]]
    months = [m for mo in timeline for m in [mo["month"]]]
    data: dict[str, Any] = {
        "config": cfg.name,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "first_month": cfg.months()[0],
        "last_month": max(months) if months else "",
        "quality": q,
        "summary": summarize(q, since),
        "retrains": {
            "served": len(retrain_months),
            "served_months": retrain_months,
            # The oracle retrains before every month of the period it is compared over.
            "oracle": sum(1 for r in q["by_month"] if "oracle" in r and r["month"] >= since),
        },
        "loop": facts,
        "versions_table": versions_table(facts),
        "timings": timings(timeline, wall_s),
        "timeline": timeline,
        "links": links,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    title = "Model quality by month: served vs static vs monthly oracle"
    svg = plot_svg(q, retrain_months, title)
    paths = {"html": out_dir / "report.html", "json": out_dir / "report.json"}
    paths["html"].write_text(render_html(data, svg))
    paths["json"].write_text(json.dumps(data, indent=2, default=str))
    return paths
