"""Registry policy against a real MLflow tracking store (SQLite + local artifacts): register,
promote, roll back, find by fingerprint, concurrent promotions under the lock, history."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flywheel import registry
from flywheel.config import GateSpec
from flywheel.gates import decide
from flywheel.registry import (
    CHAMPION,
    PREVIOUS,
    NothingToRollBack,
    PromotionLockTimeout,
    PromotionRefused,
    RegistryError,
)

MODEL = "flight_delay"
GATES = [GateSpec(metric="roc_auc", threshold=0.6, min_improvement=0.002)]
LINEAGE = {
    "feast.feature_service": "flight_delay_v1",
    "dataset.fingerprint": "ds-0001",
    "code.version": "4f2a9c1",
}
PASSED = decide({"roc_auc": 0.7}, None, LINEAGE, GATES).as_tags()
REFUSED = decide({"roc_auc": 0.5}, None, LINEAGE, GATES).as_tags()
DRY_RUN = decide({"roc_auc": 0.7}, None, LINEAGE, GATES, dry_run=True).as_tags()


class _Identity:
    """A tiny pyfunc model: logging it costs a fraction of a second."""

    @staticmethod
    def make() -> Any:
        import mlflow

        class Identity(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
            def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
                return model_input

        return Identity()


@dataclass(frozen=True)
class Template:
    db: Path
    experiment_id: str
    run_id: str
    model_uri: str


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A migrated MLflow database holding one experiment, one run and one logged model:
    creating it costs seconds, copying it nothing. Every version registered in the tests
    points at that model (the registry does not care that the files are shared)."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow_template")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    exp = client.create_experiment("flywheel-test", (root / "artifacts").as_uri())
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp) as run:
            info = mlflow.pyfunc.log_model(
                name="model", python_model=_Identity.make(), pip_requirements=[]
            )
    finally:
        mlflow.set_tracking_uri(before)
    return Template(root / "mlflow.db", exp, run.info.run_id, info.model_uri)


@dataclass
class Store:
    uri: str
    client: Any
    template: Template
    lock: Path

    def new_version(self, lineage: dict[str, str] | None = None, **extra: str) -> str:
        tags = {**(LINEAGE if lineage is None else lineage), **extra}
        t = self.template
        return registry.register(self.client, MODEL, t.run_id, t.model_uri, tags)

    def aliases(self) -> dict[str, str]:
        return registry.aliases(self.client, MODEL)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(MODEL, version).tags)


@pytest.fixture
def store(tmp_path: Path, template: Template) -> Store:
    from mlflow import MlflowClient

    shutil.copy(template.db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lock = tmp_path / "home" / "registry" / f"{MODEL}.promote.lock"
    return Store(uri, MlflowClient(uri, uri), template, lock)


def promote(store: Store, version: str, **kw: Any) -> registry.PromotionRecord:
    args: dict[str, Any] = {"who": "test", "reason": f"v{version} passed", **kw}
    return registry.promote(store.client, MODEL, version, store.lock, PASSED, **args)


# --- register / find ------------------------------------------------------------------------


def test_register_creates_the_model_and_returns_ready_versions(store: Store) -> None:
    assert registry.champion(store.client, MODEL) is None  # no registered model yet
    run_id, uri = store.template.run_id, store.template.model_uri
    assert uri.startswith("models:/m-")  # what log_model returns in MLflow 3
    v1 = registry.register(store.client, MODEL, run_id, uri, {**LINEAGE, "x": "1"})
    assert v1 == "1"
    mv = store.client.get_model_version(MODEL, v1)
    assert str(mv.status) == "READY"
    assert mv.run_id == run_id
    # A local store registers the logged model's files (see `registry.register`).
    model_files = store.client.get_logged_model(uri.removeprefix("models:/")).artifact_location
    assert mv.source == model_files
    assert mv.tags["x"] == "1"
    assert mv.tags["code.version"] == "4f2a9c1"
    # The same model by its path inside the run and by runs:/ URI, and a tracking URI
    # instead of a client.
    assert registry.register(store.uri, MODEL, run_id, "model", LINEAGE) == "2"
    assert registry.register(store.client, MODEL, run_id, f"runs:/{run_id}/model", {}) == "3"
    assert {store.client.get_model_version(MODEL, v).source for v in "23"} == {model_files}
    # Older code logged models into the run's artifact folder: registered from there.
    legacy = store.template.db.parent / "legacy_model"
    legacy.mkdir(exist_ok=True)
    (legacy / "MLmodel").write_text("flavors: {}\n")
    store.client.log_artifacts(run_id, str(legacy), "legacy_model")
    v4 = registry.register(store.client, MODEL, run_id, "legacy_model", {})
    assert store.client.get_model_version(MODEL, v4).source.endswith("/artifacts/legacy_model")
    with pytest.raises(RegistryError, match="no model logged under 'nope'"):
        registry.register(store.client, MODEL, run_id, "nope", {})
    assert registry.champion(store.client, MODEL) is None  # model, but no alias


def test_find_by_fingerprint(store: Store) -> None:
    tag = registry.TRAINING_FINGERPRINT_TAG
    assert registry.find_by_fingerprint(store.client, MODEL, "aaa") is None
    store.new_version(**{tag: "aaa"})
    store.new_version(**{tag: "bbb"})
    store.new_version(**{tag: "aaa"})
    assert registry.find_by_fingerprint(store.client, MODEL, "aaa") == "3"  # the newest
    assert registry.find_by_fingerprint(store.uri, MODEL, "bbb") == "2"
    assert registry.find_by_fingerprint(store.client, MODEL, "ccc") is None
    assert registry.find_by_fingerprint(store.client, "other_model", "aaa") is None
    with pytest.raises(ValueError, match="single quote"):
        registry.find_by_fingerprint(store.client, MODEL, "a' OR '1'='1")


# --- promote --------------------------------------------------------------------------------


def test_promote_first_then_second(store: Store) -> None:
    v1, v2 = store.new_version(), store.new_version()
    first = promote(store, v1)
    assert (first.old, first.new, first.previous, first.changed) == (None, "1", None, True)
    assert store.aliases() == {CHAMPION: "1"}
    champ = registry.champion(store.client, MODEL)
    assert champ is not None
    assert str(champ.version) == "1"
    tags = store.tags(v1)
    assert tags["promoted_by"] == "test"
    assert tags["promotion.reason"] == "v1 passed"
    assert tags["promoted_at"] == first.at
    assert tags["gate.decision"] == "passed"

    second = promote(store, v2, who="airflow:train_model/run-7", reason="beats v1")
    assert (second.old, second.new, second.previous) == ("1", "2", "1")
    assert store.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    assert store.tags(v2)["promoted_by"] == "airflow:train_model/run-7"

    # Promoting the champion again (a retried task) changes nothing.
    again = promote(store, v2)
    assert not again.changed
    assert (again.old, again.new, again.previous) == ("2", "2", "1")
    assert store.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    assert store.tags(v2)["promoted_at"] == second.at


@pytest.mark.parametrize("tags", [REFUSED, DRY_RUN, {}], ids=["refused", "dry-run", "no-gate"])
def test_promote_refuses_without_a_passed_gate(store: Store, tags: dict[str, str]) -> None:
    v1, v2 = store.new_version(), store.new_version()
    promote(store, v1)
    with pytest.raises(PromotionRefused, match="gate decision is"):
        registry.promote(store.client, MODEL, v2, store.lock, tags, "test", "try")
    assert store.aliases() == {CHAMPION: "1"}


def test_promote_refuses_incomplete_lineage(store: Store) -> None:
    v1 = store.new_version({k: v for k, v in LINEAGE.items() if k != "code.version"})
    with pytest.raises(PromotionRefused, match=r"missing code\.version"):
        promote(store, v1)
    assert store.aliases() == {}


def test_promote_needs_who_and_why(store: Store) -> None:
    v1 = store.new_version()
    with pytest.raises(ValueError, match="reason"):
        promote(store, v1, reason=" ")


def test_challenger(store: Store) -> None:
    v1, v2 = store.new_version(), store.new_version()
    promote(store, v1)
    registry.set_challenger(store.client, MODEL, v2)
    assert store.aliases() == {CHAMPION: "1", registry.CHALLENGER: "2"}
    with pytest.raises(RegistryError, match="no version '9'"):
        registry.set_challenger(store.client, MODEL, "9")


# --- rollback -------------------------------------------------------------------------------


def test_rollback_to_previous_and_back(store: Store) -> None:
    v1, v2 = store.new_version(), store.new_version()
    promote(store, v1)
    promote(store, v2)
    rec = registry.rollback(store.client, MODEL, store.lock, "oncall", "v2 drifts on JFK")
    assert (rec.action, rec.old, rec.new, rec.previous) == ("rollback", "2", "1", "2")
    assert store.aliases() == {CHAMPION: "1", PREVIOUS: "2"}
    for v in (v1, v2):
        tags = store.tags(v)
        assert tags["rollback.by"] == "oncall"
        assert tags["rollback.reason"] == "v2 drifts on JFK"
        assert tags["rollback.at"] == rec.at
    assert store.tags(v1)["rollback.from"] == "2"
    assert store.tags(v2)["rollback.to"] == "1"
    # Rolling back again undoes the rollback.
    registry.rollback(store.client, MODEL, store.lock, "oncall", "false alarm")
    assert store.aliases() == {CHAMPION: "2", PREVIOUS: "1"}


def test_rollback_to_an_explicit_version(store: Store) -> None:
    v1, v2, v3 = store.new_version(), store.new_version(), store.new_version()
    for v in (v1, v2, v3):
        promote(store, v)
    rec = registry.rollback(store.client, MODEL, store.lock, "oncall", "back to v1", to_version=v1)
    assert (rec.old, rec.new) == ("3", "1")
    assert store.aliases() == {CHAMPION: "1", PREVIOUS: "3"}


def test_rollback_target_rules(store: Store) -> None:
    v1, v2 = store.new_version(), store.new_version()
    promote(store, v1)
    promote(store, v2)
    refused = store.new_version()
    registry.record_decision(
        store.client, MODEL, refused, decide({"roc_auc": 0.5}, None, LINEAGE, GATES)
    )
    no_lineage = store.new_version({"feast.feature_service": "flight_delay_v1"})
    ungated = store.new_version()  # never judged

    def rollback(to: str, **kw: Any) -> registry.PromotionRecord:
        return registry.rollback(store.client, MODEL, store.lock, "oncall", "why", to, **kw)

    with pytest.raises(RegistryError, match="has no version '42'"):
        rollback("42")
    with pytest.raises(PromotionRefused, match="gate decision is 'refused'"):
        rollback(refused)
    with pytest.raises(PromotionRefused, match="gate decision is None"):
        rollback(ungated)
    with pytest.raises(PromotionRefused, match=r"missing dataset\.fingerprint, code\.version"):
        rollback(no_lineage, allow_ungated=True)  # lineage is never overridable
    with pytest.raises(NothingToRollBack, match="already @champion"):
        rollback(v2)
    assert store.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    # An explicit override is allowed, and recorded.
    rollback(ungated, allow_ungated=True)
    assert store.aliases() == {CHAMPION: ungated, PREVIOUS: "2"}
    assert store.tags(ungated)["rollback.allowed_ungated"] == "true"


def test_rollback_with_nothing_to_roll_back_to(store: Store) -> None:
    with pytest.raises(NothingToRollBack, match="no @champion"):
        registry.rollback(store.client, MODEL, store.lock, "oncall", "why")
    promote(store, store.new_version())
    with pytest.raises(NothingToRollBack, match=r"no @previous_champion.*to_version"):
        registry.rollback(store.client, MODEL, store.lock, "oncall", "why")
    assert store.aliases() == {CHAMPION: "1"}


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_promotions_are_serialized(store: Store) -> None:
    from mlflow import MlflowClient

    v1, v2, v3 = store.new_version(), store.new_version(), store.new_version()
    promote(store, v1)

    class SlowClient(MlflowClient):  # type: ignore[misc]
        """Widens the window between reading the champion and moving the aliases: without
        the lock both threads read v1 as the champion, and one promotion vanishes from
        @previous_champion (checked by hand with `promotion_lock` replaced by a no-op)."""

        def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
            time.sleep(0.3)
            super().set_registered_model_alias(name, alias, version)

    records: dict[str, registry.PromotionRecord] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(version: str) -> None:
        try:
            client = SlowClient(store.uri, store.uri)
            start.wait()
            records[version] = registry.promote(
                client, MODEL, version, store.lock, PASSED, f"thread-{version}", "race"
            )
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    final = store.aliases()
    winner = final[CHAMPION]
    loser = v2 if winner == v3 else v3
    assert winner in (v2, v3)
    # Serialized: the first promotion replaced v1, the second replaced the first.
    assert final[PREVIOUS] == loser
    assert records[loser].old == "1"
    assert records[winner].old == loser
    for v in (v2, v3):
        assert store.tags(v)["promoted_by"] == f"thread-{v}"
    moves = registry.alias_moves(store.client, MODEL)
    assert [(m["seq"], m["old"], m["new"]) for m in moves] == [
        (1, None, "1"),
        (2, "1", loser),
        (3, loser, winner),
    ]


def test_a_held_lock_blocks_promotion_across_processes(store: Store) -> None:
    v1 = store.new_version()
    store.lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, sys, time
                with open({str(store.lock)!r}, "a+") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                    fh.write("another promotion"); fh.flush()
                    print("locked", flush=True)
                    time.sleep(30)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PromotionLockTimeout, match="another promotion"):
            promote(store, v1, lock_timeout_s=0.3)
        assert store.aliases() == {}
    finally:
        holder.kill()
        holder.wait()
    # The lock dies with its holder.
    assert promote(store, v1, lock_timeout_s=5).new == "1"


# --- reports --------------------------------------------------------------------------------


def test_history_has_gate_decisions_and_alias_moves(store: Store) -> None:
    v1, v2 = store.new_version(), store.new_version()
    refused = store.new_version()
    promote(store, v1)
    promote(store, v2)
    registry.record_decision(
        store.client, MODEL, refused, decide({"roc_auc": 0.5}, None, LINEAGE, GATES)
    )
    registry.rollback(store.client, MODEL, store.lock, "oncall", "bad week")
    rows = registry.history(store.uri, MODEL)
    assert [r["version"] for r in rows] == ["1", "2", "3"]
    one, two, three = rows
    assert one["aliases"] == [CHAMPION]
    assert two["aliases"] == [PREVIOUS]
    assert one["gate_decision"] == "passed"
    assert three["gate_decision"] == "refused"
    assert any(c["name"] == "threshold.roc_auc" and not c["passed"] for c in three["gate_checks"])
    assert one["lineage_complete"]
    assert one["dataset_fingerprint"] == "ds-0001"
    assert two["rollback"]["reason"] == "bad week"
    assert two["rollback"]["to"] == "1"
    assert [(m["action"], m["old"], m["new"]) for m in two["moves"]] == [
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ]
    assert three["moves"] == []
    assert three["promoted_at"] is None
    assert registry.history(store.client, "no_such_model") == []


def test_default_lock_path_is_under_flywheel_home(flywheel_home: Path) -> None:
    assert registry.default_lock_path(MODEL) == flywheel_home / "registry" / (
        f"{MODEL}.promote.lock"
    )
