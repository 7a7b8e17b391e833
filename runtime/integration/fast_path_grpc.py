"""The gRPC fast path: ModelInfer for a model of this runtime served in this process, without
MLServer's pydantic response, its DataPlane and its response converter.

MLServer's servicer method is wrapped where grpc registers it, so the server's interceptors (its
request metrics, the repository lock) see every call as before. For a model that
runtime.integration.direct serves, what the servicer does is done here in the same order: the
request decoded (runtime.integration.grpc_service: numpy tensors, INVALID_ARGUMENT naming the
input), its metadata as headers (MLServer's own `to_headers`) with the peer, arrival time and
deadlines stamped, the inference (runtime.integration.direct), the response headers as trailing
metadata, the response built as MLServer's converter builds it (a request with raw inputs gets
raw outputs, through that converter) and an error logged and aborted with the status code
MLServer gives it. Every other model goes to MLServer's servicer.

Off with the REST fast path's switches (PIPELINE_FAST_PATH=0, a model's `fast_path: false`,
tracing on).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import grpc
from mlserver.errors import MLServerError
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import InferTensorContentsConverter, ModelInferResponseConverter
from mlserver.grpc.logging import logger
from mlserver.grpc.utils import STATUS_CODE_MAPPING, to_headers
from mlserver.types import Datatype

from runtime.core.call import Answer, Call
from runtime.core.contract import Tensor
from runtime.core.errors import PipelineError
from runtime.integration import fast_path, v2
from runtime.integration.dataplane import MODEL_REGISTRY, SETTINGS
from runtime.integration.direct import DirectInference, new_id
from runtime.integration.grpc_service import SERVICER_DATA_PLANE, decode_request, raw_buffers, tensor_values
from runtime.integration.packed import written
from runtime.integration.patching import PatchPoint
from runtime.observation.metrics import fast_path_counter
from runtime.policy.admission import PEER_HEADER
from runtime.policy.deadlines import stamp

_TAKEN = fast_path_counter("grpc")
_CONTENT_TYPE = "content_type"
_DIRECT: weakref.WeakKeyDictionary[Any, DirectInference | None] = weakref.WeakKeyDictionary()


def _direct(servicer: Any) -> DirectInference | None:
    """The servicer's direct inference, None when the fast path is off for the server."""
    if servicer not in _DIRECT:
        plane = SERVICER_DATA_PLANE.read(servicer)
        _DIRECT[servicer] = DirectInference(plane) if fast_path.enabled(SETTINGS.read(plane)) else None
    return _DIRECT[servicer]


def _fast_model_infer(original: Callable[..., Any]) -> Callable[..., Any]:
    async def ModelInfer(self, request, context):  # noqa: N802
        direct = _direct(self)
        model = await _served(direct, SERVICER_DATA_PLANE.read(self), request) if direct is not None else None
        if model is None:
            return await original(self, request, context)
        _TAKEN.inc()
        try:
            return await _infer(direct, model, request, context)  # type: ignore[arg-type]
        except MLServerError as error:  # as MLServer's handle_mlserver_error
            logger.exception(error)
            await context.abort(
                code=STATUS_CODE_MAPPING.get(error.status_code, grpc.StatusCode.UNKNOWN), details=str(error)
            )
        except Exception as error:
            logger.exception(error)
            await context.abort(code=grpc.StatusCode.INTERNAL, details=str(error))

    return ModelInfer


async def _served(direct: DirectInference, data_plane: Any, request: pb.ModelInferRequest) -> Any:
    try:
        model = await MODEL_REGISTRY.read(data_plane).get_model(request.model_name, request.model_version)
    except MLServerError:  # not found: MLServer's servicer answers, after decoding, as it always did
        return None
    return model if direct.serves(model) else None


async def _infer(
    direct: DirectInference, model: Any, request: pb.ModelInferRequest, context: Any
) -> pb.ModelInferResponse:
    call = _prepared(request, context)
    answer = await direct.infer(model, request.model_name, request.model_version, call)
    return _answered(direct, model, answer, call.id, request, context)


