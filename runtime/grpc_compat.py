"""Keep malformed gRPC requests a client error.

MLServer 1.7.1 decodes a gRPC ModelInferRequest (including `raw_input_contents`) before any
runtime sees it, and a raw buffer whose size disagrees with its shape, or an unknown datatype,
escapes as a struct/Value error that MLServer reports as INTERNAL. We check those requests
first and raise our own 400, which MLServer maps to INVALID_ARGUMENT. Installed once, from the
process that hosts the gRPC server, when the runtime module is imported.
"""

from __future__ import annotations

from math import prod

from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter

from runtime.contract import NUMERIC_DATATYPES, NUMERIC_HINT
from runtime.errors import DatatypeError, MalformedDataError, ShapeError

_GUARD_ATTRIBUTE = "_pipeline_runtime_guarded"


def check_raw_contents(request: pb.ModelInferRequest) -> None:
    """Refuse raw tensor contents that MLServer's decoder would choke on, naming the input."""
    raw = list(request.raw_input_contents)
    if not raw:
        return
    pending = [inp for inp in request.inputs if not inp.HasField("contents")]
    if len(pending) != len(raw):
        raise MalformedDataError(
            f"{len(raw)} raw_input_contents for {len(pending)} inputs without contents"
        )
    for inp, buffer in zip(pending, raw):
        if inp.datatype not in NUMERIC_DATATYPES:
            raise DatatypeError(
                f"input '{inp.name}': datatype {inp.datatype} is not supported; {NUMERIC_HINT}"
            )
        if any(d < 0 for d in inp.shape):
            raise ShapeError(f"input '{inp.name}': shape {list(inp.shape)} has a negative dimension")
        expected = prod(inp.shape) * NUMERIC_DATATYPES[inp.datatype].itemsize
        if len(buffer) != expected:
            raise ShapeError(
                f"input '{inp.name}': shape {list(inp.shape)} of {inp.datatype} needs {expected} "
                f"raw bytes but {len(buffer)} were sent"
            )


def install() -> None:
    original = ModelInferRequestConverter.to_types
    if getattr(original, _GUARD_ATTRIBUTE, False):
        return

    def to_types(pb_object: pb.ModelInferRequest):  # type: ignore[no-untyped-def]
        check_raw_contents(pb_object)
        return original(pb_object)

    setattr(to_types, _GUARD_ATTRIBUTE, True)
    ModelInferRequestConverter.to_types = staticmethod(to_types)  # type: ignore[method-assign]
