"""The response side: what outputs a model offers (for metadata) and how results are encoded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlserver.types import InferenceResponse, MetadataTensor, Parameters, ResponseOutput

from runtime.artifacts import Manifest
from runtime.predictor import PREDICT, PREDICT_PROBA, offered_outputs

INPUT_NAME = "features"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    datatype: str  # V2 datatype of the encoded tensor
    width: int  # 0 for a 1-D output [N], else the second dimension


def output_specs(manifest: Manifest) -> dict[str, OutputSpec]:
    """How each output the predictor offers for this version is encoded."""
    classifier = manifest.kind == "classifier"
    specs = {
        # Classifiers predict class labels; regressors predict values.
        PREDICT: OutputSpec(PREDICT, "INT64" if classifier else "FP64", 0),
        PREDICT_PROBA: OutputSpec(PREDICT_PROBA, "FP64", len(manifest.classes or [])),
    }
    return {name: specs[name] for name in offered_outputs(manifest)}


def input_metadata(manifest: Manifest) -> list[MetadataTensor]:
    return [
        MetadataTensor(
            name=INPUT_NAME,
            datatype="FP64",
            shape=[-1, manifest.n_features],
            # A string, not a list: MLServer drops list parameters from gRPC metadata.
            parameters=Parameters(feature_names=",".join(manifest.feature_names)),
        )
    ]


def output_metadata(specs: dict[str, OutputSpec]) -> list[MetadataTensor]:
    return [
        MetadataTensor(name=s.name, datatype=s.datatype, shape=[-1, s.width] if s.width else [-1])
        for s in specs.values()
    ]


def encode_response(
    model_name: str,
    model_version: str,
    results: dict[str, np.ndarray],
    specs: dict[str, OutputSpec],
) -> InferenceResponse:
    outputs = []
    for name, values in results.items():
        spec = specs[name]
        outputs.append(
            ResponseOutput(
                name=name,
                shape=list(values.shape),
                datatype=spec.datatype,
                # Flat data: valid V2 for any shape, and the cheapest form to serialise.
                data=values.ravel().tolist(),
            )
        )
    return InferenceResponse(model_name=model_name, model_version=model_version, outputs=outputs)
