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
from pathlib import Path

from runtime.model import PipelineRuntime


class _Faulty:
    def __init__(self, inner, fault):  # type: ignore[no-untyped-def]
        self.inner, self.kind, self.fault = inner, inner.kind, fault

    def predict(self, features, names):  # type: ignore[no-untyped-def]
        self.fault()
        return self.inner.predict(features, names)


def _fail_while_flagged() -> None:
    if Path(os.environ["FAILING_RUNTIME_FLAG"]).exists():
        raise ZeroDivisionError("injected fault")


def _sleep() -> None:
    time.sleep(float(os.environ["SLEEPING_RUNTIME_MS"]) / 1000.0)


class FailingRuntime(PipelineRuntime):
    async def load(self) -> bool:
        ready = await super().load()
        self._predictor = _Faulty(self._predictor, _fail_while_flagged)
        return ready


class SleepingRuntime(PipelineRuntime):
    async def load(self) -> bool:
        ready = await super().load()
        self._predictor = _Faulty(self._predictor, _sleep)
        return ready
