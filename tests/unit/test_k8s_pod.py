"""The Kubernetes training pod, built for real without a cluster.

A real `KubernetesPodOperator` is made from `pod_operator_kwargs()` inside a DAG whose
`gpus` Param is a template, rendered with a run's params (gpus=2), turned into the pod it
would submit (`build_pod_request_obj(..., dry_run=True)`: no kube config, no API server),
serialized to a manifest and checked: GPUs, scheduling, the restricted Pod Security
Standard, resources, environment, command, volumes, and the Kubernetes schema itself
(`kubernetes-validate --strict`). The settings parser and the policy checker are tested on
their own, good values and bad.

Airflow is imported once, in a module fixture, with a throw-away AIRFLOW_HOME.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import types
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from flywheel import k8s, runspec
from flywheel.k8s import PodSettings, PodSettingsError, pod_operator_kwargs, restricted_violations

pytestmark = pytest.mark.timeout(120)

NAMESPACE = "flywheel-train"
MLFLOW_URI = "http://mlflow.flywheel.svc.cluster.local:5000"
K8S_VERSIONS = ("1.33.0", "1.37.0")  # kubernetes-validate 1.37 ships 1.25 … 1.37
PARAM_GPUS = 2
RUN_ID = "manual__2026-03-01T12:00:00+00:00"


def _clean_env(patch: pytest.MonkeyPatch) -> None:
    """No FLYWHEEL_K8S_* / MLflow setting of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(k8s.ENV_PREFIX) or name in (
            "MLFLOW_TRACKING_URI",
            "FLYWHEEL_FEAST_YAML",
        ):
            patch.delenv(name)