def _prepared(request: pb.ModelInferRequest, context: Any) -> Call:
    """The request as the runtime's Call: decoded, its id given, its metadata as headers."""
    try:
        call = _decoded(request)
        headers = to_headers(context)
        # The peer as "ipv4:127.0.0.1:5678": the address without the port keys the rate limit.
        headers[PEER_HEADER] = context.peer().rsplit(":", 1)[0]
        stamp(headers, context.time_remaining())
    except PipelineError as error:
        raise v2.as_mlserver_error(error) from None
    return call._replace(id=new_id(call.id), headers=headers)


def _answered(
    direct: DirectInference, model: Any, answer: Answer, request_id: str, request: pb.ModelInferRequest, context: Any
) -> pb.ModelInferResponse:
    """The answer as the response, its response headers as trailing metadata."""
    trailing = direct.response_headers(model, answer, request_id, _metadata_pair)
    if trailing:
        context.set_trailing_metadata(trailing)
    return _response(answer, request_id, raw=bool(request.raw_input_contents))


def _metadata_pair(name: str, value: str) -> tuple[str, str]:
    return name.lower(), value  # as MLServer's to_metadata


def _decoded(request: pb.ModelInferRequest) -> Call:
    """The request as decode_request and v2.call would make it, without building MLServer's
    request when no parameters need MLServer's parsing (the common request has none, or only a codec's
    content type)."""
    tensors = request.inputs
    plain = _codec_only(request.parameters) and all(_codec_only(i.parameters) for i in tensors)
    if not plain or any(o.parameters for o in request.outputs):
        return v2.call(decode_request(request))
    raw = raw_buffers(request)
    inputs = [
        Tensor(inp.name, list(inp.shape), inp.datatype, tensor_values(inp, raw.get(index) if raw else None))
        for index, inp in enumerate(tensors)
    ]
    return Call(request.id, inputs, [o.name for o in request.outputs], None, None, None)


def _codec_only(parameters: Any) -> bool:
    """No parameters, or only a string `content_type` (PandasCodec's "pd", StringCodec's "str"), which
    the runtime reads no more than MLServer's path does. A map's keys are unique: at most that one."""
    return not parameters or (
        len(parameters) == 1 and _CONTENT_TYPE in parameters and parameters[_CONTENT_TYPE].HasField("string_param")
    )


def _response(answer: Answer, request_id: str, raw: bool) -> pb.ModelInferResponse:
    """As MLServer's ModelInferResponseConverter.from_types builds it (itself for raw outputs)."""
    if raw:
        response = v2.response(answer)
        response.id = request_id
        return ModelInferResponseConverter.from_types(response, use_raw=True)
    return pb.ModelInferResponse(
        model_name=answer.model_name,
        model_version=answer.model_version,
        id=request_id,
        parameters={k: pb.InferParameter(string_param=v) for k, v in answer.parameters.items()},
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(
                name=o.name,
                shape=o.shape,
                datatype=o.datatype,
                contents=_contents(o.data, o.datatype),
            )
            for o in answer.outputs
        ],
    )


def _contents(data: list, datatype: str) -> pb.InferTensorContents:
    packed = written(datatype, data)
    if packed is not None:
        return packed
    field = _CONTENTS_FIELDS.get(datatype)
    if field is not None:
        return pb.InferTensorContents(**{field: v2.wire_data(datatype, data)})
    return InferTensorContentsConverter.from_types(v2.wire_data(datatype, data), datatype=Datatype(datatype))


# The contents field MLServer's converter fills for the datatypes this runtime answers with (FP64,
# INT64, BYTES: runtime.core.response), written without its enum and keyword round trip; any other
# datatype goes through the converter.
_CONTENTS_FIELDS = {"FP64": "fp64_contents", "INT64": "int64_contents", "BYTES": "bytes_contents"}


PATCHES = [
    PatchPoint(
        target="mlserver.grpc.servicers:InferenceServicer.ModelInfer",
        why="the gRPC fast path (runtime.integration.fast_path_grpc): ModelInfer for a model of "
        "this runtime in this process without the pydantic round trip and the DataPlane; "
        "the class attribute, read when MLServer registers the servicer",
        upstream="none: MLServer has no per-runtime hook for its gRPC servicer",
        if_removed="gRPC inference at MLServer's speed, unchanged otherwise",
        params=("self", "request", "context"),
        apply=_fast_model_infer,
    ),
]
