"""Open Inference Protocol V2 requests and responses, client side: JSON tensors for REST and
ModelInferRequest protos (tritonclient's generated module, imported only when a proto is built,
so a process that never builds one registers no V2 protobuf symbols).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.models import DIABETES, assert_parity, default_pipeline, sample_rows
from runtime.core.datatypes import NUMERIC_DATATYPES

if TYPE_CHECKING:
    import requests

REQUEST_TIMEOUT_S = 60.0

# datatype -> InferTensorContents field (FP16 has none: raw_input_contents only)
GRPC_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def raw_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of `datatype` in raw_input/output_contents: always little-endian."""
    return NUMERIC_DATATYPES[datatype].newbyteorder("<")


def pb() -> Any:
    """tritonclient's generated V2 messages (service_pb2; untyped, hence Any)."""
    from tritonclient.grpc import service_pb2

    return service_pb2


# ------------------------------------------------------------------------------ REST (JSON)


def rest_infer_path(model: str, version: str | None = None) -> str:
    if version is None:
        return f"/v2/models/{model}/infer"
    return f"/v2/models/{model}/versions/{version}/infer"


def json_tensor(name: str, x: np.ndarray, datatype: str = "FP64", flat: bool = False) -> dict[str, Any]:
    """A JSON input tensor; `data` nested like the array, or flat (row-major) with `flat`."""
    x = np.asarray(x)
    data = [v.item() for v in x.ravel()] if flat else x.tolist()
    return {"name": name, "shape": list(x.shape), "datatype": datatype, "data": data}


def rest_outputs(resp_json: dict[str, Any]) -> dict[str, np.ndarray]:
    """Output name -> numpy array shaped as the response declares."""
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp_json["outputs"]}


# ------------------------------------------------------------------------------ gRPC (protos)


def pb_tensor(
    name: str, shape: list[int], datatype: str, values: Iterable[Any] | None = None, field_name: str | None = None
) -> Any:
    """An InferInputTensor; `values` go to the datatype's typed contents field (or `field_name`)."""
    t = pb().ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if values is not None:
        getattr(t.contents, field_name or GRPC_CONTENTS_FIELD[datatype]).extend(list(values))
    return t


def pb_request(
    model: str, inputs: list[Any], version: str = "", outputs: Iterable[str] = (), raw: list[bytes] | None = None
) -> Any:
    req = pb().ModelInferRequest(model_name=model, model_version=version)
    req.inputs.extend(inputs)
    for o in outputs:
        req.outputs.add(name=o)
    if raw:
        req.raw_input_contents.extend(raw)
    return req


def pb_2d_request(model: str, x: np.ndarray, version: str = "", outputs: Iterable[str] = (), name: str = "X") -> Any:
    """One FP64 [N, F] tensor in typed fp64_contents."""
    x = np.asarray(x, dtype=np.float64)
    return pb_request(
        model, [pb_tensor(name, list(x.shape), "FP64", x.ravel().tolist())], version=version, outputs=outputs
    )


def pb_outputs(resp: Any) -> dict[str, np.ndarray]:
    """A ModelInferResponse's outputs (typed contents or raw_output_contents) as numpy arrays."""
    out: dict[str, np.ndarray] = {}
    for i, o in enumerate(resp.outputs):
        if resp.raw_output_contents:
            arr = np.frombuffer(resp.raw_output_contents[i], dtype=raw_dtype(o.datatype))
        else:
            values = list(getattr(o.contents, GRPC_CONTENTS_FIELD[o.datatype]))
            arr = np.asarray(values, dtype=NUMERIC_DATATYPES.get(o.datatype))
        out[o.name] = arr.reshape(list(o.shape))
    return out


# ------------------------------------------------------------------------------ "a good request still works"

GOOD_ROWS = 3


def _good_rows() -> tuple[np.ndarray, np.ndarray]:
    x = sample_rows(DIABETES, GOOD_ROWS, offset=7)
    return x, default_pipeline(DIABETES).predict(x)


def good_rest_request_works(http_url: str, session: requests.Session | None = None) -> None:
    """A known-good REST request to diabetes answers 200 with the pipeline's predictions."""
    import requests

    x, expected = _good_rows()
    resp = (session or requests).post(
        f"{http_url}{rest_infer_path(DIABETES)}", json={"inputs": [json_tensor("X", x)]}, timeout=REQUEST_TIMEOUT_S
    )
    assert resp.status_code == 200, f"good request: {resp.status_code} {resp.text[:500]}"
    assert_parity(rest_outputs(resp.json())["predict"], expected)


def good_grpc_request_works(stub: Any) -> None:
    """The same over gRPC, through a GRPCInferenceServiceStub (an error raises grpc.RpcError)."""
    x, expected = _good_rows()
    resp = stub.ModelInfer(pb_2d_request(DIABETES, x), timeout=REQUEST_TIMEOUT_S)
    assert_parity(pb_outputs(resp)["predict"], expected)
