"""tests/deploy: the Dockerfile, kserve/ manifests and pipeline_tools.rollout.cli, validated offline.

Never import mlserver or runtime.model here: test_image_reproduction runs gRPC clients in-process.
"""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "image_repro: reproduces the Docker image without Docker (builds a venv from the lock; ~1-2 min); "
        "select with -m image_repro, skip with -m 'not image_repro'",
    )
