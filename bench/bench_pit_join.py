"""Point-in-time join speed: Feast's DuckDB offline store against its dask `file` store.

Both read the same Parquet partitions through the same FeatureService; only the engine
differs. The baseline (dask) is measured in the same run, so the figure is a ratio.

    .venv/bin/python bench/bench_pit_join.py [--rows 3000] [--out bench/results/pit_join.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from flywheel import feast_ops, ingest, landing
from flywheel.config import load_config
from flywheel.features import read_partitions
from flywheel.paths import REPO_ROOT, Home

MONTHS = ["2013-01", "2013-02"]


def _time_join(cfg, home: Home, entity_df, yaml_text: str, repeats: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feature_store.yaml"
        path.write_text(yaml_text)
        os.environ["FLYWHEEL_FEAST_YAML"] = str(path)
        try:
            fs = feast_ops.store(cfg, home)
            service = fs.get_feature_service(cfg.feast.feature_service)
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                with feast_ops.home_in_env(home):
                    out = fs.get_historical_features(entity_df=entity_df, features=service).to_df()
                times.append(time.perf_counter() - began)
                assert len(out) == len(entity_df)
            return times
        finally:
            os.environ.pop("FLYWHEEL_FEAST_YAML", None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "pit_join.md"))
    args = parser.parse_args()
    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        for month in MONTHS:
            landing.land(cfg, month, home)
            ingest.resolve_month(cfg, home, None, "asset_triggered", None)
            ingest.build_and_store(cfg, home, month)
        ingest.apply_repo(cfg, home)
        spine = read_partitions(home.entity_rows(cfg.entity.name))
        entity_df = spine.sample(args.rows, random_state=0)[
            [*cfg.entity_columns(), "event_timestamp", cfg.label.name]
        ]
        base_yaml = (REPO_ROOT / cfg.feast.repo / "feature_store.yaml").read_text()
        duck = _time_join(cfg, home, entity_df, base_yaml, args.repeats)
        dask = _time_join(cfg, home, entity_df, base_yaml.replace("type: duckdb", "type: file"),
                          args.repeats)  # fmt: skip
    d, k = statistics.median(duck), statistics.median(dask)
    text = (
        f"# Point-in-time join: DuckDB vs dask (`file`) offline store\n\n"
        f"{args.rows} entity rows x {len(cfg.feature_names())} features from "
        f"{len(cfg.features)} views over {', '.join(MONTHS)}; median of {args.repeats}.\n\n"
        f"| engine | seconds |\n|---|---|\n| dask `file` (baseline) | {k:.2f} |\n"
        f"| duckdb | {d:.2f} |\n\n**DuckDB takes {d / k:.3f}x the baseline's time "
        f"({k / d:.0f}x faster).**\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
