"""The Kubernetes GPU training backend: the pod that runs `python -m flywheel.train --spec ...`.

Training has one entrypoint. By default it runs as a subprocess on the Airflow worker; when
a cluster is configured (`cluster_configured()`: FLYWHEEL_K8S_NAMESPACE is set) the DAG
submits the same entrypoint as a pod instead:

    KubernetesPodOperator(task_id="train_kubernetes", **pod_operator_kwargs(settings, spec, gpus))

This module builds those constructor arguments from `PodSettings` (the FLYWHEEL_K8S_*
environment) without importing Airflow: the provider costs ~5 s to import, so the DAG
imports it only when a cluster is configured. The Kubernetes client models are imported
inside the functions that need them, never at module level.

The pod meets the *restricted* Pod Security Standard (non-root UID `RUN_AS_USER`, no
privilege escalation, all capabilities dropped, RuntimeDefault seccomp) and, beyond it,
runs with a read-only root filesystem: /tmp is an emptyDir and HOME points there.
`restricted_violations()` checks a serialized pod against those rules.

It reads and writes the same state as the worker: the PersistentVolumeClaim holding
FLYWHEEL_HOME is mounted in the pod at the very path the worker uses, so every absolute
path in the run spec means the same on both sides (the worker mounts the same claim there).
The entrypoint writes its result there; nothing travels through XCom.

GPU count: `gpus` may be a whole number or a Jinja template such as "{{ params.gpus }}".
`container_resources` is a template field of the operator in provider 10.25, and the
operator renders the `limits` and `requests` dicts of a V1ResourceRequirements (its
`_render_nested_template_fields`), so the template in `limits["nvidia.com/gpu"]` becomes
"2" (or 2 under `render_template_as_native_obj`) at run time; both are valid quantities.
Declare the Param as a bounded integer (e.g. `Param(1, type="integer", minimum=1,
maximum=8)`): a rendered value is not checked here, the API server rejects a bad one.
Under native rendering every string of a template field that reads as a Python literal
turns into one ("1" -> 1), so the values set here avoid such strings where the schema
wants a string (env values); resource quantities may be numbers.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from hashlib import sha256
from pathlib import PurePosixPath
from typing import Any, NoReturn
from urllib.parse import urlsplit

from flywheel.paths import Home
from flywheel.runspec import ENTRYPOINT

ENV_PREFIX = "FLYWHEEL_K8S_"

# An example: no image is published under this name. Build docker/train.Dockerfile, push it
# to your registry and set FLYWHEEL_K8S_IMAGE (pin a tag or, better, a digest).
DEFAULT_IMAGE = "ghcr.io/flywheel-mlops/flywheel-train:0.1.0"
DEFAULT_SERVICE_ACCOUNT = "flywheel-trainer"
DEFAULT_PVC = "flywheel-home"
# Label set on GPU nodes by NVIDIA GPU feature discovery (GPU operator / device plugin).
DEFAULT_NODE_SELECTOR: Mapping[str, str] = {"nvidia.com/gpu.present": "true"}

GPU_RESOURCE = "nvidia.com/gpu"
# Airflow pool capping concurrent GPU pods (one slot per pod); the deployment creates it.
GPU_POOL = "gpu"
# The UID/GID the training image creates (docker/train.Dockerfile); the pod runs as them.
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001
# `flywheel.runspec.command()`: the same command line as the local subprocess.
TRAIN_COMMAND = ("python", "-m", ENTRYPOINT)
POD_NAME = "flywheel-train"
CONTAINER_TMP = "/tmp"
CONTAINER_SHM = "/dev/shm"
RUN_ID_KEY = "flywheel/run-id"
LABELS: Mapping[str, str] = {
    "app.kubernetes.io/name": "flywheel",
    "app.kubernetes.io/component": "train",
    "app.kubernetes.io/managed-by": "airflow",
}

# Why these defaults are long: `schedule_timeout_seconds` bounds the time a pod may stay
# unschedulable. On an autoscaled cluster the first GPU pod waits for the autoscaler to
# provision a GPU node, boot it, install the NVIDIA driver/device plugin and advertise
# `nvidia.com/gpu`: 5–15 min is common, longer when the zone is short of GPUs. The provider's
# default (120 s) fails such a run although it would have started. `startup_timeout_seconds`
# starts once the pod is scheduled and covers pulling the image (a CUDA + PyTorch image is
# several GB; 3–10 min on a fresh node) and attaching the volume.
DEFAULT_STARTUP_TIMEOUT_S = 900
DEFAULT_SCHEDULE_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Toleration:
    """One Kubernetes toleration (the fields of a manifest's `tolerations[]` item)."""

    key: str | None = None
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_manifest(self) -> dict[str, Any]:
        """The camelCase manifest form, without unset fields."""
        out: dict[str, Any] = {
            "key": self.key,
            "operator": self.operator,
            "value": self.value,
            "effect": self.effect,
            "tolerationSeconds": self.toleration_seconds,
        }
        return {k: v for k, v in out.items() if v is not None}


DEFAULT_TOLERATIONS: tuple[Toleration, ...] = (
    Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"),
)


class PodSettingsError(ValueError):
    """A FLYWHEEL_K8S_* variable (named in the message) has a value that cannot be used."""


@dataclass(frozen=True, kw_only=True)
class PodSettings:
    """Where and how the training pod runs; `from_env()` reads it from the environment.

    Every variable is optional; an empty value counts as unset.

    FLYWHEEL_K8S_NAMESPACE
        Namespace of the training pods. Setting it is the switch: the DAG trains on
        Kubernetes only when it is set (`configured`, `cluster_configured()`). Default: unset.
    FLYWHEEL_K8S_IMAGE
        The training image (docker/train.Dockerfile). Default: DEFAULT_IMAGE, an example
        name that is not published: set your own, pinned by tag or digest.
    FLYWHEEL_K8S_IMAGE_PULL_POLICY
        Always, IfNotPresent or Never. Default: IfNotPresent (the image is large).
    FLYWHEEL_K8S_IMAGE_PULL_SECRET
        Name of a docker-registry Secret for a private registry. Default: none.
    FLYWHEEL_K8S_SERVICE_ACCOUNT
        Service account of the pod: a dedicated one with no RBAC (its API token is not
        mounted); bind cloud identity (object storage) to it. Default: flywheel-trainer.
    FLYWHEEL_K8S_NODE_SELECTOR
        JSON object of node labels the pod requires; `{}` for none.
        Default: {"nvidia.com/gpu.present": "true"}.
    FLYWHEEL_K8S_TOLERATIONS
        JSON list of tolerations in manifest form (key, operator, value, effect,
        tolerationSeconds); `[]` for none. Default: tolerate the `nvidia.com/gpu` taint,
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}].
    FLYWHEEL_K8S_PVC
        PersistentVolumeClaim holding FLYWHEEL_HOME (ReadWriteMany: the worker writes the
        spec and training data, the pod reads them and writes its result). Default:
        flywheel-home. It is mounted in the pod at the worker's FLYWHEEL_HOME path (`home`).
    FLYWHEEL_K8S_CPU_REQUEST, FLYWHEEL_K8S_CPU_LIMIT
        CPU quantities. Defaults: 4 and 8.
    FLYWHEEL_K8S_MEMORY_REQUEST, FLYWHEEL_K8S_MEMORY_LIMIT
        Memory quantities. Defaults: 16Gi and 16Gi (equal: no overcommit, no surprise OOM
        kills when the node is busy).
    FLYWHEEL_K8S_TMP_SIZE
        Size limit of the /tmp emptyDir (scratch, caches; the root filesystem is
        read-only). Default: 8Gi.
    FLYWHEEL_K8S_SHM_SIZE
        Size limit of a memory-backed /dev/shm (PyTorch DataLoader workers share batches
        through it; a container's default is 64 MiB). It counts against the memory limit.
        Default: 2Gi.
    FLYWHEEL_K8S_STARTUP_TIMEOUT_SECONDS
        Seconds a scheduled pod may take to start (image pull). Default: 900.
    FLYWHEEL_K8S_SCHEDULE_TIMEOUT_SECONDS
        Seconds a pod may wait to be scheduled (GPU node scale-up). Default: 1800.
    FLYWHEEL_K8S_ACTIVE_DEADLINE_SECONDS
        Hard limit on the pod's run time (Kubernetes kills it after). Default: none.
    FLYWHEEL_K8S_MLFLOW_TRACKING_URI
        MLflow tracking URI as seen from the pod. Default: MLFLOW_TRACKING_URI unless that
        points at loopback (the worker's 127.0.0.1 is not the pod's). A loopback value here
        is an error.
    FLYWHEEL_K8S_SECRET
        Name of a Secret whose keys become the pod's environment (MLflow token, object
        store credentials). Default: none.
    FLYWHEEL_K8S_IN_CLUSTER
        true: Airflow runs in the cluster and uses its service account; false: use a kube
        config. Default: unset (the `kubernetes_default` connection decides).
    FLYWHEEL_K8S_CONFIG_FILE
        Path of a kube config on the worker. Not with FLYWHEEL_K8S_IN_CLUSTER=true.
    FLYWHEEL_K8S_CONTEXT
        Kube config context. Default: the current context.
    FLYWHEEL_FEAST_YAML
        (Flywheel's own variable) passed on to the pod when set.
    """

    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    image_pull_secret: str | None = None
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    node_selector: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))
    tolerations: tuple[Toleration, ...] = DEFAULT_TOLERATIONS
    pvc: str = DEFAULT_PVC
    home: str  # the worker's FLYWHEEL_HOME: where the claim is mounted in the pod too
    cpu_request: str = "4"
    cpu_limit: str = "8"
    memory_request: str = "16Gi"
    memory_limit: str = "16Gi"
    tmp_size: str = "8Gi"
    shm_size: str = "2Gi"
    startup_timeout_seconds: int = DEFAULT_STARTUP_TIMEOUT_S
    schedule_timeout_seconds: int = DEFAULT_SCHEDULE_TIMEOUT_S
    active_deadline_seconds: int | None = None
    mlflow_tracking_uri: str | None = None
    secret: str | None = None
    in_cluster: bool | None = None
    config_file: str | None = None
    cluster_context: str | None = None
    feast_yaml: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def configured(self) -> bool:
        """True when a cluster is configured (a namespace is set): train in a pod."""
        return bool(self.namespace)

    @classmethod
    def from_env(cls) -> PodSettings:
        """Settings from FLYWHEEL_K8S_* (see the class docstring); reads no file, no network.

        Raises PodSettingsError naming the variable whose value is unusable.
        """
        env = os.environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or None

        kwargs: dict[str, Any] = {
            "namespace": get("NAMESPACE"),
            "image_pull_secret": get("IMAGE_PULL_SECRET"),
            "home": str(Home.from_env().root),
            "active_deadline_seconds": _int(get, "ACTIVE_DEADLINE_SECONDS"),
            "mlflow_tracking_uri": _mlflow_uri(get("MLFLOW_TRACKING_URI"), env),
            "secret": get("SECRET"),
            "in_cluster": _bool(get, "IN_CLUSTER"),
            "config_file": get("CONFIG_FILE"),
            "cluster_context": get("CONTEXT"),
            "feast_yaml": env.get("FLYWHEEL_FEAST_YAML", "").strip() or None,
        }
        plain = {
            "image": "IMAGE",
            "image_pull_policy": "IMAGE_PULL_POLICY",
            "service_account": "SERVICE_ACCOUNT",
            "pvc": "PVC",
            "cpu_request": "CPU_REQUEST",
            "cpu_limit": "CPU_LIMIT",
            "memory_request": "MEMORY_REQUEST",
            "memory_limit": "MEMORY_LIMIT",
            "tmp_size": "TMP_SIZE",
            "shm_size": "SHM_SIZE",
        }
        for attr, name in plain.items():
            if (value := get(name)) is not None:
                kwargs[attr] = value
        for attr, name in (
            ("startup_timeout_seconds", "STARTUP_TIMEOUT_SECONDS"),
            ("schedule_timeout_seconds", "SCHEDULE_TIMEOUT_SECONDS"),
        ):
            if (number := _int(get, name)) is not None:
                kwargs[attr] = number
        if (raw := get("NODE_SELECTOR")) is not None:
            kwargs["node_selector"] = _node_selector(raw)
        if (raw := get("TOLERATIONS")) is not None:
            kwargs["tolerations"] = _tolerations(raw)
        return cls(**kwargs)


