"""Per-request isolation under MLServer's adaptive batching.

MLServer merges concurrent requests into one before the model sees them, so one bad request
would fail every request batched with it. Each request is therefore checked against the input
contract *before* it joins a batch: a bad one fails alone with its own 400, a good one enters
the batch in one canonical form (a single FP64 [N, F] tensor named `features`; for a model with
string columns one tensor per column), whatever layout the client used, so requests in different
layouts still merge.

MLServer 1.7.1 installs its batcher as an instance attribute `predict` (mlserver/batching/
hooks.py `load_batching`, the batcher itself under the name in its private `_AdaptiveBatchingAttr`)
before it calls the model's `load()`; the wrapper goes around it:
- without parallel workers, from `PipelineRuntime.load()` on the runtime itself;
- with parallel workers, around the server process's `ParallelModel` (the model runs in the
  workers, the batcher in the server process), whose `load()` is extended to read the
  version's manifest: no artifact is deserialised in the server process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
from mlserver.batching import hooks
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, TensorData
from mlserver.utils import get_model_uri

from runtime.core.artifacts import read_manifest
from runtime.core.contract import Contract, ParsedRequest
from runtime.core.errors import PipelineError
from runtime.core.ood import wants_flags
from runtime.core.options import RuntimeOptions
from runtime.core.response import INPUT_NAME
from runtime.integration import v2
from runtime.integration.parallel import MODEL as PARALLEL_MODEL
from runtime.integration.patching import PatchPoint, read_point

Predict = Callable[[InferenceRequest], Awaitable[InferenceResponse]]

_ISOLATED = "_pipeline_runtime_isolated"
_ONE_FAILS_ALL = "with adaptive batching, one bad request fails every request batched with it"
BATCHER_NAME = read_point(
    "mlserver.batching.hooks:_AdaptiveBatchingAttr",
    "the name of the attribute load_batching sets the batcher as, on a model whose requests it batches",
    "none found: one bad request fails its whole adaptive batch",
    _ONE_FAILS_ALL,
    kind=str,
    set_by=None,
)
UNBATCHED = read_point(
    "mlserver.batching.adaptive:AdaptiveBatcher._predict_fn",
    "the batcher keeps the model's own predict there, which requests asking for OOD flags call directly",
    "none: no public handle on the unbatched predict",
    "requests with ood_flags cannot bypass the batch",
)


def batcher_of(model: Any) -> Any:
    """MLServer's adaptive batcher of `model`, None if it batches none of its requests."""
    return getattr(model, BATCHER_NAME.read(hooks), None)


def isolate(model: Any, contract: Contract) -> None:
    """Check requests against `contract` before MLServer's batcher, if it batches `model`."""
    batched: Predict | None = model.__dict__.get("predict")
    batcher = batcher_of(model)
    if batched is None or batcher is None or getattr(batched, _ISOLATED, False):
        return
    unbatched: Predict = UNBATCHED.read(batcher)

    @wraps(batched)
    async def predict(payload: InferenceRequest) -> InferenceResponse:
        try:
            # Per-row OOD flags live in the response's request-level parameters, which the
            # batcher would copy to every request of the batch: such requests are served alone.
            call = v2.call(payload)
            if wants_flags(call.ood_flags):
                return await unbatched(payload)
            parsed = contract.parse(call.id, call.inputs, call.outputs)
        except PipelineError as error:
            raise v2.as_mlserver_error(error) from None
        response = await batched(canonical_request(payload, parsed, contract))
        # The batch answers the union of the outputs its requests asked for.
        response.outputs = [o for o in response.outputs if o.name in parsed.outputs]
        return response

    setattr(predict, _ISOLATED, True)
    model.predict = predict


def canonical_request(payload: InferenceRequest, parsed: ParsedRequest, contract: Contract) -> InferenceRequest:
    """The validated request in one canonical form (already checked, so not re-validated): one FP64
    [N, F] tensor, or for a model with string columns (which takes no matrix) one tensor [N] per
    column, BYTES for a string column, its gaps null."""
    features = parsed.features
    rows, cols = features.shape
    if contract.string_columns:
        inputs = [
            _tensor(name, [rows], "BYTES" if string else "FP64", _values(features[:, j], string))
            for j, (name, string) in enumerate(zip(contract.feature_names, contract.string_columns, strict=True))
        ]
    else:
        inputs = [_tensor(INPUT_NAME, [rows, cols], "FP64", features.ravel().tolist())]
    return InferenceRequest.model_construct(
        id=payload.id,
        parameters=payload.parameters,
        inputs=inputs,
        outputs=payload.outputs,
    )


def _tensor(name: str, shape: list[int], datatype: str, data: list[Any]) -> RequestInput:
    return RequestInput.model_construct(
        name=name, shape=shape, datatype=datatype, parameters=None, data=TensorData.model_construct(root=data)
    )


def _values(column: np.ndarray, string: bool) -> list[Any]:
    """A column of the object matrix: a string column's gaps (NaN) as null, which BYTES takes."""
    values = column.tolist()
    return [v if isinstance(v, str) else None for v in values] if string else values


async def contract_from_settings(model: Any) -> Contract:
    """The contract of a model version, from its manifest and options alone."""
    manifest = read_manifest(Path(await get_model_uri(model.settings)))
    options = RuntimeOptions.from_extra(model.settings.parameters.extra)
    return Contract.for_manifest(manifest, options.max_rows)


def patches(runtime_class: type) -> list[PatchPoint]:
    def isolate_in_server_process(original: Callable[..., Any]) -> Callable[..., Any]:
        async def load(self) -> bool:
            ready = await original(self)
            if isinstance(PARALLEL_MODEL.read(self), runtime_class) and batcher_of(self) is not None:
                isolate(self, await contract_from_settings(self))
            return ready

        return load

    return [
        PatchPoint(
            target="mlserver.parallel.model:ParallelModel.load",
            why="with parallel workers the batcher runs in the server process around "
            "ParallelModel: isolate requests there",
            upstream="none found: one bad request fails its whole adaptive batch",
            if_removed="with parallel workers and adaptive batching, one bad request fails every "
            "request batched with it",
            params=("self",),
            apply=isolate_in_server_process,
        ),
        read_point(
            "mlserver.batching.hooks:load_batching",
            "it sets the batcher as the model's instance attribute `predict` (the batcher under "
            "_AdaptiveBatchingAttr) before load(), where PipelineRuntime.load wraps it (parallel_workers 0)",
            "none found: one bad request fails its whole adaptive batch",
            _ONE_FAILS_ALL,
            set_by=None,
            params=("model",),
        ),
        BATCHER_NAME,
        UNBATCHED,
    ]
