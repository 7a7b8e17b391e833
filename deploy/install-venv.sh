#!/bin/sh
# Builds the runtime's virtual environment from the project's pinned, hashed lock.
# The Dockerfile's build stage runs this script and tests/deploy runs the very same one, so the test
# reproduces the image's environment without Docker.
# Usage: install-venv.sh VENV_DIR LOCK_FILE   (PYTHON selects the interpreter, default python3)
set -eu
venv_dir="$1"
lock_file="$2"
"${PYTHON:-python3}" -m venv "$venv_dir"
# The same pip range and install flags as the Makefile's `venv` target.
"$venv_dir/bin/python" -m pip install --quiet --upgrade "pip>=24,<26"
"$venv_dir/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$lock_file"