def cluster_configured() -> bool:
    """Whether training goes to Kubernetes: FLYWHEEL_K8S_NAMESPACE is set. Environment only.

    Cheap and never raises: the other variables are checked by `PodSettings.from_env()`,
    which the DAG calls only when this is true.
    """
    return bool(os.environ.get(ENV_PREFIX + "NAMESPACE", "").strip())


def pod_operator_kwargs(
    settings: PodSettings,
    spec_path: str,
    gpus: int | str,
    *,
    run_id_label: str | None = None,
) -> dict[str, Any]:
    """KubernetesPodOperator keyword arguments (all but task_id) running one training run.

    `spec_path`: the run spec (JSON), an absolute path under FLYWHEEL_HOME (the shared
    volume, mounted at the same path in the pod) or a Jinja template. `gpus`: a whole
    number >= 1 or a Jinja template such as "{{ params.gpus }}" (see the module docstring).
    `run_id_label`: an id to find the pod by (e.g. the Flywheel/MLflow run name): set as the
    `flywheel/run-id` label (made label-safe) and annotation (verbatim); a template goes to
    the annotation only, since its rendered value could not be made label-safe. The operator
    itself labels each pod with dag_id, task_id, run_id and try_number.
    """
    from kubernetes.client import models as k8s

    if not settings.configured:
        raise PodSettingsError(
            f"{ENV_PREFIX}NAMESPACE is not set: no Kubernetes cluster is configured for training"
        )
    if not settings.mlflow_tracking_uri:
        raise PodSettingsError(
            f"{ENV_PREFIX}MLFLOW_TRACKING_URI is not set (and MLFLOW_TRACKING_URI is unset or "
            "loopback): the training pod needs a tracking server it can reach"
        )
    gpu_count = gpu_limit(gpus)
    _check_on_volume(spec_path, settings.home)

    labels = dict(LABELS)
    annotations: dict[str, str] = {}
    if run_id_label:
        annotations[RUN_ID_KEY] = run_id_label
        if not _is_template(run_id_label):
            labels[RUN_ID_KEY] = safe_label_value(run_id_label)

    env = {
        "FLYWHEEL_HOME": settings.home,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        # The root filesystem is read-only: caches (~/.cache, matplotlib, torch) go to /tmp.
        "HOME": CONTAINER_TMP,
        # Any non-empty value turns these on. Not "1": env values are template fields, and a
        # DAG with render_template_as_native_obj=True would render "1" as the integer 1, which
        # is not a valid env value.
        "PYTHONUNBUFFERED": "true",  # stream log lines to the task log as they are written
        "PYTHONDONTWRITEBYTECODE": "true",
    }
    if settings.feast_yaml:
        env["FLYWHEEL_FEAST_YAML"] = settings.feast_yaml

    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    kwargs: dict[str, Any] = {
        "namespace": settings.namespace,
        "name": POD_NAME,
        "image": settings.image,
        "image_pull_policy": settings.image_pull_policy,
        "cmds": list(TRAIN_COMMAND),
        "arguments": ["--spec", spec_path],
        "env_vars": [k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        "container_resources": k8s.V1ResourceRequirements(
            requests={"cpu": settings.cpu_request, "memory": settings.memory_request},
            # Extended resources such as GPUs go in limits only; the request defaults to it.
            limits={
                "cpu": settings.cpu_limit,
                "memory": settings.memory_limit,
                GPU_RESOURCE: gpu_count,
            },
        ),
        "node_selector": dict(settings.node_selector),
        "tolerations": [
            k8s.V1Toleration(
                key=t.key,
                operator=t.operator,
                value=t.value,
                effect=t.effect,
                toleration_seconds=t.toleration_seconds,
            )
            for t in settings.tolerations
        ],
        "service_account_name": settings.service_account,
        # Training does not talk to the Kubernetes API: no token in the pod.
        "automount_service_account_token": False,
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_GROUP,
            # The volume is group-writable for the pod; skip the recursive chown of a large
            # volume when its root already has the right group.
            fs_group=RUN_AS_GROUP,
            fs_group_change_policy="OnRootMismatch",
            seccomp_profile=seccomp,
        ),
        "container_security_context": k8s.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_GROUP,
            allow_privilege_escalation=False,
            privileged=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=seccomp,
        ),
        "volumes": [
            k8s.V1Volume(
                name="flywheel-home",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=settings.pvc
                ),
            ),
            k8s.V1Volume(
                name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=settings.tmp_size)
            ),
            k8s.V1Volume(
                name="shm",
                empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=settings.shm_size),
            ),
        ],
        "volume_mounts": [
            k8s.V1VolumeMount(name="flywheel-home", mount_path=settings.home),
            k8s.V1VolumeMount(name="tmp", mount_path=CONTAINER_TMP),
            k8s.V1VolumeMount(name="shm", mount_path=CONTAINER_SHM),
        ],
        "labels": labels,
        "annotations": annotations,
        # The last log lines become the termination message when the container fails.
        "termination_message_policy": "FallbackToLogsOnError",
        "pool": GPU_POOL,
        "pool_slots": 1,
        "startup_timeout_seconds": settings.startup_timeout_seconds,
        "schedule_timeout_seconds": settings.schedule_timeout_seconds,
        # A failed pod is kept (its logs, events, exit reason and the node it ran on are the
        # evidence: GPU/driver errors, OOM kills, evictions); a succeeded one is deleted, its
        # result is on the volume and its log in the task log.
        "on_finish_action": "delete_succeeded_pod",
        # Killing the task (UI, timeout) deletes the pod: no GPU left running unattended.
        "on_kill_action": "delete_pod",
        # A retry after the worker died reattaches to the pod still running instead of
        # starting a second one on another GPU (apache/airflow#10544). Provider 10.25
        # deprecates `reattach_on_restart` in favour of `durable` on Airflow 3.3 (pod
        # identity kept in the task state store, label search as the fallback).
        "durable": True,
        "get_logs": True,
        "log_events_on_failure": True,
        # The entrypoint writes its result to the shared volume: no XCom sidecar.
        "do_xcom_push": False,
    }
    if settings.image_pull_secret:
        kwargs["image_pull_secrets"] = [k8s.V1LocalObjectReference(name=settings.image_pull_secret)]
    if settings.secret:
        kwargs["env_from"] = [
            k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.secret))
        ]
    if settings.active_deadline_seconds is not None:
        kwargs["active_deadline_seconds"] = settings.active_deadline_seconds
    if settings.in_cluster is not None:
        kwargs["in_cluster"] = settings.in_cluster
    if settings.config_file:
        kwargs["config_file"] = settings.config_file
    if settings.cluster_context:
        kwargs["cluster_context"] = settings.cluster_context
    return kwargs


