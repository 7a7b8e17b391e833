"""Unit tests import the runtime (and so mlserver): never the kserve/tritonclient gRPC clients."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


@pytest.fixture
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session", autouse=True)
def boosting_stage_loop() -> None:
    """scikit-learn's stage loop, as every serving process has it once the integration is installed
    (runtime.integration.boosting): the registry's boosted fast path is tested as it serves."""
    from runtime.integration import boosting

    boosting.install()
