"""MLServer's `DataPlane.infer` for a model of this runtime served in this process, with the
runtime's Call and Answer in place of MLServer's pydantic request and response.

What the DataPlane does around a model's predict is done here in the same order, with the same
objects: admission and the in-flight count (runtime.integration.dataplane.admitted), the model's
readiness (ModelNotReady), its context, MLServer's model metrics (`model_infer_request_success`,
`_failure` and `_duration`, the DataPlane's own metric objects) and the response headers of its
inference middleware (CloudEvents). Its request middleware only adds CloudEvents headers to the
request's own, which nothing reads after admission. A model behind MLServer's adaptive batcher or
in a parallel worker, or any model while MLServer's response cache is on, is not served here: the
fast paths hand those to the DataPlane itself.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from mlserver.context import model_context
from mlserver.errors import ModelNotReady
from mlserver.types import InferenceResponse
from mlserver.utils import extract_headers

from runtime.core.call import Answer, Call
from runtime.core.errors import PipelineError
from runtime.integration.dataplane import INFERENCE_MIDDLEWARE, MODEL_METRICS, MODEL_REGISTRY, RESPONSE_CACHE, admitted
from runtime.integration.v2 import as_mlserver_error
from runtime.service.service import ModelService

# The stand-in request id of a model's response header template (no real value holds a NUL).
STAND_IN_ID = "\x00request-id"

# How a protocol writes a header pair: gRPC metadata (lower-case str) or ASGI (lower-case bytes).
Form = Callable[[str, str], tuple[Any, Any]]


class HeaderTemplate(NamedTuple):
    """A model's response headers in one form, `stand_in` where the request id goes."""

    pairs: tuple[tuple[Any, Any], ...]
    stand_in: Any

    def filled(self, request_id: Any) -> tuple[tuple[Any, Any], ...]:
        """The pairs with `request_id` in its places (left out when it is empty, as MLServer does)."""
        if not request_id:
            return tuple(pair for pair in self.pairs if pair[1] != self.stand_in)
        return tuple((k, request_id) if v == self.stand_in else (k, v) for k, v in self.pairs)


class _ModelMetrics(NamedTuple):
    success: Any
    failure: Any
    duration: Any


def new_id(requested: str | None) -> str:
    """The request's id: the client's, else a new one (DataPlane._prepare_payload)."""
    return requested if requested is not None else random_uuid4()


def random_uuid4() -> str:
    """What MLServer's generate_uuid returns (str(uuid.uuid4()): 16 random bytes, version 4, the
    RFC 4122 variant, in its text form), made in a fifth of its time."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class DirectInference:
    def __init__(self, data_plane: Any):
        self._data_plane = data_plane
        self._metrics: dict[tuple[str, str | None], _ModelMetrics] = {}
        self._headers: weakref.WeakKeyDictionary[Any, dict[Form, HeaderTemplate]] = weakref.WeakKeyDictionary()

    def serves(self, model: Any) -> bool:
        """A model of this runtime, fast path on, its own predict in this process."""
        return (
            getattr(model, "fast_path", False)
            and isinstance(getattr(model, "service", None), ModelService)
            and "predict" not in vars(model)  # MLServer's adaptive batcher replaces it there
            and RESPONSE_CACHE.read(self._data_plane) is None
        )

    async def infer(self, model: Any, name: str, version: str | None, call: Call) -> Answer:
        """`call` admitted and answered (an MLServerError with its status if not)."""
        return await admitted(model, name, call.headers or {}, lambda: self._infer(name, version, call))

    async def _infer(self, name: str, version: str | None, call: Call) -> Answer:
        metrics = self._model_metrics(name, version)
        started = time.perf_counter()
        try:
            # Looked up again, as the DataPlane does here: the object the fast path found before it
            # read the body may have been unloaded by a reload since (its `ready` false: a 400).
            model = await MODEL_REGISTRY.read(self._data_plane).get_model(name, version)
            if not model.ready:
                raise ModelNotReady(name, version)
            with model_context(model.settings):
                try:
                    answer = await model.service.answer(call)
                except PipelineError as error:
                    raise as_mlserver_error(error) from None
            metrics.success.inc()
            return answer
        except Exception:
            metrics.failure.inc()
            raise
        finally:
            metrics.duration.observe(time.perf_counter() - started)

    def response_headers(self, model: Any, answer: Answer, request_id: Any, form: Form) -> tuple[tuple[Any, Any], ...]:
        """The answer's own headers, then those MLServer's inference middleware gives the response
        (CloudEvents: the server's and the model's names, and the request id when it is not
        empty), as `form` writes them and in MLServer's order; `request_id` already in that form."""
        by_form = self._headers.get(model)
        if by_form is None:
            by_form = self._headers[model] = {}
        template = by_form.get(form)
        if template is None:
            # Made once per model object and form by the middleware itself (a costly call per request:
            # docs/performance.md, "The fast path"), with a stand-in id (an id that reached here passed
            # the contract: printable ASCII, never it).
            made = self._middleware_headers(model, STAND_IN_ID)
            pairs = tuple(form(k, v) for k, v in made.items())
            template = by_form[form] = HeaderTemplate(pairs, form("", STAND_IN_ID)[1])
        if answer.headers:
            return (*(form(k, v) for k, v in answer.headers), *template.filled(request_id))
        return template.filled(request_id)

    def _middleware_headers(self, model: Any, request_id: str) -> dict[str, str]:
        carrier = InferenceResponse.model_construct(id=request_id, parameters=None)
        INFERENCE_MIDDLEWARE.read(self._data_plane).response_middleware(carrier, model.settings)
        return extract_headers(carrier) or {}

    def _model_metrics(self, name: str, version: str | None) -> _ModelMetrics:
        metrics = self._metrics.get((name, version))
        if metrics is None:
            metrics = self._metrics[(name, version)] = _ModelMetrics(
                *(m.read(self._data_plane).labels(model=name, version=version) for m in MODEL_METRICS)
            )
        return metrics
