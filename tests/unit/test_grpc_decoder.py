"""gRPC requests decode straight into numpy, and malformed raw contents are a 400
(runtime.integration.grpc_service)."""

from __future__ import annotations

import numpy as np
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter

import runtime.model  # noqa: F401  (installs the decoder, as loading the runtime does)
from runtime.core.contract import Contract, ParsedRequest
from runtime.core.errors import DatatypeError, MalformedDataError, ShapeError
from runtime.integration import v2
from runtime.integration.grpc_service import decode_request

CONTRACT = Contract(("a", "b"), ("predict",), max_rows=10)


def parse(decoded) -> ParsedRequest:
    call = v2.call(decoded)
    return CONTRACT.parse(call.id, call.inputs, call.outputs)


def _request(datatype: str, shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="req-1")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "X", datatype
    tensor.shape.extend(shape)
    return request


def test_raw_contents_become_one_array_with_the_declared_type():
    x = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=np.float32)
    request = _request("FP32", [2, 2])
    request.raw_input_contents.append(x.tobytes())
    request.outputs.add().name = "predict"
    decoded = ModelInferRequestConverter.to_types(request)
    data = decoded.inputs[0].data.root
    assert isinstance(data, np.ndarray) and data.dtype == np.float32
    np.testing.assert_array_equal(parse(decoded).features, x.astype(np.float64))
    assert decoded.id == "req-1" and [o.name for o in decoded.outputs] == ["predict"]


def test_typed_contents_keep_their_wire_values_for_the_contract_to_check():
    request = _request("INT8", [1, 2])
    request.inputs[0].contents.int_contents.extend([7, 300])
    decoded = ModelInferRequestConverter.to_types(request)
    assert decoded.inputs[0].data.root.tolist() == [7, 300]
    with pytest.raises(Exception, match=r"row 0, column 1 \('b'\): value 300 is out of range for INT8"):
        parse(decoded)


@pytest.mark.parametrize(
    "datatype,shape,raw,error,message",
    [
        ("FP64", [1, 2], b"\0" * 15, ShapeError, "shape [1, 2] of FP64 needs 16 raw bytes but 15 were sent"),
        ("FP128", [1, 2], b"\0" * 16, DatatypeError, "datatype FP128 is not supported"),
        ("FP64", [-1, 2], b"", ShapeError, "negative dimension"),
    ],
)
def test_malformed_raw_contents_are_refused_naming_the_input(datatype, shape, raw, error, message):
    request = _request(datatype, shape)
    request.raw_input_contents.append(raw)
    with pytest.raises(error) as caught:
        decode_request(request)
    assert caught.value.status == 400 and "input 'X'" in str(caught.value) and message in str(caught.value)
    # Through MLServer's converter (as the servicer calls it): the same message, a 400 for MLServer.
    with pytest.raises(v2.RuntimeRequestError) as caught:
        ModelInferRequestConverter.to_types(request)
    assert caught.value.status_code == 400 and message in str(caught.value)


def test_more_raw_buffers_than_inputs_without_contents_is_refused():
    request = _request("FP64", [1, 2])
    request.raw_input_contents.extend([b"\0" * 16, b"\0" * 16])
    with pytest.raises(MalformedDataError, match="2 raw_input_contents for 1 inputs"):
        decode_request(request)


@pytest.mark.parametrize("datatype,field", [("FP32", "fp32_contents"), ("FP64", "fp64_contents")])
def test_nan_in_typed_contents_is_a_gap_only_where_the_column_may_be_missing(datatype, field):
    request = _request(datatype, [2, 2])
    getattr(request.inputs[0].contents, field).extend([1.0, float("nan"), float("nan"), 4.0])
    decoded = ModelInferRequestConverter.to_types(request)
    call = v2.call(decoded)
    gappy = Contract(("a", "b"), ("predict",), max_rows=10, may_be_missing=(True, True))
    features = gappy.parse(call.id, call.inputs, call.outputs).features
    assert np.isnan(features).tolist() == [[False, True], [True, False]]
    only_b = Contract(("a", "b"), ("predict",), max_rows=10, may_be_missing=(False, True))
    with pytest.raises(Exception, match=r"row 1, column 0 \('a'\): NaN is not allowed .*'a' may not be missing"):
        only_b.parse(call.id, call.inputs, call.outputs)


@pytest.mark.parametrize("raw", [False, True])
def test_string_labels_answer_over_grpc_as_utf8_bytes(raw):
    """A string label (str in the Answer) goes out as UTF-8 in bytes_contents or the raw buffer, through
    the fast path's encoder and MLServer's converter alike (which refuses str in bytes_contents)."""
    from mlserver.grpc.converters import ModelInferResponseConverter

    from runtime.core.call import Answer
    from runtime.core.response import EncodedOutput
    from runtime.integration import fast_path_grpc

    answer = Answer("m", "1", [EncodedOutput("predict", [2], "BYTES", ["churn", "señal"])], {}, ())
    expected = [b"churn", "señal".encode()]
    for built in (
        fast_path_grpc._response(answer, "req-1", raw=raw),
        ModelInferResponseConverter.from_types(v2.response(answer), use_raw=raw),
    ):
        if raw:
            assert built.raw_output_contents[0] == b"".join(len(v).to_bytes(4, "little") + v for v in expected)
        else:
            assert list(built.outputs[0].contents.bytes_contents) == expected


@pytest.mark.parametrize(
    "datatype, data",
    [("INT64", [0, -3]), ("FP64", [0.5, -0.0]), ("FP64", [0.25] * 9), ("BYTES", ["churn", "señal"]), ("INT32", [7])],
)
def test_the_fast_paths_output_contents_are_mlservers_converters(datatype, data):
    from mlserver.grpc.converters import InferTensorContentsConverter
    from mlserver.types import Datatype

    from runtime.integration import fast_path_grpc

    expected = InferTensorContentsConverter.from_types(v2.wire_data(datatype, data), datatype=Datatype(datatype))
    assert fast_path_grpc._contents(data, datatype).SerializeToString() == expected.SerializeToString()
