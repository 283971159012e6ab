"""The model registry policy: register versions, move aliases, keep a record of every move.

MLflow 3 deprecates stages; Flywheel serves by alias:

- `@champion` (`CHAMPION`): what scoring and the model server load (`models:/<name>@champion`).
- `@previous_champion` (`PREVIOUS`): the champion before the last move, kept for `rollback`.
- `@challenger` (`CHALLENGER`): the latest candidate that passed its gate (`set_challenger`).

Rules enforced here, not only in the DAGs:

- `promote` refuses a version whose gate decision is not "passed" or whose lineage
  (`gates.LINEAGE_TAGS`) is incomplete: nothing reaches @champion without every gate.
- Every alias move happens under an exclusive lock (`promotion_lock`). MLflow has no
  compare-and-set on aliases: `set_registered_model_alias` overwrites blindly. Two train
  runs promoting at once could otherwise both read the same old champion, and end with a
  @previous_champion that never served right before the champion (or one run's promotion
  silently lost), so rollback would go to the wrong model. Inside the lock the current
  champion is re-read, so each move sees the previous one. The lock is `fcntl.flock` on a file
  (by default under $FLYWHEEL_HOME, `default_lock_path`): it serializes processes and threads
  on one machine or on a shared filesystem with working flock. Workers on several machines
  without one need another serializer too (an Airflow pool with one slot for the promoting
  tasks).
- `rollback` moves @champion to @previous_champion or to an explicit version. The target must
  exist and have complete lineage (never overridable) and a "passed" gate decision recorded,
  unless the caller passes `allow_ungated=True` (recorded as `rollback.allowed_ungated`).
- Every move is recorded: version tags (`promoted_at/by`, `promotion.reason`, `rollback.*`)
  and one registered-model tag per move (`flywheel.move.000001` = JSON), read by `history`.

Every function takes an explicit `MlflowClient` or a tracking URI (used for the registry too).
MLflow is imported inside functions: it costs seconds and DAG files import this module.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.gates import (
    DECISION_TAG,
    FINGERPRINT_TAG,
    PASSED,
    Decision,
    lineage_complete,
)
from flywheel.paths import Home

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous_champion"

# Version tags.
TRAINING_FINGERPRINT_TAG = "training.fingerprint"  # hash of everything training reads
PROMOTED_AT, PROMOTED_BY, PROMOTION_REASON = "promoted_at", "promoted_by", "promotion.reason"
ROLLBACK_AT, ROLLBACK_BY, ROLLBACK_REASON = "rollback.at", "rollback.by", "rollback.reason"
MOVE_TAG_PREFIX = "flywheel.move."  # registered-model tags, one per alias move

LOCK_TIMEOUT_S = 300.0


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why and what to do."""


class PromotionRefused(RegistryError):
    """The version may not become @champion (gate not passed, lineage incomplete)."""


class NothingToRollBack(RegistryError):
    """There is no champion, or no version to roll back to."""


class PromotionLockTimeout(RegistryError):
    """Another promotion held the lock for longer than the timeout."""


@dataclass(frozen=True)
class PromotionRecord:
    """One alias move: @champion went from `old` to `new` (`changed` False: it already was)."""

    model_name: str
    action: str  # "promote" | "rollback"
    old: str | None
    new: str
    previous: str | None  # @previous_champion after the move
    at: str  # UTC, ISO 8601
    by: str
    reason: str
    changed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- plumbing ------------------------------------------------------------------------------


def _client(client: MlflowClient | str) -> MlflowClient:
    if isinstance(client, str):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=client, registry_uri=client)
    return client


def _error_code(err: BaseException) -> str:
    return str(getattr(err, "error_code", ""))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _quote(value: str, what: str) -> str:
    """A value for an MLflow filter string: single quotes cannot be escaped there."""
    if "'" in value:
        raise ValueError(f"{what} must not contain a single quote: {value!r}")
    return f"'{value}'"


def _require_text(**values: str) -> None:
    for key, value in values.items():
        if not str(value or "").strip():
            raise ValueError(f"{key} must be a non-empty string: say who and why")


def default_lock_path(model_name: str) -> Path:
    """$FLYWHEEL_HOME/registry/<model_name>.promote.lock (the folder is made on locking)."""
    return Home.from_env().root / "registry" / f"{model_name}.promote.lock"


