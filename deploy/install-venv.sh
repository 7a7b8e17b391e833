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
"$venv_dir/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$lock_file"
