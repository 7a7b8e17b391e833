"""MLServer's parallel-worker dispatcher: drop answers nobody waits for.

A worker's answer to a request whose caller already left (a gRPC deadline or cancel) finds no
future in `AsyncResponses._futures`, and the KeyError crashes MLServer's response loop
(observed: 189 "Response processing loop crashed" in one run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.integration.patching import PatchPoint


def _drop_orphans(original: Callable[..., Any]) -> Callable[..., Any]:
    def resolve(self, response):  # type: ignore[no-untyped-def]
        if response.id not in self._futures:
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
]
