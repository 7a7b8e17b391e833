#!/bin/sh
# Container entrypoint: serve the model repository at MLSERVER_MODELS_DIR.
# KServe's storage initializer downloads storageUri into /mnt/models (the default); set
# MLSERVER_MODELS_DIR=/opt/mlserver to serve every model baked into the image instead.
set -eu
models_dir="${MLSERVER_MODELS_DIR:-/mnt/models}"
if [ ! -d "$models_dir" ]; then
    echo "docker-entrypoint: MLSERVER_MODELS_DIR=$models_dir is not a directory." >&2
    echo "Mount a model there (KServe does) or set MLSERVER_MODELS_DIR=/opt/mlserver for the baked-in models." >&2
    exit 66
fi
# exec makes MLServer PID 1, so it receives SIGTERM itself and drains its servers before exiting.
exec mlserver start "$models_dir"
