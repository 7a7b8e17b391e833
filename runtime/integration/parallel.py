"""MLServer's parallel workers: drop answers nobody waits for; the model a ParallelModel stands for.

A worker's answer to a request whose caller already left (a gRPC deadline or cancel) finds no
future in `AsyncResponses._futures`, and the KeyError crashes MLServer's response loop
("Response processing loop crashed"). `ParallelModel._model`, the model the server process's
stand-in dispatches to, tells batching and tracing whether a model is this runtime's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.integration.patching import PatchPoint, read_point

FUTURES = read_point(
    "mlserver.parallel.dispatcher:AsyncResponses._futures",
    "the calls still waiting for a worker's answer, by id",
    "SeldonIO/MLServer#1312 (open)",
    "as AsyncResponses.resolve",
    kind=dict,
)
MODEL = read_point(
    "mlserver.parallel.model:ParallelModel._model",
    "the model a ParallelModel dispatches to its workers, whose class tells batching and tracing it is this runtime's",
    "none: no public handle on it",
    "as ParallelModel.load and ParallelModel.predict",
)


def _drop_orphans(original: Callable[..., Any]) -> Callable[..., Any]:
    def resolve(self, response):
        if response.id not in FUTURES.read(self):
            return None
        return original(self, response)

    return resolve


PATCHES = [
    PatchPoint(
        target="mlserver.parallel.dispatcher:AsyncResponses.resolve",
        why="drop a worker's answer to a request whose caller already left",
        upstream="SeldonIO/MLServer#1312 (open)",
        if_removed="with parallel workers, gRPC deadlines/cancels crash the response loop "
        "(KeyError, 'Response processing loop crashed')",
        params=("self", "response"),
        apply=_drop_orphans,
    ),
    FUTURES,
    MODEL,
]
