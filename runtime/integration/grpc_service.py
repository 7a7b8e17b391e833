"""gRPC: decode requests straight into numpy, stamp their deadlines, and give the runtime's
errors their status codes.

- `ModelInferRequestConverter.to_types`: MLServer turns a ModelInferRequest into its pydantic
  types before any runtime sees it, typed contents as Python lists validated element by element
  and raw contents unpacked with `struct`; a raw buffer whose size disagrees with its shape, or
  an unknown datatype, escapes as a struct/Value error reported as INTERNAL. The replacement
  checks raw buffers first (INVALID_ARGUMENT naming the input) and hands each tensor's values
  over as one numpy array; the input contract validates everything else, exactly as for REST.
- `InferenceServicer._InsertHeaders`: only the servicer sees the gRPC deadline
  (`context.time_remaining()`; grpc-timeout never reaches the headers).
- `STATUS_CODE_MAPPING`: MLServer maps only 400/404/422/500 to gRPC codes; anything else
  becomes UNKNOWN.
- a filter on the `mlserver.grpc` logger, which logs a full traceback for every error it returns:
  refusals by design (auth, overload, deadline) are summarised by runtime.policy.inflight instead.
- `aio` as `mlserver.grpc.server` sees it: the server it builds gets an interceptor that locks
  the repository methods (runtime.policy.admin), the same maximum message size as REST bodies and
  MLServer's metrics interceptor in a faster form (runtime.integration.grpc_metrics).
- the servicer's private DataPlane, read (runtime.integration.fast_path_grpc answers from it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from math import prod
from typing import Any

import grpc
import numpy as np
from mlserver import types
from mlserver.errors import MLServerError
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ParametersConverter
from mlserver.handlers.dataplane import DataPlane
from pydantic import ValidationError

from runtime.core.datatypes import NUMERIC_DATATYPES, NUMERIC_HINT
from runtime.core.errors import (
    FORBIDDEN,
    GATEWAY_TIMEOUT,
    PAYLOAD_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    DatatypeError,
    MalformedDataError,
    ParameterError,
    PipelineError,
    ShapeError,
    validation_problems,
)
from runtime.edge.body_limits import max_request_bytes
from runtime.integration import fast_path
from runtime.integration.grpc_metrics import BoundPromInterceptor
from runtime.integration.packed import read
from runtime.integration.patching import PatchPoint, read_point
from runtime.integration.v2 import as_mlserver_error
from runtime.policy.admin import AdminPolicy
from runtime.policy.admission import PEER_HEADER
from runtime.policy.deadlines import stamp

# HTTP status -> gRPC status code, for the statuses MLServer 1.7.1 does not map itself.
GRPC_CODES = {
    UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# The repository methods, on both services MLServer serves them on.
REPOSITORY_METHODS = frozenset({"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"})
MAX_MESSAGE_OPTION = "grpc.max_receive_message_length"

# The numpy type of each typed-contents field: values keep their exact wire value, and the
# contract then checks them against the datatype the tensor declares.
_CONTENTS_DTYPES = {
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


# ------------------------------------------------------------------------------ request decoding


def raw_buffers(request: pb.ModelInferRequest) -> dict[int, bytes]:
    """Raw contents by input index, refusing buffers MLServer's decoder would choke on."""
    raw = list(request.raw_input_contents)
    if not raw:
        return {}
    pending = [i for i, inp in enumerate(request.inputs) if not inp.HasField("contents")]
    if len(pending) != len(raw):
        raise MalformedDataError(f"{len(raw)} raw_input_contents for {len(pending)} inputs without contents")
    for index, buffer in zip(pending, raw):
        inp = request.inputs[index]
        if inp.datatype == "BYTES":  # entity ids (runtime.features.entities): split and checked by tensor_values
            continue
        if inp.datatype not in NUMERIC_DATATYPES:
            raise DatatypeError(f"input '{inp.name}': datatype {inp.datatype} is not supported; {NUMERIC_HINT}")
        if any(d < 0 for d in inp.shape):
            raise ShapeError(f"input '{inp.name}': shape {list(inp.shape)} has a negative dimension")
        expected = prod(inp.shape) * NUMERIC_DATATYPES[inp.datatype].itemsize
        if len(buffer) != expected:
            raise ShapeError(
                f"input '{inp.name}': shape {list(inp.shape)} of {inp.datatype} needs {expected} "
                f"raw bytes but {len(buffer)} were sent"
            )
    return dict(zip(pending, raw))