def gpu_limit(gpus: int | str) -> str:
    """The `nvidia.com/gpu` limit: a whole number >= 1 as a string, or a Jinja template."""
    if isinstance(gpus, bool) or not isinstance(gpus, int | str):
        raise PodSettingsError(f"gpus must be a whole number or a Jinja template, not {gpus!r}")
    text = str(gpus).strip()
    if _is_template(text):
        return text
    if not text.isdigit() or int(text) < 1:
        raise PodSettingsError(
            f"gpus must be a whole number >= 1 (GPUs cannot be shared or split), not {gpus!r}"
        )
    return str(int(text))


def safe_label_value(value: str) -> str:
    """`value` as a valid label value: [A-Za-z0-9_.-], alphanumeric at both ends, <= 63 chars.

    A value that had to change gets a short hash of the original, so distinct ids stay
    distinct (e.g. Airflow's `manual__2025-01-01T00:00:00+00:00`).
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    if cleaned == value and len(cleaned) <= 63:
        return cleaned
    digest = sha256(value.encode()).hexdigest()[:10]
    head = cleaned[: 63 - len(digest) - 1].rstrip("-_.")
    return f"{head}-{digest}" if head else digest


# ---- the restricted Pod Security Standard -----------------------------------------------------

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted, which
# includes baseline), as of Kubernetes 1.33.
ALLOWED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
_SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})
_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
# Keys of a volume entry that are not its type.
_VOLUME_META = frozenset({"name"})


def restricted_violations(
    pod_manifest: Mapping[str, Any], *, read_only_root_filesystem: bool = True
) -> list[str]:
    """What in a serialized pod (camelCase manifest) breaks the restricted Pod Security Standard.

    Returns human-readable violations; an empty list means compliant. With
    `read_only_root_filesystem` (Flywheel's rule, not the standard's) every container must
    also set `securityContext.readOnlyRootFilesystem: true`.
    """
    out: list[str] = []
    metadata = _mapping(pod_manifest.get("metadata"))
    spec = _mapping(pod_manifest.get("spec"))
    if not spec:
        return ["spec: missing; not a pod manifest"]
    pod_sc = _mapping(spec.get("securityContext"))

    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            out.append(f"spec.{key} is true: host namespaces are forbidden")
    if _mapping(pod_sc.get("windowsOptions")).get("hostProcess") is True:
        out.append("spec.securityContext.windowsOptions.hostProcess is true")

    # Pod-level settings that containers inherit.
    pod_non_root = pod_sc.get("runAsNonRoot")
    pod_seccomp = _mapping(pod_sc.get("seccompProfile")).get("type")
    if pod_non_root is False:
        out.append("spec.securityContext.runAsNonRoot is false")
    if pod_sc.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser is 0 (root)")
    if pod_seccomp is not None and pod_seccomp not in _SECCOMP_OK:
        out.append(
            f"spec.securityContext.seccompProfile.type is {pod_seccomp!r}, "
            "not RuntimeDefault or Localhost"
        )
    out += _selinux("spec.securityContext", pod_sc)
    out += _apparmor("spec.securityContext", pod_sc)
    for sysctl in pod_sc.get("sysctls") or []:
        name = _mapping(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            out.append(f"spec.securityContext.sysctls: {name!r} is not a safe sysctl")

    for index, volume in enumerate(spec.get("volumes") or []):
        volume = _mapping(volume)
        kinds = sorted(k for k, v in volume.items() if k not in _VOLUME_META and v is not None)
        label = f"spec.volumes[{index}] {volume.get('name')!r}"
        if "hostPath" in kinds:
            out.append(f"{label}: hostPath volumes are forbidden")
        for kind in kinds:
            if kind not in ALLOWED_VOLUME_TYPES and kind != "hostPath":
                out.append(f"{label}: volume type {kind!r} is not allowed")

    for annotation, value in _mapping(metadata.get("annotations")).items():
        if str(annotation).startswith(_APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or str(value).startswith("localhost/")
        ):
            out.append(f"metadata.annotations[{annotation!r}] is {value!r}: AppArmor unconfined")

    for group in ("initContainers", "containers", "ephemeralContainers"):
        for index, container in enumerate(spec.get(group) or []):
            container = _mapping(container)
            where = f"spec.{group}[{index}] {container.get('name')!r}"
            sc = _mapping(container.get("securityContext"))
            if sc.get("privileged") is True:
                out.append(f"{where}: securityContext.privileged is true")
            if _mapping(sc.get("windowsOptions")).get("hostProcess") is True:
                out.append(f"{where}: securityContext.windowsOptions.hostProcess is true")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
            non_root = sc.get("runAsNonRoot", pod_non_root)
            if non_root is not True:
                out.append(
                    f"{where}: runAsNonRoot must be true (in the container's or the pod's "
                    "securityContext)"
                )
            if sc.get("runAsUser") == 0:
                out.append(f"{where}: securityContext.runAsUser is 0 (root)")
            seccomp = _mapping(sc.get("seccompProfile")).get("type", pod_seccomp)
            if seccomp not in _SECCOMP_OK:
                out.append(
                    f"{where}: seccompProfile.type must be RuntimeDefault or Localhost "
                    f"(in the container's or the pod's securityContext), found {seccomp!r}"
                )
            caps = _mapping(sc.get("capabilities"))
            if "ALL" not in (caps.get("drop") or []):
                out.append(f"{where}: securityContext.capabilities.drop must include 'ALL'")
            added = sorted(set(caps.get("add") or []) - ALLOWED_ADDED_CAPABILITIES)
            if added:
                out.append(
                    f"{where}: securityContext.capabilities.add {added}: only "
                    "NET_BIND_SERVICE may be added"
                )
            if sc.get("procMount") not in (None, "Default"):
                out.append(f"{where}: securityContext.procMount is {sc.get('procMount')!r}")
            out += _selinux(f"{where}: securityContext", sc)
            out += _apparmor(f"{where}: securityContext", sc)
            for port in container.get("ports") or []:
                if _mapping(port).get("hostPort"):
                    out.append(f"{where}: hostPort {_mapping(port)['hostPort']} is forbidden")
            if read_only_root_filesystem and sc.get("readOnlyRootFilesystem") is not True:
                out.append(
                    f"{where}: securityContext.readOnlyRootFilesystem must be true "
                    "(Flywheel's rule)"
                )
    return out


def _selinux(where: str, sc: Mapping[str, Any]) -> list[str]:
    options = _mapping(sc.get("seLinuxOptions"))
    out = []
    if options.get("type", "") not in _SELINUX_TYPES:
        out.append(f"{where}.seLinuxOptions.type {options.get('type')!r} is not allowed")
    for key in ("user", "role"):
        if options.get(key):
            out.append(f"{where}.seLinuxOptions.{key} must not be set")
    return out


def _apparmor(where: str, sc: Mapping[str, Any]) -> list[str]:
    kind = _mapping(sc.get("appArmorProfile")).get("type")
    if kind == "Unconfined":
        return [f"{where}.appArmorProfile.type is Unconfined"]
    return []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# ---- parsing and validation -------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUANTITY = re.compile(
    r"^(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024**p) for p, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity ("500m", "16Gi", "1e3") as a number; ValueError if not one."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
    suffix = match["suffix"] or ""
    number = Decimal(match["num"])
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _validate(s: PodSettings) -> None:
    def fail(name: str, message: str) -> NoReturn:
        raise PodSettingsError(f"{ENV_PREFIX}{name}: {message}")

    if s.namespace is not None and not _DNS_LABEL.match(s.namespace):
        fail("NAMESPACE", f"{s.namespace!r} is not a valid namespace (a DNS-1123 label)")
    if not s.image or any(c.isspace() for c in s.image):
        fail("IMAGE", f"{s.image!r} is not an image reference")
    if s.image_pull_policy not in _PULL_POLICIES:
        fail("IMAGE_PULL_POLICY", f"{s.image_pull_policy!r} is not one of {_PULL_POLICIES}")
    for name, value in (
        ("SERVICE_ACCOUNT", s.service_account),
        ("PVC", s.pvc),
        ("IMAGE_PULL_SECRET", s.image_pull_secret),
        ("SECRET", s.secret),
    ):
        if value is not None and not _DNS_SUBDOMAIN.match(value):
            fail(name, f"{value!r} is not a valid object name (a DNS-1123 subdomain)")
    home = PurePosixPath(s.home)
    if not home.is_absolute() or str(home) in ("/", CONTAINER_TMP, CONTAINER_SHM):
        raise PodSettingsError(
            f"FLYWHEEL_HOME: {s.home!r} must be an absolute path other than /, /tmp and "
            "/dev/shm to be mounted in the training pod"
        )
    for key, value in s.node_selector.items():
        if not isinstance(key, str) or not isinstance(value, str):
            fail("NODE_SELECTOR", f"keys and values must be strings: {key!r}: {value!r}")
    quantities: dict[str, Decimal] = {}
    for name, attr in (
        ("CPU_REQUEST", "cpu_request"),
        ("CPU_LIMIT", "cpu_limit"),
        ("MEMORY_REQUEST", "memory_request"),
        ("MEMORY_LIMIT", "memory_limit"),
        ("TMP_SIZE", "tmp_size"),
        ("SHM_SIZE", "shm_size"),
    ):
        try:
            quantities[attr] = parse_quantity(getattr(s, attr))
        except (ValueError, InvalidOperation) as exc:
            fail(name, str(exc))
        if quantities[attr] <= 0:
            fail(name, f"{getattr(s, attr)!r} must be positive")
    for kind in ("cpu", "memory"):
        if quantities[f"{kind}_request"] > quantities[f"{kind}_limit"]:
            fail(
                f"{kind.upper()}_REQUEST",
                f"{getattr(s, kind + '_request')!r} exceeds the limit "
                f"{getattr(s, kind + '_limit')!r} ({ENV_PREFIX}{kind.upper()}_LIMIT)",
            )
    if quantities["shm_size"] >= quantities["memory_limit"]:
        fail("SHM_SIZE", f"{s.shm_size!r} must be below the memory limit {s.memory_limit!r}")
    for name, number in (
        ("STARTUP_TIMEOUT_SECONDS", s.startup_timeout_seconds),
        ("SCHEDULE_TIMEOUT_SECONDS", s.schedule_timeout_seconds),
        ("ACTIVE_DEADLINE_SECONDS", s.active_deadline_seconds),
    ):
        if number is not None and number <= 0:
            fail(name, f"must be a positive number of seconds, not {number}")
    if s.mlflow_tracking_uri and _is_loopback(s.mlflow_tracking_uri):
        fail(
            "MLFLOW_TRACKING_URI",
            f"{s.mlflow_tracking_uri!r} is loopback: the pod cannot reach the worker's "
            "127.0.0.1; give the tracking server's in-cluster address",
        )
    if s.in_cluster and s.config_file:
        fail("CONFIG_FILE", f"set together with {ENV_PREFIX}IN_CLUSTER=true; choose one")


def _int(get: Callable[[str], str | None], name: str) -> int | None:
    raw = get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise PodSettingsError(
            f"{ENV_PREFIX}{name}: {raw!r} is not a whole number of seconds"
        ) from None


def _bool(get: Callable[[str], str | None], name: str) -> bool | None:
    raw = get(name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise PodSettingsError(f"{ENV_PREFIX}{name}: {raw!r} is not true or false")


def _node_selector(raw: str) -> dict[str, str]:
    name = ENV_PREFIX + "NODE_SELECTOR"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PodSettingsError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PodSettingsError(f"{name}: must be a JSON object of label: value, got {raw!r}")
    for key, item in value.items():
        if not isinstance(item, str) or not _valid_label_key(key):
            raise PodSettingsError(
                f"{name}: {key!r}: {item!r} is not a label key with a string value"
            )
        if item and not _LABEL_NAME.match(item):
            raise PodSettingsError(f"{name}: {item!r} is not a valid label value")
    return value


def _tolerations(raw: str) -> tuple[Toleration, ...]:
    name = ENV_PREFIX + "TOLERATIONS"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PodSettingsError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(value, list):
        raise PodSettingsError(f"{name}: must be a JSON list of tolerations, got {raw!r}")
    out = []
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise PodSettingsError(f"{where}: must be an object, got {item!r}")
        unknown = sorted(set(item) - _TOLERATION_KEYS)
        if unknown:
            raise PodSettingsError(
                f"{where}: unknown field(s) {unknown}; allowed: {sorted(_TOLERATION_KEYS)}"
            )
        operator = item.get("operator", "Equal")
        key, tvalue, effect = item.get("key"), item.get("value"), item.get("effect")
        seconds = item.get("tolerationSeconds")
        if operator not in ("Exists", "Equal"):
            raise PodSettingsError(f"{where}: operator {operator!r} is not Exists or Equal")
        if any(v is not None and not isinstance(v, str) for v in (key, tvalue, effect)):
            raise PodSettingsError(f"{where}: key, value and effect must be strings")
        if operator == "Exists" and tvalue:
            raise PodSettingsError(f"{where}: operator Exists takes no value")
        if key is None and operator != "Exists":
            raise PodSettingsError(f"{where}: an empty key needs operator Exists")
        if effect not in (None, "", *_TOLERATION_EFFECTS):
            raise PodSettingsError(
                f"{where}: effect {effect!r} is not one of {_TOLERATION_EFFECTS}"
            )
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int) or effect != "NoExecute"
        ):
            raise PodSettingsError(
                f"{where}: tolerationSeconds must be a whole number, with effect NoExecute"
            )
        out.append(
            Toleration(
                key=key,
                operator=operator,
                value=tvalue,
                effect=effect or None,
                toleration_seconds=seconds,
            )
        )
    return tuple(out)


def _valid_label_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and not _DNS_SUBDOMAIN.match(prefix):
        return False
    return bool(_LABEL_NAME.match(name))


def _mlflow_uri(explicit: str | None, env: Mapping[str, str]) -> str | None:
    if explicit:
        return explicit  # validated (not loopback) in PodSettings
    inherited = env.get("MLFLOW_TRACKING_URI", "").strip()
    return inherited if inherited and not _is_loopback(inherited) else None


def _is_loopback(uri: str) -> bool:
    host = urlsplit(uri).hostname
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _check_on_volume(path: str, home: str) -> None:
    """A concrete path must lie under FLYWHEEL_HOME, the only worker folder the pod sees."""
    if _is_template(path):
        return
    target = PurePosixPath(path)
    if not target.is_absolute():
        raise PodSettingsError(f"{path!r} must be an absolute path on the shared volume")
    try:
        target.relative_to(PurePosixPath(home))
    except ValueError:
        raise PodSettingsError(
            f"{path!r} is outside FLYWHEEL_HOME ({home}), the folder the pod mounts from "
            f"{ENV_PREFIX}PVC: the pod could not read it"
        ) from None
