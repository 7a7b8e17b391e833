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
# MLServer 1.7.1 reads starlette.status.HTTP_422_UNPROCESSABLE_ENTITY when it is imported, which starlette
# 1.x deprecates with a warning printed to stderr before any logging is configured: the one line of a
# server's output that would not be JSON. This filter, run at interpreter start (a .pth line), drops
# starlette's deprecated-status-name warnings raised from MLServer's modules, and nothing else.
site_packages="$("$venv_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat >"$site_packages/pipeline_runtime_warnings.pth" <<'PTH'
import warnings; warnings.filterwarnings("ignore", message=r"'HTTP_\d{3}_\w+' is deprecated", category=UserWarning, module=r"mlserver\.")
PTH
