"""MLServer's V2 types <-> the runtime core's plain tensors, outputs and errors.

The core (contract, predictor, response, ood, errors) knows no MLServer; the adapter and the
integration package convert at the edge with these functions, once per request.
"""

from __future__ import annotations

import json
from typing import Any

from mlserver.errors import MLServerError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    Parameters,
    ResponseOutput,
)
from opentelemetry.context import Context

from runtime.core.call import Answer, Call
from runtime.core.contract import Tensor
from runtime.core.errors import PipelineError
from runtime.core.ood import FLAGS_PARAMETER
from runtime.core.response import TensorDescription
from runtime.features.entities import SOURCES_PARAMETER

# The model metadata parameter naming a classifier's labels in the order of predict_proba's columns.
CLASSES_PARAMETER = "classes"
# ... and naming how the answers are computed and what they were checked against at load.
PREDICTION_PATH_PARAMETER = "prediction_path"


class RuntimeRequestError(MLServerError):
    """A runtime error with its status, in the type MLServer turns into a response: REST
    {"error": message} with the status, gRPC the status's code with the message as details."""

    def __init__(self, msg: str, status: int = 500):
        super().__init__(msg, status)

    def __reduce__(self):
        # Crosses to and from parallel workers by pickle: keep the status.
        return (type(self), (str(self), self.status_code))


def as_mlserver_error(error: PipelineError) -> RuntimeRequestError:
    return RuntimeRequestError(str(error), error.status)


def call(request: InferenceRequest, parent: Context | None = None) -> Call:
    """MLServer's request as the runtime's Call (the DataPlane has given it an id)."""
    parameters = request.parameters
    return Call(
        id=request.id or "",
        # REST inputs carry a Datatype enum, gRPC ones (runtime.integration.grpc_service) a str.
        inputs=[Tensor(i.name, i.shape, getattr(i.datatype, "value", i.datatype), i.data.root) for i in request.inputs],
        outputs=[o.name for o in request.outputs] if request.outputs else [],
        ood_flags=getattr(parameters, FLAGS_PARAMETER, None),
        feature_sources=getattr(parameters, SOURCES_PARAMETER, None),
        headers=parameters.headers if parameters is not None else None,
        parent=parent,
    )


def response(answer: Answer) -> InferenceResponse:
    """The Answer as MLServer's response; its parameters are strings (MLServer drops list
    parameters over gRPC). Its headers go where MLServer's endpoints take response headers from
    (`parameters.headers`, which its inference middleware adds the CloudEvents headers to)."""
    built = InferenceResponse(
        model_name=answer.model_name,
        model_version=answer.model_version,
        outputs=[
            ResponseOutput(name=o.name, shape=o.shape, datatype=o.datatype, data=wire_data(o.datatype, o.data))
            for o in answer.outputs
        ],
    )
    if answer.headers:
        built.parameters = Parameters(**answer.parameters, headers=dict(answer.headers))
    elif answer.parameters:
        built.parameters = Parameters(**answer.parameters)
    return built


def wire_data(datatype: str, data: list[Any]) -> list[Any]:
    """A tensor's values as MLServer's own codecs give them: a BYTES tensor (string labels, str in an
    Answer) as UTF-8 bytes, which MLServer's gRPC converter requires and its REST renders as str."""
    if datatype != "BYTES":
        return data
    return [v.encode("utf-8") if isinstance(v, str) else v for v in data]


def metadata(description: TensorDescription) -> MetadataTensor:
    return MetadataTensor(
        name=description.name,
        datatype=description.datatype,
        shape=description.shape,
        parameters=Parameters(**description.parameters) if description.parameters else None,
    )


def with_classes(described: MetadataModelResponse, classes: list[int] | list[str] | None) -> MetadataModelResponse:
    """The model metadata with the classifier's labels, in the order of its predict_proba columns,
    as a JSON string: V2 metadata parameters are scalars (MLServer drops a list over gRPC), and
    JSON keeps integer labels apart from string ones."""
    if classes is None:
        return described
    return _with_parameter(described, CLASSES_PARAMETER, json.dumps(classes))


def with_prediction_path(described: MetadataModelResponse, path: str) -> MetadataModelResponse:
    """The model metadata with its prediction path (already a JSON string, for the same reason)."""
    return _with_parameter(described, PREDICTION_PATH_PARAMETER, path)


def _with_parameter(described: MetadataModelResponse, name: str, value: str) -> MetadataModelResponse:
    kept = described.parameters.model_dump(exclude_none=True) if described.parameters else {}
    return described.model_copy(update={"parameters": Parameters(**{**kept, name: value})})
