# Two commands do all set-up: `make serve` and `make test`.
# The virtual environment is built from the pinned, hashed lock the first time either runs.
# Two locks, one set of versions: requirements.lock is the runtime set (the image installs only it),
# requirements-dev.lock is the runtime set plus [dev] (tests, clients, benchmarks; .venv installs it).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-from-lock

# MLServer's settings.json would override environment variables, so the ports live here
# (and in the Dockerfile / kserve manifests) rather than in settings.json.
export MLSERVER_HOST ?= 127.0.0.1
export MLSERVER_HTTP_PORT ?= 8080
export MLSERVER_GRPC_PORT ?= 8081
export MLSERVER_METRICS_PORT ?= 8082
# The model POST /predict answers (POST /predict/{model} names any other).
export PIPELINE_DEFAULT_MODEL ?= diabetes

.PHONY: venv serve serve-features test lint test-unit test-pins test-packaging test-newcomer test-integration test-features test-rehearsal test-deploy test-reliability test-security test-fuzz train bench lock sbom clean

venv: $(STAMP)

# The same install script the Dockerfile runs (there with requirements.lock, the runtime set alone).
$(STAMP): requirements-dev.lock deploy/install-venv.sh
	PYTHON=$(PYTHON) sh deploy/install-venv.sh $(VENV) requirements-dev.lock
	touch $@

serve: venv
	$(VENV)/bin/mlserver start .

# The same, plus diabetes-by-id looking its features up in a local throw-away PostgreSQL.
serve-features: venv
	$(PY) -m harness.postgres --ensure-installed
	$(PY) -m harness.feature_demo

# The runtime (which imports mlserver) and the V2 clients of kserve/tritonclient register the
# same protobuf symbols, so the two kinds of tests run in separate pytest processes.
test: lint test-unit test-pins test-packaging test-newcomer test-integration test-features test-deploy test-rehearsal test-reliability test-security test-fuzz

# ruff (lint and format) and mypy (strict on the serving core and the service), configured in pyproject.toml.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-unit: venv
	$(PY) -m pytest -q tests/unit

# Every MLServer patch point of runtime/integration, checked by its behaviour through real servers.
test-pins: venv
	$(PY) -m pytest -q tests/pins

# Your own pipelines: every scaler and model family packaged, served and compared with scikit-learn.
test-packaging: venv
	$(PY) -m pytest -q tests/packaging

# A newcomer's first hour on a fresh copy of the repository: the README's commands as written (its
# curl lines parsed out of it), a model packaged without --reference, `make serve` and Ctrl-C, and
# `make serve-features` (PostgreSQL, installed first as for test-features: not within a server's start-up).
test-newcomer: venv
	$(PY) -m harness.postgres --ensure-installed
	$(PY) -m pytest -q tests/newcomer

test-integration: venv
	$(PY) -m pytest -q tests/integration

# Lookups by entity id against a real PostgreSQL (installed from the distribution's packages when
# missing; the tests start a throw-away cluster on loopback as an unprivileged user and stop it).
test-features: venv
	$(PY) -m harness.postgres --ensure-installed
	$(PY) -m pytest -q tests/features

# SIGTERM drain, reload under load, overload, deadlines, auth, artifact refusals: real servers.
test-reliability: venv
	$(PY) -m pytest -q tests/reliability

# Hostile requests against real servers: compressed bombs, odd framings, path tricks under a root
# path, deep JSON, huge and slow request heads, bad Host headers; memory and latency under attack.
test-security: venv
	$(PY) -m pytest -q tests/security

# Property-based fuzzing of V2 requests over both protocols (2,000 examples each) and a short soak.
# The long runs are bench commands: python -m bench.fuzz --examples 10000, python -m bench.soak --seconds 60.
test-fuzz: venv
	$(PY) -m pytest -q tests/fuzz

# A canary rehearsal: stable and canary servers behind a real nginx, scraped by a real Prometheus
# (both from the distribution's packages, installed when missing); rollout analyze/auto decide.
test-rehearsal: venv
	$(PY) -m pytest -q tests/rehearsal

# Dockerfile lint, kustomize + CRD validation, rollout patches, and the image's commands run here.
# kubectl renders the kustomize overlays; the script installs a pinned one when PATH has none.
test-deploy: venv
	sh deploy/ensure-kubectl.sh $(VENV)
	$(PY) -m pytest -q tests/deploy

train: venv
	$(PY) -m pipeline_tools.train

# The linear model (the folded fast path, with a shadowed twin beside it), a random forest, the mixed
# `columns` model, then 10,000-row requests (binary and JSON) at concurrency 2, then the growth axes
# (rows per request, trees and features, models per server, cold start, overload: ~20 min; while
# developing, `python -m bench.growth --quick` (~6 min) or `--axes rows,cold`).
# `make bench BASELINE=<git rev>` also runs this runtime as it was at that revision, in the same runs.
BASELINE ?=
BENCH_BASELINE = $(if $(BASELINE),--baseline $(BASELINE))
bench: venv
	$(PY) -m bench.run --shadow 1 --lookup --rounds 5 $(BENCH_BASELINE)
	$(PY) -m bench.run --model forest $(BENCH_BASELINE)
	$(PY) -m bench.run --model columns $(BENCH_BASELINE)
	$(PY) -m bench.large_batch
	$(PY) -m bench.growth

# Regenerate both locks after editing pyproject.toml, with `uv pip compile` (uv is in the dev set): it
# applies pyproject.toml's [tool.uv] override-dependencies, which lift MLServer 1.7.1's declared
# fastapi<0.116 cap for the starlette advisories named there (pip-compile has no override and refuses the
# conflict; the install script installs the lock with --no-deps, so nothing re-resolves the cap). The
# runtime lock first; then the dev lock with the runtime lock as a constraint, so a package in both has
# one version and the same hashes (tests/deploy/test_dockerfile.py checks). Existing pins are kept:
# `make lock LOCK_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them. No index URLs or
# find-links in the locks: they name this machine's configuration, not the image build's.
LOCK_ARGS ?= $(PIP_COMPILE_ARGS)
LOCK_COMPILE = $(VENV)/bin/uv pip compile --python $(PY) --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -q $(LOCK_ARGS)
lock: venv
	$(LOCK_COMPILE) --output-file=requirements.lock pyproject.toml
	$(LOCK_COMPILE) --extra=dev --constraint=requirements.lock --output-file=requirements-dev.lock pyproject.toml

# A CycloneDX SBOM (JSON) of the runtime set, the packages the image installs: requirements.lock's pins
# and hashes as a flat component list, read from the file (no network, nothing installed; so no
# dependency graph, which cyclonedx-py would otherwise warn about). Hand it to the image scanner.
SBOM ?= sbom.cdx.json
sbom: venv
	$(PY) -W "ignore:The Component this BOM is describing:UserWarning" -m cyclonedx_py requirements \
		--pyproject pyproject.toml --output-format JSON --output-reproducible --output-file $(SBOM) requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