@contextmanager
def promotion_lock(lock_path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive `fcntl.flock` on `lock_path`, waiting up to `timeout_s`.

    flock locks belong to the open file description, so two threads of one process exclude
    each other too (each opens the file). The holder writes who it is into the file, for the
    timeout message; the lock is released when the file closes, even if the process dies.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(lock_path, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "unknown"
                    raise PromotionLockTimeout(
                        f"could not lock {lock_path} within {timeout_s:.0f} s: another "
                        f"promotion holds it ({holder})"
                    ) from None
                time.sleep(0.05)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _version(client: MlflowClient, model_name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(model_name, str(version))
    except Exception as err:
        if _error_code(err) == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"model {model_name!r} has no version {version!r}") from None
        raise


def aliases(client: MlflowClient | str, model_name: str) -> dict[str, str]:
    """alias -> version of the registered model ({} if the model does not exist).

    Read from the registered model: `search_model_versions` does not fill in aliases."""
    c = _client(client)
    try:
        model = c.get_registered_model(model_name)
    except Exception as err:
        if _error_code(err) == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {str(alias): str(v) for alias, v in (model.aliases or {}).items()}


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    return aliases(client, model_name).get(alias)


def _set_tags(
    client: MlflowClient,
    model_name: str,
    version: str,
    tags: Mapping[str, str],
    existing: Mapping[str, str] | None = None,
) -> None:
    """Set version tags one by one (MLflow has no batch call), skipping unchanged ones."""
    for key, value in tags.items():
        if existing is None or existing.get(key) != str(value):
            client.set_model_version_tag(model_name, version, key, str(value))


def _record_move(client: MlflowClient, record: PromotionRecord) -> None:
    """Append the move to the registered model's move log (call under the lock)."""
    existing = client.get_registered_model(record.model_name).tags or {}
    seq = 1 + sum(1 for k in existing if str(k).startswith(MOVE_TAG_PREFIX))
    client.set_registered_model_tag(
        record.model_name, f"{MOVE_TAG_PREFIX}{seq:06d}", json.dumps(record.as_dict())
    )


def _is_server(client: MlflowClient) -> bool:
    uri = str(getattr(client, "_registry_uri", None) or client.tracking_uri)
    return uri.split(":", 1)[0] in ("http", "https", "databricks", "databricks-uc")


def _all_versions(client: MlflowClient, model_name: str) -> list[ModelVersion]:
    out: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(
            f"name = {_quote(model_name, 'model_name')}", page_token=token
        )
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return sorted(out, key=lambda v: int(v.version))


# --- registering ---------------------------------------------------------------------------


def _resolve_source(
    client: MlflowClient, run_id: str, artifact_path_or_model_uri: str
) -> tuple[str, str | None]:
    """(source, model_id) for `create_model_version`, as `mlflow.register_model` would do it,
    but through the given client. Accepts `models:/<model_id>` (what `log_model` returns in
    MLflow 3), `runs:/<run_id>/<path>`, a path inside the run, or any other artifact URI."""
    uri = artifact_path_or_model_uri
    if uri.startswith("models:/"):
        rest = uri.removeprefix("models:/")
        if rest.startswith("m-") and "/" not in rest and "@" not in rest:
            return uri, rest
        return uri, None
    if uri.startswith("runs:/"):
        rid, _, path = uri.removeprefix("runs:/").partition("/")
        run_id, uri = rid or run_id, path
    elif "://" in uri or uri.startswith("/"):
        return uri, None
    # A path inside the run. MLflow 3 logs models as LoggedModels (`models:/m-...`) stored
    # outside the run's artifacts; older code logged them into the run's artifact folder.
    # (Not `client.list_artifacts`: for a missing run path it falls back to the logged model
    # through the global tracking URI.)
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    path = uri.strip("/")
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = {_quote(run_id, 'run_id')}",
    )
    named = [m for m in models if m.name == path]
    if named:
        newest = max(named, key=lambda m: m.creation_timestamp or 0)
        return f"models:/{newest.model_id}", str(newest.model_id)
    run_uri = run.info.artifact_uri.rstrip("/")
    listing = get_artifact_repository(run_uri).list_artifacts(path)
    if any(a.path.rsplit("/", 1)[-1] == "MLmodel" for a in listing):
        return f"{run_uri}/{path}", None
    raise RegistryError(f"run {run_id} has no model logged under {path!r}")


def register(
    client: MlflowClient | str,
    model_name: str,
    run_id: str,
    artifact_path_or_model_uri: str,
    tags: Mapping[str, str],
    timeout_s: float = 300.0,
) -> str:
    """Register a new version of `model_name` (created if missing), set `tags` on it, wait
    until it is READY; return the version number (a string)."""
    from mlflow.entities.model_registry.model_version_status import ModelVersionStatus

    c = _client(client)
    try:
        c.create_registered_model(model_name)
    except Exception as err:  # created by someone else: fine
        if _error_code(err) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    source, model_id = _resolve_source(c, run_id, artifact_path_or_model_uri)
    if model_id is not None and not _is_server(c):
        # MLflow 3.17's SQL and file registry stores look a `models:/<model_id>` source up
        # through the GLOBAL tracking URI (`MlflowClient()`, a TODO in MLflow), not this
        # client's: register the logged model's artifact location instead. A tracking server
        # resolves it against its own store, so over HTTP the URI is passed as it is.
        source = c.get_logged_model(model_id).artifact_location
    mv = c.create_model_version(
        model_name,
        source,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        model_id=model_id,
        await_creation_for=int(timeout_s),
    )
    version = str(mv.version)
    deadline = time.monotonic() + timeout_s
    while True:
        status = ModelVersionStatus.from_string(str(mv.status))
        if status == ModelVersionStatus.READY:
            return version
        if status == ModelVersionStatus.FAILED_REGISTRATION:
            raise RegistryError(
                f"{model_name} v{version} failed registration: {mv.status_message or 'no reason'}"
            )
        if time.monotonic() >= deadline:
            raise RegistryError(f"{model_name} v{version} not READY after {timeout_s:.0f} s")
        time.sleep(0.5)
        mv = c.get_model_version(model_name, version)


def find_by_fingerprint(
    client: MlflowClient | str, model_name: str, fingerprint: str
) -> str | None:
    """The newest READY version tagged `training.fingerprint` = `fingerprint`, or None: a
    train run with unchanged inputs reuses it instead of training again."""
    c = _client(client)
    found = c.search_model_versions(
        f"name = {_quote(model_name, 'model_name')} AND "
        f"tags.`{TRAINING_FINGERPRINT_TAG}` = {_quote(fingerprint, 'fingerprint')}"
    )
    ready = [int(v.version) for v in found if str(v.status) == "READY"]
    return str(max(ready)) if ready else None


def record_decision(
    client: MlflowClient | str, model_name: str, version: str, decision: Decision
) -> None:
    """Write the gate decision's tags on the version, whatever the outcome."""
    _set_tags(_client(client), model_name, str(version), decision.as_tags())


# --- aliases -------------------------------------------------------------------------------


def champion(client: MlflowClient | str, model_name: str) -> ModelVersion | None:
    """The version @champion points to, or None (no model, or no alias yet)."""
    c = _client(client)
    version = _alias_version(c, model_name, CHAMPION)
    return None if version is None else _version(c, model_name, version)


def set_challenger(client: MlflowClient | str, model_name: str, version: str) -> None:
    """Point @challenger at a candidate that passed its gate (promoted or not)."""
    c = _client(client)
    _version(c, model_name, str(version))
    c.set_registered_model_alias(model_name, CHALLENGER, str(version))


def promote(
    client: MlflowClient | str,
    model_name: str,
    version: str,
    lock_path: Path,
    decision_tags: Mapping[str, str],
    who: str,
    reason: str,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> PromotionRecord:
    """Make `version` the @champion; the old champion (if any and different) becomes
    @previous_champion. Refused (`PromotionRefused`) unless `decision_tags` say the gate
    passed (`gate.decision` = "passed", not a dry run) and the version's lineage is complete.

    Idempotent: promoting the current champion again changes nothing (`changed` False)."""
    _require_text(who=who, reason=reason)
    c = _client(client)
    version = str(version)
    outcome = decision_tags.get(DECISION_TAG)
    if outcome != PASSED:
        raise PromotionRefused(
            f"{model_name} v{version} not promoted: gate decision is {outcome!r}, not 'passed'"
        )
    with promotion_lock(lock_path, lock_timeout_s):
        mv = _version(c, model_name, version)
        lineage = lineage_complete(mv.tags or {})
        if not lineage.passed:
            raise PromotionRefused(f"{model_name} v{version} not promoted: {lineage.detail}")
        _set_tags(c, model_name, version, decision_tags, existing=mv.tags or {})
        current = aliases(c, model_name)  # re-read inside the lock
        old = current.get(CHAMPION)
        if old == version:
            return PromotionRecord(
                model_name,
                "promote",
                old,
                version,
                current.get(PREVIOUS),
                _now(),
                who,
                reason,
                changed=False,
            )
        if old is not None:
            c.set_registered_model_alias(model_name, PREVIOUS, old)
        c.set_registered_model_alias(model_name, CHAMPION, version)
        record = PromotionRecord(
            model_name, "promote", old, version, old or current.get(PREVIOUS), _now(), who, reason
        )
        _set_tags(
            c,
            model_name,
            version,
            {PROMOTED_AT: record.at, PROMOTED_BY: who, PROMOTION_REASON: reason},
        )
        _record_move(c, record)
        return record


def rollback(
    client: MlflowClient | str,
    model_name: str,
    lock_path: Path,
    who: str,
    why: str,
    to_version: str | None = None,
    allow_ungated: bool = False,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> PromotionRecord:
    """Move @champion back to @previous_champion (or to `to_version`); the version rolled back
    from becomes @previous_champion, so a second rollback undoes the first.

    The target must exist, must not be the champion, must have complete lineage (always) and
    a "passed" gate decision (unless `allow_ungated`). Raises `NothingToRollBack` when there
    is no champion or nothing to go back to."""
    _require_text(who=who, why=why)
    c = _client(client)
    with promotion_lock(lock_path, lock_timeout_s):
        current = aliases(c, model_name)
        old = current.get(CHAMPION)
        if old is None:
            raise NothingToRollBack(
                f"model {model_name!r} has no @{CHAMPION}: nothing to roll back"
            )
        target = str(to_version) if to_version is not None else current.get(PREVIOUS)
        if target is None:
            raise NothingToRollBack(
                f"model {model_name!r} has @{CHAMPION} v{old} but no @{PREVIOUS}: nothing to "
                "roll back to (name a version with to_version)"
            )
        if target == old:
            raise NothingToRollBack(f"{model_name} v{target} is already @{CHAMPION}")
        tags = _version(c, model_name, target).tags or {}
        lineage = lineage_complete(tags)
        if not lineage.passed:
            raise PromotionRefused(f"cannot roll back to {model_name} v{target}: {lineage.detail}")
        gate = tags.get(DECISION_TAG)
        if gate != PASSED and not allow_ungated:
            raise PromotionRefused(
                f"cannot roll back to {model_name} v{target}: its gate decision is {gate!r}, "
                "not 'passed' (pass allow_ungated=True to override; it is recorded)"
            )
        c.set_registered_model_alias(model_name, PREVIOUS, old)
        c.set_registered_model_alias(model_name, CHAMPION, target)
        record = PromotionRecord(model_name, "rollback", old, target, old, _now(), who, why)
        common = {ROLLBACK_AT: record.at, ROLLBACK_BY: who, ROLLBACK_REASON: why}
        _set_tags(c, model_name, target, {**common, "rollback.from": old})
        _set_tags(c, model_name, old, {**common, "rollback.to": target})
        if gate != PASSED:
            _set_tags(c, model_name, target, {"rollback.allowed_ungated": "true"})
        _record_move(c, record)
        return record


# --- reports -------------------------------------------------------------------------------


def alias_moves(client: MlflowClient | str, model_name: str) -> list[dict[str, Any]]:
    """Every alias move recorded by `promote` and `rollback`, oldest first."""
    c = _client(client)
    try:
        tags = c.get_registered_model(model_name).tags or {}
    except Exception as err:
        if _error_code(err) == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    moves = []
    for key in sorted(k for k in tags if str(k).startswith(MOVE_TAG_PREFIX)):
        try:
            moves.append({"seq": int(key.removeprefix(MOVE_TAG_PREFIX)), **json.loads(tags[key])})
        except (ValueError, TypeError):
            continue
    return moves


def history(client: MlflowClient | str, model_name: str) -> list[dict[str, Any]]:
    """One dict per version, oldest first: run, status, current aliases, lineage, gate
    decision (with its checks) and the alias moves that involved it."""
    c = _client(client)
    current = aliases(c, model_name)
    moves = alias_moves(c, model_name)
    out = []
    for mv in _all_versions(c, model_name):
        v = str(mv.version)
        tags = dict(mv.tags or {})
        decision = Decision.from_tags(tags)
        out.append(
            {
                "version": v,
                "run_id": mv.run_id,
                "source": mv.source,
                "status": str(mv.status),
                "created_at": datetime.fromtimestamp(
                    (mv.creation_timestamp or 0) / 1000, UTC
                ).isoformat(timespec="seconds"),
                "aliases": sorted(a for a, av in current.items() if av == v),
                "window": tags.get("training.window"),
                "reason": tags.get("trigger.reason"),
                "fingerprint": tags.get(TRAINING_FINGERPRINT_TAG),
                "dataset_fingerprint": tags.get(FINGERPRINT_TAG),
                "lineage_complete": lineage_complete(tags).passed,
                "gate_decision": tags.get(DECISION_TAG),
                "gate_checks": [asdict(ch) for ch in decision.checks] if decision else [],
                "promoted_at": tags.get(PROMOTED_AT),
                "promoted_by": tags.get(PROMOTED_BY),
                "promotion_reason": tags.get(PROMOTION_REASON),
                "rollback": {
                    k.removeprefix("rollback."): val
                    for k, val in tags.items()
                    if k.startswith("rollback.")
                },
                "moves": [m for m in moves if v in (m.get("old"), m.get("new"))],
            }
        )
    return out
