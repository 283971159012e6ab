"""Feast, driven through its SDK: apply the repo, check it against the config,
materialize an interval, read online features.

The SDK is used instead of the `feast` CLI because each CLI call pays ~8 s of start-up.
`feast` is imported inside the functions: it costs ~5 s and DAG files import this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from flywheel.config import Config
from flywheel.paths import REPO_ROOT, Home

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class FeastRepoMismatch(RuntimeError):
    """The Feast repo and the config disagree about a view's features or keys."""


def repo_path(cfg: Config) -> Path:
    return (REPO_ROOT / cfg.feast.repo).resolve()


def yaml_path(cfg: Config) -> Path:
    """One feature_store.yaml per environment; $FLYWHEEL_FEAST_YAML picks another."""
    override = os.environ.get("FLYWHEEL_FEAST_YAML")
    return Path(override).resolve() if override else repo_path(cfg) / "feature_store.yaml"


@contextlib.contextmanager
def _importable_repo(path: Path) -> Iterator[None]:
    # apply_total chdirs into the repo and imports its files by bare module name:
    # make that work from any caller, and give the caller its cwd and sys.path back.
    cwd, added = os.getcwd(), str(path) not in sys.path
    if added:
        sys.path.insert(0, str(path))
    try:
        yield
    finally:
        os.chdir(cwd)
        if added:
            sys.path.remove(str(path))


@contextlib.contextmanager
def home_in_env(home: Home) -> Iterator[None]:
    # feature_store.yaml and the repo's sources read FLYWHEEL_HOME: make it this home.
    before = os.environ.get("FLYWHEEL_HOME")
    os.environ["FLYWHEEL_HOME"] = str(home.root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FLYWHEEL_HOME", None)
        else:
            os.environ["FLYWHEEL_HOME"] = before


def store(cfg: Config, home: Home) -> FeatureStore:
    from feast import FeatureStore

    home.feast.mkdir(parents=True, exist_ok=True)
    with home_in_env(home):
        return FeatureStore(repo_path=str(repo_path(cfg)), fs_yaml_file=yaml_path(cfg))


def apply(cfg: Config, home: Home) -> FeatureStore:
    """`feast apply` (idempotent), then refuse a repo that disagrees with the config."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    home.feast.mkdir(parents=True, exist_ok=True)
    with home_in_env(home), _importable_repo(repo_path(cfg)):
        config = load_repo_config(repo_path(cfg), yaml_path(cfg))
        # Sources may still be empty folders before the first partition lands.
        apply_total(config, repo_path(cfg), skip_source_validation=True)
    fs = store(cfg, home)
    check_repo(cfg, fs)
    return fs


def check_repo(cfg: Config, fs: FeatureStore) -> None:
    """Every config view exists in Feast with the same features and join keys, and the
    configured FeatureService serves exactly the config's features."""
    problems = []
    views = {v.name: v for v in fs.list_feature_views()}
    for name in cfg.features:
        if name not in views:
            problems.append(f"feature view '{name}' is in the config but not in the Feast repo")
            continue
        view = views[name]
        got, want = [f.name for f in view.features], cfg.view_features(name)
        if sorted(got) != sorted(want):
            problems.append(
                f"feature view '{name}': Feast has {sorted(got)}, config makes {sorted(want)}"
            )
        keys = sorted(c.name for c in view.entity_columns)
        if keys != sorted(cfg.view_keys(name)):
            problems.append(
                f"feature view '{name}': Feast joins on {keys}, config on {cfg.view_keys(name)}"
            )
    try:
        service = fs.get_feature_service(cfg.feast.feature_service)
    except Exception as err:  # Feast raises its own not-found type per backend
        problems.append(f"feature service '{cfg.feast.feature_service}' not found: {err}")
    else:
        served = sorted(f.name for p in service.feature_view_projections for f in p.features)
        if served != sorted(cfg.feature_names()):
            problems.append(
                f"feature service '{cfg.feast.feature_service}' serves {served}, "
                f"config expects {sorted(cfg.feature_names())}"
            )
    if problems:
        raise FeastRepoMismatch("Feast repo and config disagree:\n  " + "\n  ".join(problems))


def while_materializing(read: Callable[[], T], timeout_s: float = 300.0) -> T:
    """`read()`, waiting out a concurrent materialization: Feast marks a view MATERIALIZING
    while `materialize` writes it and refuses to serve it, offline reads included, until
    it is AVAILABLE_ONLINE again (a few seconds per month)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return read()
        except ValueError as err:
            if "MATERIALIZING" not in str(err) or time.monotonic() > deadline:
                raise
            log.info("Feast: %s; retrying in 3 s", err)
            time.sleep(3)


def materialize(cfg: Config, home: Home, start: datetime, end: datetime) -> None:
    """Load [start, end) of every configured view into the online store."""
    fs = store(cfg, home)
    with home_in_env(home):
        fs.materialize(start_date=start, end_date=end, feature_views=list(cfg.features))


def online_features(cfg: Config, home: Home, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Online features of the configured service for entity rows (dicts of join keys)."""
    fs = store(cfg, home)
    service = fs.get_feature_service(cfg.feast.feature_service)
    with home_in_env(home):
        data = fs.get_online_features(features=service, entity_rows=rows).to_dict()
    return [{k: v[i] for k, v in data.items()} for i in range(len(rows))]


def service_definition(cfg: Config, fs: FeatureStore) -> dict[str, Any]:
    """What the configured FeatureService serves, as plain data: part of a model's
    fingerprint (a TTL or feature change means a different model) and of its run card."""
    service = fs.get_feature_service(cfg.feast.feature_service)
    views = {v.name: v for v in fs.list_feature_views()}
    out: dict[str, Any] = {"project": fs.project, "service": service.name, "views": {}}
    for projection in service.feature_view_projections:
        view = views[projection.name]
        out["views"][view.name] = {
            "features": {f.name: str(f.dtype) for f in projection.features},
            "join_keys": sorted(c.name for c in view.entity_columns),
            "ttl_s": int(view.ttl.total_seconds()) if view.ttl else 0,
        }
    return out