def bytes_elements(name: str, buffer: bytes, count: int) -> list[bytes]:
    """A raw BYTES tensor: each element a 4-byte little-endian length, then that many bytes."""
    elements: list[bytes] = []
    at = 0
    while at < len(buffer):
        if at + 4 > len(buffer):
            raise MalformedDataError(f"input '{name}': raw BYTES contents end inside an element's length")
        size = int.from_bytes(buffer[at : at + 4], "little")
        if at + 4 + size > len(buffer):
            raise MalformedDataError(f"input '{name}': raw BYTES element {len(elements)} is cut short")
        elements.append(buffer[at + 4 : at + 4 + size])
        at += 4 + size
    if len(elements) != count:
        raise ShapeError(f"input '{name}': shape holds {count} values but raw BYTES contents have {len(elements)}")
    return elements


def tensor_values(inp: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> object:
    """The tensor's values: a numpy array where the wire format allows, else a list."""
    if raw is not None and inp.datatype == "BYTES":
        return bytes_elements(inp.name, raw, prod(inp.shape))
    if raw is not None:
        # The V2 raw format is little-endian; frombuffer views the bytes without copying.
        return np.frombuffer(raw, dtype=NUMERIC_DATATYPES[inp.datatype].newbyteorder("<"))
    fields = inp.contents.ListFields()
    if not fields:
        return []
    packed = read(inp.contents, fields)
    if packed is not None:
        return packed
    descriptor, values = fields[0]
    dtype = _CONTENTS_DTYPES.get(descriptor.name)
    if dtype is None:  # bool or bytes contents: the contract refuses them with their datatype
        return list(values)
    return np.fromiter(values, dtype=dtype, count=len(values))


def parameters(params: object, owner: str) -> types.Parameters | None:
    """MLServer's typed parameters (content_type a string, headers a map), or a 400 naming them."""
    try:
        return ParametersConverter.to_types(params)
    except ValidationError as exc:
        raise ParameterError(f"{owner} parameters: {validation_problems(exc)}") from None


def decode_request(request: pb.ModelInferRequest) -> types.InferenceRequest:
    """MLServer's InferenceRequest with numpy tensor data, built without pydantic validation
    (the input contract validates the data)."""
    raw = raw_buffers(request)
    inputs = [
        types.RequestInput.model_construct(
            name=inp.name,
            shape=list(inp.shape),
            datatype=inp.datatype,
            parameters=parameters(inp.parameters, f"input '{inp.name}'"),
            data=types.TensorData.model_construct(root=tensor_values(inp, raw.get(index))),
        )
        for index, inp in enumerate(request.inputs)
    ]
    outputs = [
        types.RequestOutput.model_construct(name=o.name, parameters=parameters(o.parameters, f"output '{o.name}'"))
        for o in request.outputs
    ]
    return types.InferenceRequest.model_construct(
        id=request.id,
        parameters=parameters(request.parameters, "request"),
        inputs=inputs,
        outputs=outputs or None,
    )


def _to_types(_original: Any) -> Any:
    def to_types(cls, pb_object):
        try:
            return decode_request(pb_object)
        except PipelineError as error:
            raise as_mlserver_error(error) from None

    return classmethod(to_types)


# ------------------------------------------------------------------------------ deadlines


def _stamp_on_insert(original: Callable[..., Any]) -> Callable[..., Any]:
    def _InsertHeaders(self, request, context):  # noqa: N802
        payload = original(self, request, context)
        # The peer as "ipv4:127.0.0.1:5678": the address without the port keys the rate limit.
        payload.parameters.headers[PEER_HEADER] = context.peer().rsplit(":", 1)[0]
        try:
            stamp(payload.parameters.headers, context.time_remaining())
        except PipelineError as error:  # a malformed x-request-timeout-ms: INVALID_ARGUMENT
            raise as_mlserver_error(error) from None
        return payload

    return _InsertHeaders


# ------------------------------------------------------------------------------ errors


def _add_status_codes(mapping: dict[int, grpc.StatusCode]) -> None:
    for status, code in GRPC_CODES.items():
        mapping.setdefault(status, code)  # MLServer's own entries win


class QuietRefusals(logging.Filter):
    """Drop MLServer's gRPC traceback for refusals by design (summarised by runtime.policy.inflight)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else record.msg
        # By status, not class: a refusal raised in a parallel worker comes back as a WorkerError.
        return not (isinstance(exc, MLServerError) and exc.status_code in GRPC_CODES)


def _quiet(logger: logging.Logger) -> None:
    if not any(isinstance(f, QuietRefusals) for f in logger.filters):
        logger.addFilter(QuietRefusals())


# ------------------------------------------------------------------------------ the server


class RepositoryLock(grpc.aio.ServerInterceptor):
    """Refuses the repository methods unless runtime.policy.admin's policy lets the call through."""

    def __init__(self, admin: AdminPolicy):
        self._admin = admin

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.rsplit("/", 1)[-1] in REPOSITORY_METHODS:
            try:
                self._admin.check(dict(handler_call_details.invocation_metadata or ()))
            except PipelineError as refused:
                return _refusing(GRPC_CODES[refused.status], str(refused))
        return await continuation(handler_call_details)


def _refusing(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request, context):
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class _GuardedAio:
    """grpc.aio as mlserver.grpc.server sees it: the same module, bar a server() that adds the
    repository lock and the message limit to the server MLServer builds."""

    def __init__(self, aio: Any):
        self._aio = aio

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aio, name)

    def server(self, *args, interceptors=(), options=(), **kwargs):
        from mlserver.settings import Settings

        # The host as the environment sets it (settings.json's, if any, is not visible here: a
        # host given only there counts as non-loopback, which locks rather than opens).
        admin = AdminPolicy.from_env(Settings().host)
        limited = [o for o in options if o[0] != MAX_MESSAGE_OPTION]
        limited.append((MAX_MESSAGE_OPTION, max_request_bytes()))
        if fast_path.switched_on():
            interceptors = [BoundPromInterceptor(i) if BoundPromInterceptor.replaces(i) else i for i in interceptors]
        return self._aio.server(*args, interceptors=[RepositoryLock(admin), *interceptors], options=limited, **kwargs)


