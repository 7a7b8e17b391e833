"""MLServer's V2 types <-> the runtime core's plain tensors, outputs and errors.

The core (contract, predictor, response, ood, errors) knows no MLServer; the adapter and the
integration package convert at the edge with these functions, once per request.
"""

from __future__ import annotations

from typing import Any, Optional

from mlserver.errors import MLServerError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    Parameters,
    ResponseOutput,
)

from runtime.contract import Tensor
from runtime.errors import PipelineError
from runtime.response import EncodedOutput, TensorDescription


class RuntimeRequestError(MLServerError):
    """A runtime error with its status, in the type MLServer turns into a response: REST
    {"error": message} with the status, gRPC the status's code with the message as details."""

    def __init__(self, msg: str, status: int = 500):
        super().__init__(msg, status)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Crosses to and from parallel workers by pickle: keep the status.
        return (type(self), (str(self), self.status_code))


def as_mlserver_error(error: PipelineError) -> RuntimeRequestError:
    return RuntimeRequestError(str(error), error.status)


def tensors(request: InferenceRequest) -> list[Tensor]:
    return [
        # REST inputs carry a Datatype enum, gRPC ones (runtime.integration.grpc_service) a str.
        Tensor(i.name, i.shape, getattr(i.datatype, "value", i.datatype), i.data.root)
        for i in request.inputs
    ]


def output_names(request: InferenceRequest) -> list[str]:
    return [o.name for o in request.outputs] if request.outputs else []


def request_parameter(request: InferenceRequest, name: str) -> Any:
    return getattr(request.parameters, name, None) if request.parameters is not None else None


def headers(request: InferenceRequest) -> Optional[dict[str, str]]:
    return request.parameters.headers if request.parameters is not None else None


def response(
    model_name: str, model_version: str, outputs: list[EncodedOutput], parameters: dict[str, Optional[str]]
) -> InferenceResponse:
    """`parameters`: the ones that are not None, each one JSON string (MLServer drops list
    parameters over gRPC)."""
    built = InferenceResponse(
        model_name=model_name,
        model_version=model_version,
        outputs=[
            ResponseOutput(name=o.name, shape=o.shape, datatype=o.datatype, data=o.data)
            for o in outputs
        ],
    )
    present = {k: v for k, v in parameters.items() if v is not None}
    if present:
        built.parameters = Parameters(**present)
    return built


def metadata(description: TensorDescription) -> MetadataTensor:
    return MetadataTensor(
        name=description.name,
        datatype=description.datatype,
        shape=description.shape,
        parameters=Parameters(**description.parameters) if description.parameters else None,
    )


def served_by(response: InferenceResponse, model: str, reason: str) -> InferenceResponse:
    """Mark a fallback's answer: which model served it, and why the requested one did not."""
    if response.parameters is None:
        response.parameters = Parameters()
    response.parameters.served_by = model  # type: ignore[attr-defined]
    response.parameters.fallback_reason = reason  # type: ignore[attr-defined]
    return response
