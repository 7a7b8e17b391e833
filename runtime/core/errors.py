"""Every user-facing error and the HTTP status it maps to, in one place.

Plain exceptions: the core raises them without knowing MLServer. The adapter (runtime.model) and
the integration package turn them into MLServer's errors at the edge, and over gRPC the status
becomes its code (400 -> INVALID_ARGUMENT, 401 -> UNAUTHENTICATED, 503 -> UNAVAILABLE,
504 -> DEADLINE_EXCEEDED, 500 -> INTERNAL; runtime.integration.grpc). Each takes only a message
so it survives pickling across MLServer's parallel workers.
"""

BAD_REQUEST = 400
UNAUTHORIZED = 401
FORBIDDEN = 403
NOT_FOUND = 404
PAYLOAD_TOO_LARGE = 413
UNSUPPORTED_MEDIA_TYPE = 415
TOO_MANY_REQUESTS = 429
INTERNAL = 500
NOT_IMPLEMENTED = 501
SERVICE_UNAVAILABLE = 503
GATEWAY_TIMEOUT = 504


class PipelineError(Exception):
    """Base of every error the runtime reports to a caller; `status` is its HTTP status."""

    status = INTERNAL

    def __init__(self, msg: str):
        super().__init__(msg)


class InvalidRequest(PipelineError):
    """Base for mistakes in the request: always a 4xx, never a 5xx."""

    status = BAD_REQUEST


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


class CategoryError(InvalidRequest):
    """A value outside a categorical column's training categories, where the pipeline would raise."""


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


class RequestIdTooLong(InvalidRequest):
    """A request id above the length limit: it is echoed in the `ce-id` response header, where a
    long one makes a header line that common HTTP clients refuse to read."""


class ParameterError(InvalidRequest):
    """A gRPC request or tensor parameter of the wrong type for MLServer (e.g. content_type)."""


class NonFiniteOutputError(InvalidRequest):
    """Finite inputs whose prediction overflows (values far outside the model's numeric range)."""


class EntityIdError(InvalidRequest):
    """An `entity_id` input that is not a 1-D BYTES tensor of non-empty, short, printable ids, or
    one sent to a model without a feature store."""


class UnknownEntityError(InvalidRequest):
    """An entity id the feature store has no row for (and the model has no default features),
    or a stored row with a missing (NULL) feature: the message names the id, its row and the
    feature."""


class ArtifactError(PipelineError):
    """A model directory that cannot be loaded safely: refused at load, never served."""

    status = INTERNAL


class InternalPredictionError(PipelineError):
    """An unexpected failure inside the prediction path: a short message, no traceback."""

    status = INTERNAL


class InvalidTimeoutError(InvalidRequest):
    """An `X-Request-Timeout-Ms` header (or gRPC metadata) that is not a number of milliseconds."""


class Unauthenticated(PipelineError):
    """Inference without a valid bearer token on a model that requires one: HTTP 401,
    gRPC UNAUTHENTICATED. The message never echoes what the client sent."""

    status = UNAUTHORIZED


class Overloaded(PipelineError):
    """The model already has its `max_in_flight` requests in flight: refused at once, not
    queued. HTTP 503, gRPC UNAVAILABLE (retry later, preferably elsewhere)."""

    status = SERVICE_UNAVAILABLE


class ModelUnavailable(PipelineError):
    """The model's circuit breaker is open and it has no fallback: a fast HTTP 503 / gRPC
    UNAVAILABLE instead of another failing computation."""

    status = SERVICE_UNAVAILABLE


class FeatureStoreUnavailable(PipelineError):
    """The feature store is down, timed out, at its connection limit, or its circuit breaker is
    open: HTTP 503, gRPC UNAVAILABLE, at once rather than after a hang."""

    status = SERVICE_UNAVAILABLE


class DeadlineExceeded(PipelineError):
    """The request's deadline passed before its computation started, so it was not computed:
    HTTP 504, gRPC DEADLINE_EXCEEDED."""

    status = GATEWAY_TIMEOUT


class RateLimited(PipelineError):
    """A client over its per-model request rate: HTTP 429 (with Retry-After), gRPC
    RESOURCE_EXHAUSTED. The message says when to retry."""

    status = TOO_MANY_REQUESTS


class RequestTooLarge(PipelineError):
    """A request body above the server's limit: refused before it is read (HTTP 413; over gRPC
    the channel's maximum message size answers RESOURCE_EXHAUSTED)."""

    status = PAYLOAD_TOO_LARGE


class AdminUnauthenticated(PipelineError):
    """A repository (load/unload/index) call without the admin token: HTTP 401,
    gRPC UNAUTHENTICATED."""

    status = UNAUTHORIZED


class AdminDisabled(PipelineError):
    """The repository API is switched off (or left without an admin token where it must have
    one): HTTP 403, gRPC PERMISSION_DENIED."""

    status = FORBIDDEN


class MalformedFraming(InvalidRequest):
    """Content-Length / Transfer-Encoding that do not say one length (repeated, conflicting, not a
    number): HTTP 400, decided from the request head. Nothing of the body is read."""


class UnsupportedTransferCoding(PipelineError):
    """A transfer coding other than chunked (RFC 9112 6.1): HTTP 501."""

    status = NOT_IMPLEMENTED


class UnsupportedEncoding(PipelineError):
    """A Content-Encoding the server does not inflate (it inflates gzip and deflate): HTTP 415."""

    status = UNSUPPORTED_MEDIA_TYPE


class MalformedBody(InvalidRequest):
    """A compressed body that does not inflate, or a JSON body nested past the server's depth."""


class RouteNotFound(PipelineError):
    """No route of the server answers this path, or no model of this name is loaded: HTTP 404,
    decided from the request head before the body is read."""

    status = NOT_FOUND


def counts_against_model(error: PipelineError) -> bool:
    """Whether `error` is the model's own failure (a 500): what its circuit breaker counts and its
    fallback answers. A 4xx is the client's mistake, a 503 a refusal and a 504 the client's own
    deadline: none says anything about the model's health."""
    return error.status == INTERNAL


def validation_problems(error: Exception) -> str:
    """A pydantic ValidationError as one line: "'model.format': Field required; ..."."""
    problems = getattr(error, "errors", None)
    if problems is None:
        return str(error).replace("\n", " ")
    return "; ".join(
        f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" if e["loc"] else e["msg"] for e in problems(include_url=False)
    )


def first_line(error: BaseException) -> str:
    """An exception's message up to its first line break: scikit-learn's span paragraphs, a refusal one line."""
    text = str(error)
    return text.splitlines()[0] if text else ""
