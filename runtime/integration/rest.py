"""REST: stamp each inference request's arrival time and requested deadline into its headers.

MLServer records no arrival time, and `insert_headers` is the one step of its REST endpoints
that sees every inference request with its transport headers before the model is looked up.
"""

from __future__ import annotations

from typing import Any, Callable

from runtime.deadlines import stamp
from runtime.errors import PipelineError
from runtime.integration.patching import PatchPoint
from runtime.integration.v2 import as_mlserver_error


def _stamp_on_insert(original: Callable[[Any, dict[str, str]], Any]) -> Callable[..., Any]:
    def insert_headers(inference_request, headers):  # type: ignore[no-untyped-def]
        try:
            stamp(headers)
        except PipelineError as error:  # a malformed X-Request-Timeout-Ms: the client's 400
            raise as_mlserver_error(error) from None
        return original(inference_request, headers)

    return insert_headers


PATCHES = [
    PatchPoint(
        target="mlserver.rest.endpoints:insert_headers",
        why="stamp the arrival time and the X-Request-Timeout-Ms deadline (a module global, "
        "looked up per request by Endpoints.infer / infer_stream)",
        upstream="none: MLServer has no request hook before the dataplane",
        if_removed="X-Request-Timeout-Ms and request_timeout_ms are ignored over REST (no 504)",
        params=("inference_request", "headers"),
        apply=_stamp_on_insert,
    ),
]
