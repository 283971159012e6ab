# syntax=docker/dockerfile:1
#
# Flywheel training image: runs `python -m flywheel.train --spec <file>` in the Kubernetes pod
# that flywheel.k8s.pod_operator_kwargs() describes (compute=kubernetes). Not built by CI.
#
# Build from the repository root (the context needs pyproject.toml, requirements.txt and
# include/), push, and point Flywheel at it, pinned:
#
#   docker build -f docker/train.Dockerfile \
#     --build-arg FLYWHEEL_CODE_VERSION="$(git rev-parse HEAD)" \
#     -t ghcr.io/<org>/flywheel-train:0.1.0 .
#   docker push ghcr.io/<org>/flywheel-train:0.1.0
#   export FLYWHEEL_K8S_IMAGE=ghcr.io/<org>/flywheel-train:0.1.0   # or ...@sha256:<digest>
#
# Build arguments: TORCH_VERSION (default 2.13.0); TORCH_INDEX_URL (default: PyPI) to pick
# another CUDA build of torch, e.g. one of the download.pytorch.org/whl/cuXXX indexes;
# FLYWHEEL_CODE_VERSION, the commit built from (exported in the image, where
# flywheel.training.code_version() reads it, and set as the OCI revision label).
#
# Keep .venv/, .flywheel/ and .git/ out of the build context (a .dockerignore, or
# docker/train.Dockerfile.dockerignore next to this file): only pyproject.toml,
# requirements.txt and include/ are copied.
#
# Environment the pod sets (baked in here: only HOME, FLYWHEEL_CODE_VERSION, Python flags):
#   FLYWHEEL_HOME        mount of the shared PersistentVolumeClaim (spec, Parquet, result)
#   MLFLOW_TRACKING_URI  the tracking server as seen from the pod (the spec carries it too)
#   FLYWHEEL_FEAST_YAML  optional
#   HOME=/tmp            the pod's root filesystem is read-only; /tmp is an emptyDir
#   plus, optionally, object-store/MLflow credentials from a Secret (FLYWHEEL_K8S_SECRET).
#
# Why python:3.11-slim and not an nvidia/cuda base: the PyPI torch wheel for Linux x86_64 is
# the CUDA build and brings the CUDA runtime, cuBLAS, cuDNN and NCCL as pip packages
# (torch 2.13.0: CUDA 13.0). All that must come from the node is the driver, which the NVIDIA
# container toolkit mounts into the container when the device plugin assigns a GPU. A CUDA
# base image would add a second copy of those libraries (GBs) and a second CUDA version to
# keep in step. CUDA 13 needs driver >= 580 on the GPU nodes (and a GPU of compute capability
# 7.5 or later); for older drivers, build with a CUDA 12 index of download.pytorch.org.
#
# Do NOT set NVIDIA_VISIBLE_DEVICES here: with the nvidia runtime as the node's default, "all"
# would expose every GPU of the node to a pod that was allotted some or none. The device
# plugin sets it per container. The same image runs CPU-only (spec device "cpu"/"auto").
#
# No ENTRYPOINT or CMD: the operator sets the command (python -m flywheel.train --spec ...).
# No HEALTHCHECK: Kubernetes ignores it and a batch job has nothing to probe.

ARG PYTHON_VERSION=3.11

# ---- build: a virtual environment with the training dependencies and the flywheel package
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first and on its own: it is the largest layer and changes least often.
RUN pip install ${TORCH_INDEX_URL:+--index-url $TORCH_INDEX_URL --extra-index-url https://pypi.org/simple} \
        "torch==${TORCH_VERSION}"

# The entrypoint's own dependencies (flywheel.train, .models, .metrics, .runspec, .config),
# at the versions CI tests: requirements.txt serves as a constraints file, so every package
# it pins is installed at that pin and nothing it pins but the training does not need
# (Airflow, Feast, Great Expectations, Evidently) is installed at all. Constraints cannot
# carry extras ("feast[duckdb]==..."): sed drops them.
COPY requirements.txt /tmp/requirements.txt
RUN sed -E 's/\[[^]]*\]//' /tmp/requirements.txt > /tmp/constraints.txt \
    && pip install --constraint /tmp/constraints.txt \
        mlflow \
        scikit-learn \
        pandas \
        pyarrow \
        pyyaml \
        pydantic

# The flywheel package itself, without its declared dependencies (those are the whole
# platform's: Airflow, Feast, ...); the ones training needs are installed above.
COPY pyproject.toml /src/pyproject.toml
COPY include/ /src/include/
RUN pip install --no-deps /src \
    && python -c "import flywheel.train, flywheel.models, flywheel.metrics, torch, mlflow, sklearn, pyarrow"

# ---- runtime: the virtual environment, a non-root user, nothing else
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG FLYWHEEL_CODE_VERSION=

LABEL org.opencontainers.image.title="flywheel-train" \
      org.opencontainers.image.revision="${FLYWHEEL_CODE_VERSION}" \
      org.opencontainers.image.description="Flywheel training entrypoint: python -m flywheel.train --spec <file>" \
      org.opencontainers.image.licenses="Apache-2.0"

# UID/GID 10001 = flywheel.k8s.RUN_AS_USER / RUN_AS_GROUP: the pod's securityContext runs as
# them (runAsNonRoot needs a numeric, non-zero user). No home directory: HOME is /tmp.
RUN groupadd --system --gid 10001 flywheel \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin flywheel

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    FLYWHEEL_CODE_VERSION=${FLYWHEEL_CODE_VERSION} \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# The root filesystem is read-only in the pod; /tmp (an emptyDir there) is the one writable
# place, so anything written relative to the working directory lands there too.
WORKDIR /tmp

USER 10001:10001
