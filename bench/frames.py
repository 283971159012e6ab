"""Real flights of a month as the model sees them, built in memory: the entity rows joined
with every feature view the way Feast serves them point in time, without a store. The drift
tests and the drift benchmark start from these frames."""

from __future__ import annotations

import pandas as pd

from flywheel import features, landing
from flywheel.config import Config
from flywheel.features import EVENT_TS

# Feast's TTLs for the views joined "as of" an event (feature_repo/flights.py); the others
# join on their keys alone.
AS_OF_TTL = {
    "origin_weather": pd.Timedelta(hours=3),
    "carrier_history": pd.Timedelta(days=2),
    "route_history": pd.Timedelta(days=2),
}


def tables(cfg: Config, month: str) -> dict[str, pd.DataFrame]:
    """The month's raw tables with parsed timestamps, as ingestion reads them."""
    out = landing.source_batch(cfg, month)
    for name, spec in cfg.source.tables.items():
        if spec.timestamp:
            stamps = pd.to_datetime(out[name][spec.timestamp], utc=True, format="ISO8601")
            out[name] = out[name].assign(**{spec.timestamp: stamps})
    return out


def month_frame(cfg: Config, month: str) -> pd.DataFrame:
    """One row per flight of the month: its entity row joined with every feature view."""
    earlier = [
        features.entity_rows(cfg, tables(cfg, m)[cfg.source.primary])
        for m in features.history_months(cfg, month)
    ]
    earlier = [h for h in earlier if len(h)]
    history = pd.concat(earlier, ignore_index=True) if earlier else None
    views = features.build_features(cfg, month, tables(cfg, month), history)
    out = views["entity_rows"].astype(dict.fromkeys(cfg.entity_columns(), "string"))
    out = out.sort_values(EVENT_TS, kind="stable")
    for name in cfg.features:
        keys = cfg.view_keys(name)
        view = views[name].astype(dict.fromkeys(keys, "string"))
        if name in AS_OF_TTL:
            out = pd.merge_asof(
                out,
                view.sort_values(EVENT_TS),
                on=EVENT_TS,
                by=keys,
                tolerance=AS_OF_TTL[name],
                direction="backward",
            )
        else:
            out = out.merge(view.drop(columns=[EVENT_TS]), on=keys, how="left")
    return out.reset_index(drop=True)


def scored_months(cfg: Config, reference: str, current: str) -> dict[str, pd.DataFrame]:
    """Both months' frames with a `prediction` from a small gradient-boosting model fit on
    8,000 labelled flights of the reference month: a stand-in champion for drift checks."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from flywheel.runspec import PREDICTION

    frames = {m: month_frame(cfg, m) for m in (reference, current)}
    inputs = [*cfg.feature_names(), *cfg.training.categorical]
    levels = {
        c: sorted(pd.concat([f[c] for f in frames.values()]).astype(str).unique())
        for c in cfg.training.categorical
    }

    def design(frame: pd.DataFrame) -> pd.DataFrame:
        x = frame[inputs].copy()
        for c, cats in levels.items():
            x[c] = pd.Categorical(x[c].astype(str), categories=cats)
        return x

    label = cfg.label.name
    ref = frames[reference]
    train = ref[ref[label].notna()].sample(8000, random_state=0)
    model = HistGradientBoostingClassifier(
        max_iter=30, categorical_features="from_dtype", random_state=0
    )
    model.fit(design(train), train[label].astype(int))
    return {
        m: f.assign(**{PREDICTION: model.predict_proba(design(f))[:, 1]}) for m, f in frames.items()
    }
