#!/bin/sh
# Builds a virtual environment from one of the project's pinned, hashed locks: requirements.lock (the
# runtime set: the Dockerfile's build stage, and tests/deploy reproducing it without Docker) or
# requirements-dev.lock (the runtime set plus the development set: `make venv`).
# Usage: install-venv.sh VENV_DIR LOCK_FILE   (PYTHON selects the interpreter, default python3)
set -eu
venv_dir="$1"
lock_file="$2"
"${PYTHON:-python3}" -m venv "$venv_dir"
# The same pip range and install flags as the Makefile's `venv` target.
"$venv_dir/bin/python" -m pip install --quiet --upgrade "pip>=24,<26"
# --no-deps: the lock is the whole set, resolved by `make lock`. It also keeps the lock's fastapi and
# starlette, which pyproject.toml's [tool.uv] overrides move past MLServer 1.7.1's declared fastapi<0.116
# (starlette advisories CVE-2025-54121, CVE-2025-62727, CVE-2026-48710, CVE-2026-48818, CVE-2026-54282,
# CVE-2026-54283): a resolving install would refuse it. `pip check` names that one conflict.
"$venv_dir/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$lock_file"
