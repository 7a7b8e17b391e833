"""Server-side test double: the real runtime whose predictor fails with an internal error while the
file named by FAILING_RUNTIME_FLAG exists (the suite creates and removes it to break and heal the
model). The contract still runs first, so a client's mistake still gets its 400.

Imported only by the `mlserver start .` subprocesses the suite starts (PYTHONPATH).
"""

import os
from pathlib import Path

from runtime.model import PipelineRuntime


class _Faulty:
    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self.inner, self.kind = inner, inner.kind

    def predict(self, features, names):  # type: ignore[no-untyped-def]
        if Path(os.environ["FAILING_RUNTIME_FLAG"]).exists():
            raise ZeroDivisionError("injected fault")
        return self.inner.predict(features, names)


class FailingRuntime(PipelineRuntime):
    async def load(self) -> bool:
        ready = await super().load()
        self._predictor = _Faulty(self._predictor)
        return ready
