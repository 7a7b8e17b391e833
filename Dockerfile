# syntax=docker/dockerfile:1
# Production image of the pipeline-runtime MLServer runtime (docs/deploy.md).
# tests/deploy lints this file with hadolint and reproduces what the image does without Docker.

# Python 3.11 slim (Debian bookworm), pinned by tag and multi-arch index digest. Refresh both together:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# Build stage: the virtual environment from requirements.lock, the runtime set only (no test clients,
# linters or benchmark tools: those are in requirements-dev.lock, at the same versions), with the same
# install script as `make venv`.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock deploy/install-venv.sh /tmp/build/
RUN sh /tmp/build/install-venv.sh /opt/venv /tmp/build/requirements.lock

# Final stage: the interpreter, the venv and the runtime; no pip caches, lock or build tools.
FROM ${PYTHON_IMAGE}
# UID 1000 in group 0, as MLServer's own images: OpenShift's arbitrary UIDs also run in group 0.
RUN useradd --uid 1000 --gid 0 --home-dir /opt/mlserver --no-create-home --shell /usr/sbin/nologin mlserver
COPY --from=build /opt/venv /opt/venv
# MLSERVER_DEBUG and the settings after it mirror settings.json: KServe mounts a model directory without
# a settings.json, so there MLServer takes its settings from the environment only (tests check the
# mirror; relative paths resolve from the WORKDIR). The code and models are read-only for the server
# user, so the Prometheus multiprocess directory (used if parallel workers are switched on) is in /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/mlserver \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLSERVER_MODELS_DIR=/mnt/models \
    MLSERVER_HOST=0.0.0.0 \
    MLSERVER_HTTP_PORT=8080 \
    MLSERVER_GRPC_PORT=8081 \
    MLSERVER_METRICS_PORT=8082 \
    MLSERVER_METRICS_DIR=/tmp/mlserver-metrics \
    MLSERVER_DEBUG=false \
    MLSERVER_PARALLEL_WORKERS=0 \
    MLSERVER_METRICS_ENDPOINT=/metrics \
    MLSERVER_LOGGING_SETTINGS=./runtime/logging.json \
    MLSERVER_MODEL_REPOSITORY_IMPLEMENTATION=runtime.integration.startup.StartupRepository
# Graceful drain on SIGTERM (runtime/policy/drain.py, installed by runtime/integration/lifecycle.py): readiness false at once, serve on for the delay,
# close the listeners, let accepted requests finish within the timeout, exit 1 at the hard exit if
# anything hangs. 5 + 15 < 25 s fits Kubernetes' default 30 s grace period; `docker stop` waits only
# 10 s before SIGKILL, so run with `--stop-timeout 30` (or `docker stop -t 30`).
ENV PIPELINE_DRAIN_DELAY_S=5 \
    PIPELINE_DRAIN_TIMEOUT_S=15 \
    PIPELINE_DRAIN_HARD_EXIT_S=25
WORKDIR /opt/mlserver
# Baked-in models for standalone use: MLSERVER_MODELS_DIR=/opt/mlserver serves exactly what
# `make serve` serves (settings.json and models/: every version, and the stable alias beside diabetes's).
COPY settings.json ./
COPY models/ ./models/
COPY runtime/ ./runtime/
COPY --chmod=0755 deploy/docker-entrypoint.sh deploy/healthcheck.py /usr/local/bin/
USER 1000:0
# REST, gRPC, Prometheus metrics.
EXPOSE 8080 8081 8082
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/healthcheck.py", "ready"]
ENTRYPOINT ["docker-entrypoint.sh"]