@pytest.fixture
def k8s_env(monkeypatch: pytest.MonkeyPatch, flywheel_home: Path) -> Path:
    """A configured cluster (namespace + reachable MLflow) over an isolated FLYWHEEL_HOME."""
    _clean_env(monkeypatch)
    monkeypatch.setenv("FLYWHEEL_K8S_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("FLYWHEEL_K8S_MLFLOW_TRACKING_URI", MLFLOW_URI)
    return flywheel_home


# ---- the real operator ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.SimpleNamespace]:
    """Airflow's DAG, Param, the operator and PodGenerator, imported with a private home."""
    with pytest.MonkeyPatch.context() as patch:
        if "airflow" not in sys.modules:
            for name in list(os.environ):
                if name.startswith("AIRFLOW__"):
                    patch.delenv(name)
            patch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
            patch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
        from airflow.sdk import DAG, Param
        from airflow.serialization.serialized_objects import DagSerialization

        yield types.SimpleNamespace(
            DAG=DAG,
            Param=Param,
            KubernetesPodOperator=KubernetesPodOperator,
            PodGenerator=PodGenerator,
            DagSerialization=DagSerialization,
        )


@pytest.fixture(scope="module")
def built(
    airflow: types.SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> dict[bool, types.SimpleNamespace]:
    """The operator, DAG and serialized pod, rendered as text and as native objects."""
    home = tmp_path_factory.mktemp("k8s") / "flywheel_home"
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        _clean_env(patch)
        patch.setenv("FLYWHEEL_HOME", str(home))
        patch.setenv("FLYWHEEL_K8S_NAMESPACE", NAMESPACE)
        patch.setenv("FLYWHEEL_K8S_MLFLOW_TRACKING_URI", MLFLOW_URI)
        patch.setenv("FLYWHEEL_FEAST_YAML", str(home / "feast" / "feature_store.yaml"))
        settings = PodSettings.from_env()
        spec = str(home / "runs" / "r1" / "spec.json")
        for native in (False, True):
            with (
                airflow.DAG(
                    dag_id=f"k8s_pod_{'native' if native else 'text'}",
                    schedule=None,
                    params={"gpus": airflow.Param(1, type="integer", minimum=1, maximum=8)},
                    render_template_as_native_obj=native,
                ) as dag,
                warnings.catch_warnings(),
            ):
                # Provider 10.25 deprecates `reattach_on_restart`: none may be used here.
                warnings.simplefilter("error")
                op = airflow.KubernetesPodOperator(
                    task_id="train_kubernetes",
                    **pod_operator_kwargs(
                        settings, spec, "{{ params.gpus }}", run_id_label="flights-42"
                    ),
                )
            ti = types.SimpleNamespace(
                dag_id=dag.dag_id, task_id=op.task_id, map_index=-1, try_number=1
            )
            context: dict[str, Any] = {
                "params": {"gpus": PARAM_GPUS},  # the run's Params: default 1, triggered with 2
                "run_id": RUN_ID,
                "dag": dag,
                "ti": ti,
                "task": op,
            }
            op.render_template_fields(context)
            pod = op.build_pod_request_obj(context, dry_run=True)
            out[native] = types.SimpleNamespace(
                op=op,
                dag=dag,
                settings=settings,
                home=str(home),
                spec=spec,
                manifest=airflow.PodGenerator.serialize_pod(pod),
            )
    return out


@pytest.fixture(scope="module")
def pod(built: dict[bool, types.SimpleNamespace]) -> types.SimpleNamespace:
    return built[False]


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["containers"]
    assert len(containers) == 1, "one container: no XCom sidecar"
    container: dict[str, Any] = containers[0]
    return container


def test_gpus_come_from_the_param_in_limits_only(built: dict[bool, types.SimpleNamespace]) -> None:
    text, native = (_container(built[flag].manifest)["resources"] for flag in (False, True))
    assert text["limits"][k8s.GPU_RESOURCE] == str(PARAM_GPUS)
    assert native["limits"][k8s.GPU_RESOURCE] == PARAM_GPUS  # render_template_as_native_obj
    for resources in (text, native):
        assert k8s.GPU_RESOURCE not in resources["requests"]


def test_resources(pod: types.SimpleNamespace) -> None:
    resources = _container(pod.manifest)["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert resources["limits"] == {"cpu": "8", "memory": "16Gi", k8s.GPU_RESOURCE: "2"}


def test_scheduling_on_gpu_nodes(pod: types.SimpleNamespace) -> None:
    spec = pod.manifest["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod.manifest["metadata"]["namespace"] == NAMESPACE
    assert spec["restartPolicy"] == "Never"


def test_service_account_without_api_token(pod: types.SimpleNamespace) -> None:
    spec = pod.manifest["spec"]
    assert spec["serviceAccountName"] == "flywheel-trainer"
    assert spec["automountServiceAccountToken"] is False


def test_restricted_pod_security_standard(pod: types.SimpleNamespace) -> None:
    assert restricted_violations(pod.manifest) == []

    spec = pod.manifest["spec"]
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == k8s.RUN_AS_USER != 0
    assert pod_sc["runAsGroup"] == pod_sc["fsGroup"] == k8s.RUN_AS_GROUP
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork")
    assert not spec.get("hostPID")
    assert not spec.get("hostIPC")

    sc = _container(pod.manifest)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == k8s.RUN_AS_USER
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= k8s.ALLOWED_VOLUME_TYPES


def test_command_runs_the_training_entrypoint(pod: types.SimpleNamespace) -> None:
    container = _container(pod.manifest)
    assert container["command"] + container["args"] == [
        "python",
        "-m",
        "flywheel.train",
        "--spec",
        pod.spec,
    ]
    assert container["command"] + container["args"] == runspec.command(pod.spec)
    assert container["image"] == k8s.DEFAULT_IMAGE
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_environment(pod: types.SimpleNamespace) -> None:
    env = {e["name"]: e["value"] for e in _container(pod.manifest)["env"]}
    assert env["FLYWHEEL_HOME"] == pod.home
    assert env["MLFLOW_TRACKING_URI"] == MLFLOW_URI
    assert env["FLYWHEEL_FEAST_YAML"] == f"{pod.home}/feast/feature_store.yaml"
    assert env["HOME"] == "/tmp"  # the root filesystem is read-only
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # the device plugin sets it


def test_volumes_share_flywheel_home_and_give_a_writable_tmp(pod: types.SimpleNamespace) -> None:
    volumes = {v["name"]: v for v in pod.manifest["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(pod.manifest)["volumeMounts"]}
    assert volumes[mounts[pod.home]]["persistentVolumeClaim"] == {"claimName": "flywheel-home"}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "8Gi"}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert pod.spec.startswith(pod.home + "/")  # the spec is on the shared volume


def test_labels(pod: types.SimpleNamespace) -> None:
    metadata = pod.manifest["metadata"]
    labels = metadata["labels"]
    assert labels["app.kubernetes.io/name"] == "flywheel"
    assert labels["app.kubernetes.io/component"] == "train"
    assert labels[k8s.RUN_ID_KEY] == "flights-42"
    assert metadata["annotations"][k8s.RUN_ID_KEY] == "flights-42"
    # The operator's own labels find the pod again on a retry.
    assert labels["dag_id"] == pod.dag.dag_id
    assert labels["task_id"] == "train_kubernetes"
    assert labels["run_id"]
    assert labels["try_number"] == "1"
    assert metadata["name"].startswith(k8s.POD_NAME + "-")


def test_operator_lifecycle(pod: types.SimpleNamespace) -> None:
    op = pod.op
    assert op.pool == k8s.GPU_POOL == "gpu"
    assert op.pool_slots == 1
    assert op.startup_timeout_seconds == 900
    assert op.schedule_timeout_seconds == 1800
    assert op.on_finish_action == "delete_succeeded_pod"
    assert op.on_kill_action == "delete_pod"
    assert op.durable is True
    assert op.reattach_on_restart is True
    assert op.get_logs is True
    assert op.log_events_on_failure is True
    assert op.do_xcom_push is False
    assert op.in_cluster is None
    assert op.config_file is None


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifest_is_valid_kubernetes(
    built: dict[bool, types.SimpleNamespace], version: str
) -> None:
    import kubernetes_validate

    for flag in (False, True):  # text and native rendering
        kubernetes_validate.validate(built[flag].manifest, version, strict=True)
        assert restricted_violations(built[flag].manifest) == []


def test_dag_serializes(airflow: types.SimpleNamespace, pod: types.SimpleNamespace) -> None:
    """The dag-processor stores the DAG: the operator's k8s objects must serialize."""
    data = airflow.DagSerialization.to_dict(pod.dag)
    restored = airflow.DagSerialization.from_dict(data)
    assert "train_kubernetes" in restored.task_dict


def test_cluster_access_settings_reach_the_operator(
    airflow: types.SimpleNamespace, k8s_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_K8S_CONFIG_FILE", "/etc/flywheel/kubeconfig")
    monkeypatch.setenv("FLYWHEEL_K8S_CONTEXT", "gpu-cluster")
    monkeypatch.setenv("FLYWHEEL_K8S_IN_CLUSTER", "false")
    monkeypatch.setenv("FLYWHEEL_K8S_SECRET", "flywheel-mlflow")
    monkeypatch.setenv("FLYWHEEL_K8S_IMAGE_PULL_SECRET", "ghcr-pull")
    with airflow.DAG(dag_id="k8s_access", schedule=None):
        op = airflow.KubernetesPodOperator(
            task_id="train_kubernetes",
            **pod_operator_kwargs(PodSettings.from_env(), str(k8s_env / "spec.json"), 1),
        )
    pod = airflow.PodGenerator.serialize_pod(op.build_pod_request_obj(dry_run=True))
    assert (op.in_cluster, op.config_file, op.cluster_context) == (
        False,
        "/etc/flywheel/kubeconfig",
        "gpu-cluster",
    )
    assert _container(pod)["envFrom"] == [{"secretRef": {"name": "flywheel-mlflow"}}]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    assert _container(pod)["resources"]["limits"][k8s.GPU_RESOURCE] == "1"
    assert restricted_violations(pod) == []


def test_spec_path_and_run_id_templated_as_the_dag_does(
    airflow: types.SimpleNamespace, k8s_env: Path
) -> None:
    """The spec path comes from an upstream task's XCom; the run id only exists at run time."""
    spec = str(k8s_env / "runs" / "r9" / "spec.json")
    with airflow.DAG(dag_id="k8s_templated", schedule=None, params={"gpus": 1}) as dag:
        op = airflow.KubernetesPodOperator(
            task_id="train_kubernetes",
            **pod_operator_kwargs(
                PodSettings.from_env(),
                "{{ ti.xcom_pull(task_ids='prepare_training')['spec_path'] }}",
                "{{ params.gpus }}",
                run_id_label="{{ run_id }}",
            ),
        )
    ti = types.SimpleNamespace(
        dag_id=dag.dag_id,
        task_id=op.task_id,
        map_index=-1,
        try_number=1,
        xcom_pull=lambda task_ids: {"spec_path": spec} if task_ids == "prepare_training" else None,
    )
    context = {"params": {"gpus": 1}, "run_id": RUN_ID, "dag": dag, "ti": ti, "task": op}
    op.render_template_fields(context)
    manifest = airflow.PodGenerator.serialize_pod(op.build_pod_request_obj(context, dry_run=True))
    assert _container(manifest)["args"] == ["--spec", spec]
    assert _container(manifest)["resources"]["limits"][k8s.GPU_RESOURCE] == "1"
    assert manifest["metadata"]["annotations"] == {k8s.RUN_ID_KEY: RUN_ID}
    assert restricted_violations(manifest) == []


# ---- restricted_violations on broken pods -------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    """A mutation of the manifest: set (or, with value=None, delete) a dotted path."""

    def mutate(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = manifest
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value

    return mutate


def _both(*mutations: Any) -> Any:
    def mutate(manifest: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(manifest)

    return mutate


C = "spec.containers.0.securityContext"
BROKEN = {
    "privileged": (_set(f"{C}.privileged", True), "privileged is true"),
    "root user in the container": (_set(f"{C}.runAsUser", 0), "runAsUser is 0"),
    "root user in the pod": (_set("spec.securityContext.runAsUser", 0), "runAsUser is 0"),
    "runAsNonRoot false": (_set(f"{C}.runAsNonRoot", False), "runAsNonRoot must be true"),
    "no runAsNonRoot anywhere": (
        _both(_set(f"{C}.runAsNonRoot", None), _set("spec.securityContext.runAsNonRoot", None)),
        "runAsNonRoot must be true",
    ),
    "no seccomp": (
        _both(_set(f"{C}.seccompProfile", None), _set("spec.securityContext.seccompProfile", None)),
        "seccompProfile.type must be RuntimeDefault or Localhost",
    ),
    "unconfined seccomp": (
        _set(f"{C}.seccompProfile", {"type": "Unconfined"}),
        "seccompProfile.type must be RuntimeDefault or Localhost",
    ),
    "hostPath volume": (
        lambda m: m["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        "hostPath volumes are forbidden",
    ),
    "nfs volume": (
        lambda m: m["spec"]["volumes"].append(
            {"name": "share", "nfs": {"server": "nfs", "path": "/x"}}
        ),
        "volume type 'nfs' is not allowed",
    ),
    "added capability": (
        _set(f"{C}.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        "only NET_BIND_SERVICE may be added",
    ),
    "capabilities not dropped": (_set(f"{C}.capabilities", None), "drop must include 'ALL'"),
    "privilege escalation": (
        _set(f"{C}.allowPrivilegeEscalation", None),
        "allowPrivilegeEscalation must be false",
    ),
    "host network": (_set("spec.hostNetwork", True), "spec.hostNetwork is true"),
    "host PID": (_set("spec.hostPID", True), "spec.hostPID is true"),
    "host port": (
        _set("spec.containers.0.ports", [{"containerPort": 80, "hostPort": 80}]),
        "hostPort 80",
    ),
    "writable root filesystem": (
        _set(f"{C}.readOnlyRootFilesystem", False),
        "readOnlyRootFilesystem must be true",
    ),
    "privileged init container": (
        lambda m: m["spec"].__setitem__(
            "initContainers",
            [{"name": "setup", "image": "busybox", "securityContext": {"privileged": True}}],
        ),
        "spec.initContainers[0] 'setup': securityContext.privileged is true",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_restricted_violations_flags(pod: types.SimpleNamespace, case: str) -> None:
    mutate, expected = BROKEN[case]
    manifest = copy.deepcopy(pod.manifest)
    mutate(manifest)
    violations = restricted_violations(manifest)
    assert any(expected in v for v in violations), violations


def test_restricted_violations_allows_what_the_standard_allows(pod: types.SimpleNamespace) -> None:
    manifest = copy.deepcopy(pod.manifest)
    _set(f"{C}.capabilities", {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})(manifest)
    # Seccomp and runAsNonRoot set on the pod only are inherited by the container.
    _set(f"{C}.seccompProfile", None)(manifest)
    _set(f"{C}.runAsNonRoot", None)(manifest)
    manifest["spec"]["volumes"].append({"name": "cfg", "configMap": {"name": "c"}})
    assert restricted_violations(manifest) == []
    _set(f"{C}.readOnlyRootFilesystem", None)(manifest)
    assert restricted_violations(manifest, read_only_root_filesystem=False) == []


def test_restricted_violations_on_a_non_pod() -> None:
    assert restricted_violations({"kind": "Pod"}) == ["spec: missing; not a pod manifest"]


# ---- settings from the environment ---------------------------------------------------------------


def test_not_configured_without_a_namespace(
    monkeypatch: pytest.MonkeyPatch, flywheel_home: Path
) -> None:
    _clean_env(monkeypatch)
    assert k8s.cluster_configured() is False
    monkeypatch.setenv("FLYWHEEL_K8S_NAMESPACE", "  ")
    assert k8s.cluster_configured() is False
    settings = PodSettings.from_env()
    assert settings.configured is False
    with pytest.raises(PodSettingsError, match="FLYWHEEL_K8S_NAMESPACE"):
        pod_operator_kwargs(settings, str(flywheel_home / "spec.json"), 1)
    monkeypatch.setenv("FLYWHEEL_K8S_NAMESPACE", NAMESPACE)
    assert k8s.cluster_configured() is True
    assert PodSettings.from_env().configured is True


def test_defaults(k8s_env: Path) -> None:
    s = PodSettings.from_env()
    assert s.namespace == NAMESPACE
    assert s.home == str(k8s_env)  # the worker's FLYWHEEL_HOME
    assert s.image == k8s.DEFAULT_IMAGE
    assert s.service_account == "flywheel-trainer"
    assert dict(s.node_selector) == {"nvidia.com/gpu.present": "true"}
    assert [t.to_manifest() for t in s.tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert (s.startup_timeout_seconds, s.schedule_timeout_seconds) == (900, 1800)
    assert s.active_deadline_seconds is None
    assert s.in_cluster is None


def test_from_env_parses_every_variable(k8s_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "IMAGE": "registry.example.com/ml/flywheel-train@sha256:" + "a" * 64,
        "IMAGE_PULL_POLICY": "Always",
        "SERVICE_ACCOUNT": "trainer",
        "NODE_SELECTOR": '{"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "gpu"}',
        "TOLERATIONS": '[{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",'
        ' "effect": "NoSchedule"}, {"key": "spot", "operator": "Exists", "effect": "NoExecute",'
        ' "tolerationSeconds": 60}]',
        "PVC": "shared-state",
        "CPU_REQUEST": "3500m",
        "CPU_LIMIT": "7",
        "MEMORY_REQUEST": "30Gi",
        "MEMORY_LIMIT": "32Gi",
        "TMP_SIZE": "20Gi",
        "SHM_SIZE": "4Gi",
        "STARTUP_TIMEOUT_SECONDS": "600",
        "SCHEDULE_TIMEOUT_SECONDS": "3600",
        "ACTIVE_DEADLINE_SECONDS": "86400",
        "IN_CLUSTER": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(k8s.ENV_PREFIX + name, value)
    s = PodSettings.from_env()
    assert s.image == values["IMAGE"]
    assert s.image_pull_policy == "Always"
    assert dict(s.node_selector) == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "gpu"}
    assert s.tolerations == (
        k8s.Toleration(
            key="nvidia.com/gpu", operator="Equal", value="present", effect="NoSchedule"
        ),
        k8s.Toleration(key="spot", operator="Exists", effect="NoExecute", toleration_seconds=60),
    )
    assert (s.pvc, s.home, s.service_account) == ("shared-state", str(k8s_env), "trainer")
    assert (s.cpu_request, s.cpu_limit, s.memory_request, s.memory_limit) == (
        "3500m",
        "7",
        "30Gi",
        "32Gi",
    )
    assert (s.tmp_size, s.shm_size) == ("20Gi", "4Gi")
    assert (s.startup_timeout_seconds, s.schedule_timeout_seconds) == (600, 3600)
    assert s.active_deadline_seconds == 86400
    assert s.in_cluster is True

    kwargs = pod_operator_kwargs(s, str(k8s_env / "runs" / "r7" / "spec.json"), "4")
    assert kwargs["arguments"] == ["--spec", str(k8s_env / "runs" / "r7" / "spec.json")]
    assert kwargs["container_resources"].limits[k8s.GPU_RESOURCE] == "4"
    assert kwargs["active_deadline_seconds"] == 86400
    assert kwargs["in_cluster"] is True
    assert "config_file" not in kwargs


def test_empty_lists_turn_gpu_scheduling_constraints_off(
    k8s_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_K8S_NODE_SELECTOR", "{}")
    monkeypatch.setenv("FLYWHEEL_K8S_TOLERATIONS", "[]")
    s = PodSettings.from_env()
    assert dict(s.node_selector) == {}
    assert s.tolerations == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NAMESPACE", "ML_Team"),
        ("IMAGE", "has a space"),
        ("IMAGE_PULL_POLICY", "Sometimes"),
        ("SERVICE_ACCOUNT", "Trainer!"),
        ("PVC", "under_score"),
        ("NODE_SELECTOR", "gpu=true"),
        ("NODE_SELECTOR", '["nvidia.com/gpu.present"]'),
        ("NODE_SELECTOR", '{"nvidia.com/gpu.present": true}'),
        ("NODE_SELECTOR", '{"bad key!": "x"}'),
        ("TOLERATIONS", '{"key": "nvidia.com/gpu"}'),
        ("TOLERATIONS", "[{'key': 'single-quoted'}]"),
        ("TOLERATIONS", '[{"key": "nvidia.com/gpu", "operator": "Maybe"}]'),
        ("TOLERATIONS", '[{"key": "a", "effect": "NoSchedule", "colour": "red"}]'),
        ("TOLERATIONS", '[{"key": "a", "operator": "Exists", "value": "v"}]'),
        ("TOLERATIONS", '[{"key": "a", "operator": "Exists", "effect": "Never"}]'),
        ("TOLERATIONS", '[{"key": "a", "operator": "Exists", "tolerationSeconds": 5}]'),
        ("TOLERATIONS", '["nvidia.com/gpu"]'),
        ("CPU_REQUEST", "lots"),
        ("CPU_LIMIT", "-2"),
        ("MEMORY_REQUEST", "32Gi"),  # above the 16Gi limit
        ("MEMORY_LIMIT", "16GB"),
        ("SHM_SIZE", "16Gi"),  # not below the memory limit
        ("STARTUP_TIMEOUT_SECONDS", "soon"),
        ("SCHEDULE_TIMEOUT_SECONDS", "0"),
        ("ACTIVE_DEADLINE_SECONDS", "-1"),
        ("IN_CLUSTER", "maybe"),
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
        ("MLFLOW_TRACKING_URI", "http://localhost:5000"),
    ],
)
def test_from_env_rejects_bad_values_naming_the_variable(
    k8s_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(k8s.ENV_PREFIX + name, value)
    with pytest.raises(PodSettingsError, match=re.escape(k8s.ENV_PREFIX + name)):
        PodSettings.from_env()


@pytest.mark.parametrize("home", ["/", "/tmp"])
def test_flywheel_home_must_be_mountable(
    k8s_env: Path, monkeypatch: pytest.MonkeyPatch, home: str
) -> None:
    monkeypatch.setenv("FLYWHEEL_HOME", home)
    with pytest.raises(PodSettingsError, match="FLYWHEEL_HOME"):
        PodSettings.from_env()


def test_in_cluster_and_kube_config_are_exclusive(
    k8s_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_K8S_IN_CLUSTER", "true")
    monkeypatch.setenv("FLYWHEEL_K8S_CONFIG_FILE", "/etc/kube/config")
    with pytest.raises(PodSettingsError, match="FLYWHEEL_K8S_CONFIG_FILE"):
        PodSettings.from_env()


def test_mlflow_uri_falls_back_unless_loopback(
    k8s_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLYWHEEL_K8S_MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert PodSettings.from_env().mlflow_tracking_uri == "https://mlflow.example.com"

    # The embedded stack's server listens on the worker's loopback: not the pod's.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = PodSettings.from_env()
    assert settings.mlflow_tracking_uri is None
    with pytest.raises(PodSettingsError, match="FLYWHEEL_K8S_MLFLOW_TRACKING_URI"):
        pod_operator_kwargs(settings, str(k8s_env / "spec.json"), 1)


@pytest.mark.parametrize("gpus", [0, -1, "0", "1.5", "two", "", True, 1.0])
def test_gpu_count_must_be_whole_and_positive(k8s_env: Path, gpus: Any) -> None:
    with pytest.raises(PodSettingsError, match="gpus"):
        pod_operator_kwargs(PodSettings.from_env(), str(k8s_env / "spec.json"), gpus)


def test_spec_must_be_on_the_shared_volume(k8s_env: Path, tmp_path: Path) -> None:
    settings = PodSettings.from_env()
    with pytest.raises(PodSettingsError, match="outside FLYWHEEL_HOME"):
        pod_operator_kwargs(settings, str(tmp_path / "elsewhere.json"), 1)
    with pytest.raises(PodSettingsError, match="absolute"):
        pod_operator_kwargs(settings, "runs/spec.json", 1)
    templated = "{{ ti.xcom_pull(task_ids='write_spec') }}"
    assert pod_operator_kwargs(settings, templated, 1)["arguments"] == ["--spec", templated]


def test_run_id_label(k8s_env: Path) -> None:
    settings = PodSettings.from_env()
    kwargs = pod_operator_kwargs(settings, str(k8s_env / "s.json"), 1, run_id_label=RUN_ID)
    label = kwargs["labels"][k8s.RUN_ID_KEY]
    assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", label), label
    assert label.startswith("manual__2026-03-01T12-00-00-00-00-")
    assert kwargs["annotations"][k8s.RUN_ID_KEY] == RUN_ID
    # A template cannot be made label-safe before it is rendered: annotation only.
    kwargs = pod_operator_kwargs(settings, str(k8s_env / "s.json"), 1, run_id_label="{{ run_id }}")
    assert k8s.RUN_ID_KEY not in kwargs["labels"]
    assert kwargs["annotations"][k8s.RUN_ID_KEY] == "{{ run_id }}"
    assert k8s.safe_label_value("x" * 80) != k8s.safe_label_value("x" * 81)
    assert len(k8s.safe_label_value("x" * 80)) <= 63


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("4", "4"), ("16Gi", str(16 * 1024**3)), ("1e3", "1000"), ("2k", "2000")],
)
def test_parse_quantity(text: str, value: str) -> None:
    assert k8s.parse_quantity(text) == Decimal(value)
