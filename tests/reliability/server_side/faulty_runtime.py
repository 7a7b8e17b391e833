"""Server-side test doubles: the real runtime with a faulty compiled predictor.

- FailingRuntime fails with an internal error while the file named by FAILING_RUNTIME_FLAG exists
  (the suite creates and removes it to break and heal the model).
- SleepingRuntime sleeps SLEEPING_RUNTIME_MS in every prediction, standing for a slow model where
  only its predictor is called (a shadow).

The contract still runs first, so a client's mistake still gets its 400. Imported only by the
`mlserver start .` subprocesses the suite starts (PYTHONPATH).
"""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from runtime.core.predictor import Predictor
from runtime.model import PipelineRuntime
from runtime.service.service import ModelService


class _Faulty:
    def __init__(self, inner: Predictor, fault: Callable[[], None]) -> None:
        self.inner, self.kind, self.fault = inner, inner.kind, fault

    def predict(self, features: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.fault()
        return self.inner.predict(features, names)


def _fail_while_flagged() -> None:
    if Path(os.environ["FAILING_RUNTIME_FLAG"]).exists():
        raise ZeroDivisionError("injected fault")


def _sleep() -> None:
    time.sleep(float(os.environ["SLEEPING_RUNTIME_MS"]) / 1000.0)


def _faulty(fault: Callable[[], None]) -> type[ModelService]:
    """The service, its compiled predictor made faulty once it loaded."""

    class FaultyService(ModelService):
        @classmethod
        async def load(cls, *args: Any, **kwargs: Any) -> ModelService:
            service = await super().load(*args, **kwargs)
            service._predictor = cast(Predictor, _Faulty(service._predictor, fault))
            return service

    return FaultyService


class FailingRuntime(PipelineRuntime):
    service_type = _faulty(_fail_while_flagged)


class SleepingRuntime(PipelineRuntime):
    service_type = _faulty(_sleep)
