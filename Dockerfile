# syntax=docker/dockerfile:1
#
# memory-hygiene operator image.
#
#   docker buildx build -t ghcr.io/memory-hygiene/memory-hygiene:0.1.0 .
#
# Two stages: the builder turns the source into wheels (ours and every dependency's); the final
# stage installs those wheels offline and nothing else: no compiler, no source tree, no pip.
# The final image runs as a fixed non-root UID/GID (65532) and writes nothing at run time, so it
# works with `readOnlyRootFilesystem: true` (manifests/base/deployment/deployment.yaml,
# docs/install.md).
#
# Both stages use the same base image, BASE_IMAGE, pinned by tag; the default is the production
# base. Pin it by digest too (python:3.12-slim-trixie@sha256:...) in the registry you release
# from, and let a bot (Dependabot, Renovate) bump it. Where no registry is reachable (the e2e
# suite's real node), devcluster/image.py builds a stand-in base locally, under a name of
# its own, and passes it with --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=python:3.12-slim-trixie

# checkov reads FROM ${BASE_IMAGE} as an untagged image; the default above is pinned by tag
# (tests/unit/test_packaging.py checks it).
# checkov:skip=CKV_DOCKER_7:the base is a build argument whose default is pinned by tag

# --- builder: wheels for the package and its dependencies ---------------------------------------
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY operator/ ./operator/

# `pip wheel .` builds memory-hygiene's wheel (setuptools in an isolated build environment) and
# fetches a wheel for every dependency, at the versions pyproject.toml allows.
RUN pip wheel --wheel-dir /wheels . \
    && ls /wheels/memory_hygiene-*.whl

# --- final image --------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG SOURCE=https://github.com/memory-hygiene/memory-hygiene
LABEL org.opencontainers.image.title="memory-hygiene" \
      org.opencontainers.image.description="A Kubernetes operator that keeps cluster memory honest: overcommitted nodes, silent OOM kills, missing requests." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONDONTWRITEBYTECODE: never write __pycache__ at run time (the root filesystem is read-only;
# the wheels' .pyc files are compiled at install time below). HOME points at a directory that
# does not exist: nothing may write there, and in-cluster nothing reads ~/.kube either.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HOME=/nonexistent

# A passwd entry for the fixed UID: kopf names its peering identity from getpass.getuser()
# unless POD_ID is set, and getpass fails for a UID that /etc/passwd does not know.
RUN groupadd --system --gid 65532 memory-hygiene \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin memory-hygiene

# Install from the builder's wheels only (--no-index: nothing is resolved from the network here),
# then remove pip itself: the image runs one program and never installs anything again. The build
# fails if VERSION (the version label) is not the version of the package inside.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/memory_hygiene-*.whl \
    && pip uninstall --yes pip \
    && test "$(memory-hygiene --version)" = "memory-hygiene ${VERSION}"

USER 65532:65532
WORKDIR /

# /metrics (Prometheus), /healthz (liveness), /readyz (readiness): `--http-port`, default 8080.
EXPOSE 8080

# For `docker run`; Kubernetes ignores HEALTHCHECK and uses the Deployment's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["memory-hygiene", "run"]
