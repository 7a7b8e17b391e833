"""Unit tests import the runtime (and so mlserver): never the kserve/tritonclient gRPC clients."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


@pytest.fixture
def models_dir() -> Path:
    return MODELS
