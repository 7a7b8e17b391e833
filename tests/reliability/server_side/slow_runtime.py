"""Server-side test double of the reliability suite: the real runtime, plus a fixed delay in its
computation standing for CPU-bound work (so that requests are really in flight when the suite
sends SIGTERM, fills the in-flight cap or lets a deadline expire).

Imported only by the `mlserver start .` subprocesses the suite starts (the project on PYTHONPATH,
implementation `tests.reliability.server_side.slow_runtime.SlowRuntime`), never by pytest itself:
the suite's process must not import mlserver (protobuf trap).

`time.sleep` holds the thread like a computation would: with parallel_workers 0 and no offload
it blocks the event loop, with offload the compute thread, with parallel workers the worker.
"""

import os
import time

from runtime.core.call import Answer
from runtime.model import PipelineRuntime
from runtime.service.service import ModelService, Work

DELAY_S = float(os.environ.get("SLOW_RUNTIME_DELAY_MS", "20")) / 1000.0


class SlowService(ModelService):
    def _predict(self, work: Work) -> Answer:
        time.sleep(DELAY_S)
        return super()._predict(work)


class SlowRuntime(PipelineRuntime):
    service_type = SlowService
