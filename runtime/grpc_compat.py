"""Decode gRPC inference requests straight into numpy, and keep malformed ones a client error.

MLServer 1.7.1 turns a ModelInferRequest into its pydantic types before any runtime sees it
(`ModelInferRequestConverter.to_types`): typed contents become Python lists that pydantic then
validates element by element, and `raw_input_contents` are unpacked with `struct` into lists.
A raw buffer whose size disagrees with its shape, or an unknown datatype, escapes as a
struct/Value error that MLServer reports as INTERNAL.

This replacement checks raw buffers first (a 400, which MLServer maps to INVALID_ARGUMENT,
naming the input) and hands each tensor's values over as one numpy array: `np.frombuffer` for
raw contents, one `np.fromiter` for typed ones. The input contract validates everything else,
exactly as for REST. Installed once, in the process that hosts the gRPC server, when the
runtime module is imported.
"""

from __future__ import annotations

from math import prod
from typing import Optional

import numpy as np
from mlserver import types
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter, ParametersConverter
from pydantic import ValidationError

from runtime.contract import NUMERIC_DATATYPES, NUMERIC_HINT
from runtime.errors import DatatypeError, MalformedDataError, ParameterError, ShapeError

_GUARD_ATTRIBUTE = "_pipeline_runtime_guarded"

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


def raw_buffers(request: pb.ModelInferRequest) -> dict[int, bytes]:
    """Raw contents by input index, refusing buffers MLServer's decoder would choke on."""
    raw = list(request.raw_input_contents)
    if not raw:
        return {}
    pending = [i for i, inp in enumerate(request.inputs) if not inp.HasField("contents")]
    if len(pending) != len(raw):
        raise MalformedDataError(
            f"{len(raw)} raw_input_contents for {len(pending)} inputs without contents"
        )
    for index, buffer in zip(pending, raw):
        inp = request.inputs[index]
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
    return dict(zip(pending, raw))


def tensor_values(inp: pb.ModelInferRequest.InferInputTensor, raw: Optional[bytes]) -> object:
    """The tensor's values: a numpy array where the wire format allows, else a list."""
    if raw is not None:
        # The V2 raw format is little-endian; frombuffer views the bytes without copying.
        return np.frombuffer(raw, dtype=NUMERIC_DATATYPES[inp.datatype].newbyteorder("<"))
    fields = inp.contents.ListFields()
    if not fields:
        return []
    descriptor, values = fields[0]
    dtype = _CONTENTS_DTYPES.get(descriptor.name)
    if dtype is None:  # bool or bytes contents: the contract refuses them with their datatype
        return list(values)
    return np.fromiter(values, dtype=dtype, count=len(values))


def parameters(params: object, owner: str) -> Optional[types.Parameters]:
    """MLServer's typed parameters (content_type a string, headers a map), or a 400 naming them."""
    try:
        return ParametersConverter.to_types(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ParameterError(f"{owner} parameters: {problems}") from None


def to_types(request: pb.ModelInferRequest) -> types.InferenceRequest:
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
        types.RequestOutput.model_construct(
            name=o.name, parameters=parameters(o.parameters, f"output '{o.name}'")
        )
        for o in request.outputs
    ]
    return types.InferenceRequest.model_construct(
        id=request.id,
        parameters=parameters(request.parameters, "request"),
        inputs=inputs,
        outputs=outputs or None,
    )


def install() -> None:
    if getattr(ModelInferRequestConverter.to_types, _GUARD_ATTRIBUTE, False):
        return
    setattr(to_types, _GUARD_ATTRIBUTE, True)
    ModelInferRequestConverter.to_types = staticmethod(to_types)  # type: ignore[method-assign]
