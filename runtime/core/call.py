"""One inference request and its answer as the runtime sees them: plain data, no MLServer.

MLServer's path converts its pydantic types to a Call and an Answer back (runtime.integration.v2);
the fast paths (runtime.integration.fast_path, fast_path_grpc) build the Call straight from the wire
and write the Answer straight to it. An Answer's headers are the runtime's own response headers,
set where the service builds the answer (runtime.service.service); every transport writes them
as they are (REST: HTTP headers, gRPC: trailing metadata), before MLServer's own (CloudEvents).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from opentelemetry.context import Context

from runtime.core.contract import Tensor
from runtime.core.response import EncodedOutput


class Call(NamedTuple):
    id: str  # the client's, else one generated for it (MLServer's DataPlane does so)
    inputs: list[Tensor]
    outputs: list[str]  # the output names asked for; empty: the model's default
    ood_flags: Any  # the request parameters the runtime reads, as sent (None when absent)
    feature_sources: Any
    headers: dict[str, str] | None  # transport headers, with the arrival time and deadline stamped
    parent: Context | None = None  # the request span's context when it is not the current one


class Answer(NamedTuple):
    model_name: str
    model_version: str
    outputs: list[EncodedOutput]
    parameters: dict[str, str]  # response parameters, in order; each a string
    headers: tuple[tuple[str, str], ...] = ()  # response headers (name, value), in order

    def served_by(self, model: str, reason: str) -> Answer:
        """A fallback's answer: which model served it, and why the requested one did not."""
        return self._replace(parameters={**self.parameters, "served_by": model, "fallback_reason": reason})
