"""Every user-facing error and the status it maps to, in one place.

All of them subclass MLServer's `MLServerError`, which MLServer turns into the HTTP status
below and, over gRPC, into the matching code (400 -> INVALID_ARGUMENT, 500 -> INTERNAL).
Each takes only a message so it survives pickling across MLServer's parallel workers.

MLServer 1.7.1 maps only 400/404/422/500 to gRPC codes (anything else becomes UNKNOWN), so
`register_grpc_codes()` adds the codes of the admission errors below to its table.
"""

import grpc
from mlserver.errors import MLServerError
from mlserver.grpc import utils as grpc_utils

BAD_REQUEST = 400
UNAUTHORIZED = 401
INTERNAL = 500
SERVICE_UNAVAILABLE = 503
GATEWAY_TIMEOUT = 504

# HTTP status -> gRPC status code, for the statuses MLServer 1.7.1 does not map itself.
GRPC_CODES = {
    UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def register_grpc_codes() -> None:
    """Teach MLServer's gRPC error handler our codes (idempotent; never overrides its own).

    MLServer 1.7.1 `mlserver.grpc.utils._grpc_status_code` looks the status up in the module
    dict `STATUS_CODE_MAPPING` at call time, so adding entries is enough; the gRPC server runs
    in the main process, where the runtime module is imported too (in every worker mode).
    """
    for status, code in GRPC_CODES.items():
        grpc_utils.STATUS_CODE_MAPPING.setdefault(status, code)


class InvalidRequest(MLServerError):
    """Base for mistakes in the request: always a 4xx, never a 5xx."""

    status = BAD_REQUEST

    def __init__(self, msg: str):
        super().__init__(msg, self.status)


class FeatureCountError(InvalidRequest):
    """A 2-D tensor whose column count differs from the model's feature count."""


class FeatureNameError(InvalidRequest):
    """Column-style inputs with unknown, missing or duplicated feature names."""


class ShapeError(InvalidRequest):
    """A declared shape that disagrees with the data or with the contract."""


class MalformedDataError(InvalidRequest):
    """Ragged rows, nesting that disagrees with the shape, or non-numeric elements."""


class DatatypeError(InvalidRequest):
    """BYTES, BOOL or a datatype outside the Open Inference Protocol's numeric types."""


class ValueRangeError(InvalidRequest):
    """A value that does not fit the declared datatype (e.g. 300 as INT8)."""


class NonFiniteError(InvalidRequest):
    """NaN, +-Inf or JSON null."""


class BatchSizeError(InvalidRequest):
    """An empty batch, or more rows than the model's row cap."""


class OutputError(InvalidRequest):
    """A requested output the model does not offer."""


class InputLayoutError(InvalidRequest):
    """Inputs that are neither one [N, F] tensor nor one 1-D tensor per feature."""


class RequestIdError(InvalidRequest):
    """A request id that is not printable ASCII: MLServer echoes it in response headers, where
    anything else breaks the response (REST 500 or a dropped connection, a gRPC call that hangs)."""


class ParameterError(InvalidRequest):
    """A gRPC request or tensor parameter of the wrong type for MLServer (e.g. content_type)."""


class NonFiniteOutputError(InvalidRequest):
    """Finite inputs whose prediction overflows (values far outside the model's numeric range)."""


class ArtifactError(MLServerError):
    """A model directory that cannot be loaded safely: refused at load, never served."""

    def __init__(self, msg: str):
        super().__init__(msg, INTERNAL)


class InternalPredictionError(MLServerError):
    """An unexpected failure inside the prediction path: a short message, no traceback."""

    def __init__(self, msg: str):
        super().__init__(msg, INTERNAL)


class InvalidTimeoutError(InvalidRequest):
    """An `X-Request-Timeout-Ms` header (or gRPC metadata) that is not a number of milliseconds."""


class Unauthenticated(MLServerError):
    """Inference without a valid bearer token on a model that requires one: HTTP 401,
    gRPC UNAUTHENTICATED. The message never echoes what the client sent."""

    def __init__(self, msg: str):
        super().__init__(msg, UNAUTHORIZED)


class Overloaded(MLServerError):
    """The model already has its `max_in_flight` requests in flight: refused at once, not
    queued. HTTP 503, gRPC UNAVAILABLE (retry later, preferably elsewhere)."""

    def __init__(self, msg: str):
        super().__init__(msg, SERVICE_UNAVAILABLE)


class DeadlineExceeded(MLServerError):
    """The request's deadline passed before its computation started, so it was not computed:
    HTTP 504, gRPC DEADLINE_EXCEEDED."""

    def __init__(self, msg: str):
        super().__init__(msg, GATEWAY_TIMEOUT)
