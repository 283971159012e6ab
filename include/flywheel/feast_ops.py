"""Feast, driven through its SDK: apply the repo, check it against the config,
materialize an interval, read online features.

The SDK is used instead of the `feast` CLI because each CLI call pays ~8 s of start-up.
`feast` is imported inside the functions: it costs ~5 s and DAG files import this module.
Online reads go through `OnlineReader`: Feast's own online store read, planned once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
    # The definitions read $FLYWHEEL_HOME when imported, and Python would hand a second
    # apply in this process the first one's modules: forget them on the way in and out.
    cwd, added = os.getcwd(), str(path) not in sys.path
    if added:
        sys.path.insert(0, str(path))
    _forget_modules_under(path)
    try:
        yield
    finally:
        _forget_modules_under(path)
        os.chdir(cwd)
        if added:
            sys.path.remove(str(path))


def _forget_modules_under(path: Path) -> None:
    root = str(path.resolve())
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and str(Path(file).resolve()).startswith(root + os.sep):
            del sys.modules[name]


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
    data = OnlineReader(cfg, home)(rows)
    return [{k: v[i] for k, v in data.items()} for i in range(len(rows))]


@dataclass(frozen=True)
class _ViewRead:
    """How one view of the service is read: its table, the row columns that make its
    entity key (and the key names stored in that key), the features asked of it."""

    table: Any  # the FeatureView, carrying the service's projection
    columns: tuple[str, ...]  # entity-row columns, in `key_names` order
    key_names: tuple[str, ...]  # join keys as serialized into the stored entity key
    features: tuple[str, ...]
    # Per feature: the ValueType to_dict passes as a hint, and whether that hint can
    # change a scalar (it only does for UUID types stored as strings).
    types: tuple[Any, ...]
    hinted: tuple[bool, ...]


@dataclass(frozen=True)
class _Plan:
    registry_stamp: Any  # the registry snapshot it was made from
    views: tuple[_ViewRead, ...]
    key_types: Mapping[str, Any]  # entity-row column -> ValueType
    features: tuple[str, ...]
    # A SQLite online store: each view's table, and the most rows one statement may ask
    # for (SQLite's limit on bound parameters). None: read through `online_read`.
    tables: tuple[str, ...] | None = None
    max_rows: int = 1
    selects: dict[int, str] = field(default_factory=dict)  # rows -> statement
    # (view index, *key strings) -> the serialized entity key
    key_blobs: dict[tuple[Any, ...], bytes] = field(default_factory=dict)

    def select(self, n: int) -> str:
        """All views' rows for n entity keys each, in one statement."""
        sql = self.selects.get(n)
        if sql is None:
            marks = ",".join("?" * n)
            assert self.tables is not None
            sql = " UNION ALL ".join(
                f"SELECT {j}, entity_key, feature_name, value FROM {_quote(table)} "
                f"WHERE entity_key IN ({marks})"
                for j, table in enumerate(self.tables)
            )
            if n <= 64:  # the sizes requests have; bigger ones are rare and long anyway
                self.selects[n] = sql
        return sql


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_KEY_BLOBS = 20_000  # serialized entity keys a plan remembers (a few MB at most)

# ValueProto fields that feast_value_type_to_python_type returns as they are.
_SCALARS = frozenset(
    {"double_val", "float_val", "int64_val", "int32_val", "bool_val", "string_val", "bytes_val"}
)


