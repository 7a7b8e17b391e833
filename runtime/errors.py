"""Every user-facing error and the status it maps to, in one place.

All of them subclass MLServer's `MLServerError`, which MLServer turns into the HTTP status
below and, over gRPC, into the matching code (400 -> INVALID_ARGUMENT, 500 -> INTERNAL).
Each takes only a message so it survives pickling across MLServer's parallel workers.
"""

from mlserver.errors import MLServerError

BAD_REQUEST = 400
INTERNAL = 500


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


class ArtifactError(MLServerError):
    """A model directory that cannot be loaded safely: refused at load, never served."""

    def __init__(self, msg: str):
        super().__init__(msg, INTERNAL)


class InternalPredictionError(MLServerError):
    """An unexpected failure inside the prediction path: a short message, no traceback."""

    def __init__(self, msg: str):
        super().__init__(msg, INTERNAL)