SERVICER_DATA_PLANE = read_point(
    "mlserver.grpc.servicers:InferenceServicer._data_plane",
    "the DataPlane the gRPC fast path (runtime.integration.fast_path_grpc) answers from",
    "none: the servicer has no public handle on it",
    "no gRPC fast path",
    kind=DataPlane,
)

PATCHES = [
    PatchPoint(
        target="mlserver.grpc.converters:ModelInferRequestConverter.to_types",
        why="decode tensors straight into numpy (frombuffer/fromiter) and refuse malformed raw "
        "buffers as INVALID_ARGUMENT naming the input",
        upstream="none found: struct/Value errors from to_types surface as INTERNAL",
        if_removed="a raw buffer of the wrong size is INTERNAL instead of INVALID_ARGUMENT; gRPC decoding is slower",
        params=("cls", "pb_object"),
        apply=_to_types,
    ),
    PatchPoint(
        target="mlserver.grpc.servicers:InferenceServicer._InsertHeaders",
        why="stamp the arrival time, the x-request-timeout-ms deadline and the gRPC deadline "
        "(context.time_remaining(), seen only here)",
        upstream="none: MLServer passes no gRPC deadline to the model",
        if_removed="gRPC deadlines and x-request-timeout-ms are ignored (no DEADLINE_EXCEEDED)",
        params=("self", "request", "context"),
        apply=_stamp_on_insert,
    ),
    PatchPoint(
        target="mlserver.grpc.utils:STATUS_CODE_MAPPING",
        why="add UNAUTHENTICATED (401), UNAVAILABLE (503), DEADLINE_EXCEEDED (504); looked up "
        "per error by _grpc_status_code",
        upstream="none found (SeldonIO/MLServer#488 added the 400/404/422/500 table)",
        if_removed="auth, overload and deadline refusals reach gRPC clients as UNKNOWN",
        kind=dict,
        apply=_add_status_codes,
    ),
    PatchPoint(
        target="mlserver.grpc.server:aio",
        why="the gRPC server MLServer builds gets an interceptor locking the repository methods "
        "(runtime.policy.admin), PIPELINE_MAX_REQUEST_BYTES as its maximum message size and, unless "
        "PIPELINE_FAST_PATH=0, MLServer's request-metrics interceptor with its label children bound "
        "once (runtime.integration.grpc_metrics)",
        upstream="none found: no auth on the repository API",
        if_removed="anyone who reaches the gRPC port unloads models; messages up to gRPC's 4 MB "
        "default or grpc_max_message_length",
        kind=object,
        apply=_GuardedAio,
    ),
    PatchPoint(
        target="mlserver.grpc.logging:logger",
        why="a filter drops the traceback handle_mlserver_error logs for each refusal by design",
        upstream="none found: every MLServerError is logged with logger.exception",
        if_removed="each 401/503/504 over gRPC logs a full traceback (a flood under overload)",
        kind=logging.Logger,
        apply=_quiet,
    ),
    SERVICER_DATA_PLANE,
]