class OnlineReader:
    """The configured FeatureService read from Feast's online store, returning what
    `FeatureStore.get_online_features(features=service, entity_rows=rows).to_dict()` returns
    for the same rows: the rows' join-key columns, then every served feature, one value per
    row, None where the store has no value (an entity it does not know included).

    `get_online_features` spends milliseconds a call on work that is the same every call
    or that the answer does not need (feature resolution bookkeeping, response protos,
    per-view entity de-duplication, metrics hooks), and its SQLite store's `online_read`
    pays one statement per view plus a timestamp conversion per stored value (~80 µs a
    view on the 2-core bench machine). This reader resolves the service once per registry
    snapshot; per call it builds the entity keys with Feast's EntityKeyProto and
    `serialize_entity_key`, and:
    - on a SQLite online store, reads every view's rows in one SELECT over Feast's own
      connection and tables (the columns Feast's `online_read` reads, without the
      timestamp nobody uses), decoding Feast's ValueProtos the way `to_dict` does;
    - on any other store (or with `batch_sqlite=False`), calls the provider's
      `online_read` per view, the read `get_online_features` itself makes.
    Semantics kept from Feast 0.67:
    - no TTL filter: Feast's online read returns the last materialized value whatever its
      age (view TTLs bound point-in-time joins, not online reads);
    - the plan is remade whenever this store's registry cache refreshes (its TTL, a changed
      registry file seen by a registry read, or `refresh()`), as Feast's cached resolution
      is; a view that is disabled or not servable (MATERIALIZING) raises the same
      ValueError as `get_online_features`, on every call until it is servable again;
    - rows must all carry the same keys; keys that are no join key are ignored.
    Differences: an empty `rows` gives empty feature columns (Feast raises IndexError); a row
    missing a join key a view needs, or with a null one, raises ValueError (Feast fails in
    its own ways, or reads nothing for that view).

    Thread-safe: Feast's SQLite store shares one connection per FeatureStore, so calls are
    serialized on an internal lock (the reader owns its FeatureStore; callers need no lock).
    """

    def __init__(self, cfg: Config, home: Home, *, batch_sqlite: bool = True) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
        from feast.value_type import ValueType

        # Bound once: an import in the call path costs as much as decoding a few features.
        self._entity_key, self._value, self._string = EntityKey, Value, ValueType.STRING
        self._to_python = feast_value_type_to_python_type
        self._to_protos = python_values_to_proto_values
        self._serialize = serialize_entity_key
        self._batch_sqlite = batch_sqlite
        self._fs = store(cfg, home)
        self._service_name = cfg.feast.feature_service
        self._lock = threading.Lock()
        self._plan: _Plan | None = None
        with self._lock:
            self._current_plan()  # fail early on a missing service or view

    def __call__(self, rows: list[dict[str, Any]]) -> Mapping[str, Sequence[Any]]:
        with self._lock:
            plan = self._current_plan()
            if not rows:
                return {name: [] for name in plan.features}
            first = rows[0].keys()
            if any(row.keys() != first for row in rows):
                raise ValueError("All entity_rows must have the same keys.")
            out: dict[str, list[Any]] = {}
            protos: dict[str, list[Any]] = {}
            plain: set[str] = set()  # key columns of plain strings
            for key in first:
                if key in plan.key_types:
                    protos[key], out[key], is_plain = self._key_column(
                        key, rows, plan.key_types[key]
                    )
                    if is_plain:
                        plain.add(key)
            n = len(rows)
            for view in plan.views:
                missing = [c for c in view.columns if c not in protos]
                if missing:
                    raise ValueError(
                        f"entity rows lack {missing}, needed by view {view.table.name}"
                    )
            if plan.tables:
                found = self._read_sqlite(plan, self._key_blobs(plan, protos, out, plain, n))
            else:
                found = self._read(plan, [self._entity_keys(v, protos, n) for v in plan.views])
            to_python, scalars = self._to_python, _SCALARS
            for view, view_found in zip(plan.views, found, strict=True):
                columns: list[list[Any]] = [[None] * n for _ in view.features]
                for i, values_by_name in enumerate(view_found):
                    if not values_by_name:
                        continue
                    for column, name, vtype, hinted in zip(
                        columns, view.features, view.types, view.hinted, strict=True
                    ):
                        value = values_by_name.get(name)
                        if value is None:
                            continue
                        kind = value.WhichOneof("val")
                        if kind in scalars and not hinted:
                            column[i] = getattr(value, kind)
                        elif kind is not None:
                            column[i] = to_python(value, vtype)
                out.update(zip(view.features, columns, strict=True))
            return out

    def _read(self, plan: _Plan, keys: list[list[Any]]) -> list[list[Mapping[str, Any] | None]]:
        """Per view, per row: feature name -> ValueProto, through the store's online_read."""
        config, provider = self._fs.config, self._fs.provider
        return [
            [found for _, found in provider.online_read(config, view.table, view_keys, names)]
            for view, view_keys, names in zip(
                plan.views, keys, (list(v.features) for v in plan.views), strict=True
            )
        ]

    def _entity_keys(self, view: _ViewRead, protos: dict[str, list[Any]], n: int) -> list[Any]:
        """The rows' EntityKeyProtos for one view."""
        values, entity_key = [protos[c] for c in view.columns], self._entity_key
        return [
            entity_key(join_keys=view.key_names, entity_values=[v[i] for v in values])
            for i in range(n)
        ]

    def _key_blobs(
        self,
        plan: _Plan,
        protos: dict[str, list[Any]],
        echo: dict[str, list[Any]],
        plain: set[str],
        n: int,
    ) -> list[list[bytes]]:
        """Per view, the rows' entity keys as Feast serializes them into the store. A key
        costs ~8 µs to build and serialize, and most views have few entities (3 airports,
        16 carriers): keys of plain strings are remembered per plan."""
        serialize = self._serialize
        version = self._fs.config.entity_key_serialization_version
        cache = plan.key_blobs
        out: list[list[bytes]] = []
        for j, view in enumerate(plan.views):
            if not all(c in plain for c in view.columns):
                keys = self._entity_keys(view, protos, n)
                out.append([serialize(k, entity_key_serialization_version=version) for k in keys])
                continue
            strings = [echo[c] for c in view.columns]
            blobs = []
            for i in range(n):
                memo = (j, *(col[i] for col in strings))
                blob = cache.get(memo)
                if blob is None:
                    values = [protos[c][i] for c in view.columns]
                    key = self._entity_key(join_keys=view.key_names, entity_values=values)
                    blob = serialize(key, entity_key_serialization_version=version)
                    if len(cache) >= _KEY_BLOBS:
                        cache.clear()
                    cache[memo] = blob
                blobs.append(blob)
            out.append(blobs)
        return out

    def _read_sqlite(
        self, plan: _Plan, blobs: list[list[bytes]]
    ) -> list[list[Mapping[str, Any] | None]]:
        """What `_read` returns, in one statement over Feast's SQLite connection."""
        conn = self._fs.provider.online_store._get_conn(self._fs.config)
        found: list[dict[bytes, dict[str, Any]]] = [{} for _ in plan.views]
        parse = self._value.FromString
        n = len(blobs[0])
        for lo in range(0, n, plan.max_rows):
            params = [b for view_blobs in blobs for b in view_blobs[lo : lo + plan.max_rows]]
            sql = plan.select(min(plan.max_rows, n - lo))
            for j, key, name, blob in conn.execute(sql, params):
                found[j].setdefault(key, {})[name] = parse(blob)
        return [
            [view_found.get(b) for b in view_blobs]
            for view_found, view_blobs in zip(found, blobs, strict=True)
        ]

    def refresh(self) -> None:
        """Re-read Feast's registry now rather than when its cache runs out (cache_ttl_seconds,
        10 min by default); the next call plans again from it."""
        with self._lock:
            self._fs.refresh_registry()
            self._plan = None

    def _key_column(
        self, key: str, rows: list[dict[str, Any]], vtype: Any
    ) -> tuple[list[Any], list[Any], bool]:
        """An entity-key column as Feast's ValueProtos, as to_dict gives it back, and
        whether it is plain strings of a STRING key."""
        values = [row[key] for row in rows]
        if vtype == self._string and all(type(v) is str for v in values):
            # What python_values_to_proto_values makes of strings, minus its type dispatch.
            value = self._value
            return [value(string_val=v) for v in values], values, True
        if any(v is None for v in values):
            raise ValueError(f"entity rows have a null {key!r}")
        protos = self._to_protos(values, vtype)
        return protos, [self._to_python(p) for p in protos], False

    def _current_plan(self) -> _Plan:
        registry = self._fs.registry
        plan = self._plan
        valid = getattr(registry, "is_cache_valid", lambda: True)
        if (
            plan is None
            or plan.registry_stamp != getattr(registry, "cached_registry_proto_created", None)
            or not valid()
        ):
            # Unset while a view cannot be served: every call re-reads the registry, as
            # get_online_features does, and serves again once the view is back.
            self._plan = None
            plan = self._plan = self._make_plan()
        return plan

    def _make_plan(self) -> _Plan:
        from feast.feature_view import FeatureViewState
        from feast.value_type import ValueType

        fs, registry = self._fs, self._fs.registry
        project = fs.project
        service = registry.get_feature_service(self._service_name, project, allow_cache=True)
        join_keys = {e.name: e.join_key for e in registry.list_entities(project, allow_cache=True)}
        servable = {FeatureViewState.STATE_UNSPECIFIED, FeatureViewState.AVAILABLE_ONLINE}
        if getattr(registry, "serve_features_while_materializing", False):
            servable.add(FeatureViewState.MATERIALIZING)
        uuids = {ValueType.UUID, ValueType.TIME_UUID}
        views: list[_ViewRead] = []
        key_types: dict[str, Any] = {}
        features: list[str] = []
        for projection in service.feature_view_projections:
            view = registry.get_any_feature_view(projection.name, project, allow_cache=True)
            if not getattr(view, "enabled", True):
                raise ValueError(
                    f"Feature view '{view.name}' is disabled and cannot serve features."
                )
            state = getattr(view, "state", None)
            if isinstance(state, FeatureViewState) and state not in servable:
                raise ValueError(
                    f"Feature view '{view.name}' is in state '{state.name}' and cannot serve "
                    "features. Only AVAILABLE_ONLINE feature views can serve."
                )
            view = view.with_projection(projection)
            alias = view.projection.join_key_map
            key_names = tuple(join_keys[entity] for entity in view.entities)
            for col in view.entity_columns:
                key_types[alias.get(col.name, col.name)] = col.dtype.to_value_type()
            dtypes = {f.name: f.dtype.to_value_type() for f in view.features}
            names = tuple(f.name for f in projection.features)
            views.append(
                _ViewRead(
                    table=view,
                    columns=tuple(alias.get(k, k) for k in key_names),
                    key_names=key_names,
                    features=names,
                    types=tuple(dtypes.get(name) for name in names),
                    hinted=tuple(dtypes.get(name) in uuids for name in names),
                )
            )
            features += names
        clashes = sorted({f for f in features if features.count(f) > 1})
        if clashes:
            raise ValueError(f"service {service.name} serves {clashes} from several views")
        plan = _Plan(
            registry_stamp=getattr(registry, "cached_registry_proto_created", None),
            views=tuple(views),
            key_types=key_types,
            features=tuple(features),
        )
        return self._with_sqlite(plan) if self._batch_sqlite else plan

    def _with_sqlite(self, plan: _Plan) -> _Plan:
        """The plan with its SQLite tables, where the online store is Feast's SQLite one."""
        import sqlite3

        from feast.infra.online_stores.helpers import compute_table_id
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        config = self._fs.config
        online = getattr(self._fs.provider, "online_store", None)
        if not isinstance(online, SqliteOnlineStore) or not plan.views:
            return plan
        # The table names Feast's SqliteOnlineStore.online_read reads.
        versioned = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
        tables = tuple(compute_table_id(config.project, v.table, versioned) for v in plan.views)
        limit = online._get_conn(config).getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return dataclasses.replace(
            plan, tables=tables, max_rows=max(1, limit // len(tables)), selects={}, key_blobs={}
        )


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
