"""The response side: what outputs a model offers, how they are described in metadata and how
results are encoded as V2 tensors (plain data; the adapter wraps them in MLServer's types)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.core.artifacts import InputColumn, Manifest
from runtime.core.outputs import DECISION_FUNCTION, PREDICT, PREDICT_PROBA, offered_outputs

INPUT_NAME = "features"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    datatype: str  # V2 datatype of the encoded tensor
    width: int  # 0 for a 1-D output [N], else the second dimension


@dataclass(frozen=True)
class TensorDescription:
    """One tensor of the model's V2 metadata."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedOutput:
    """One V2 output tensor, ready to serialise."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


def output_specs(manifest: Manifest) -> dict[str, OutputSpec]:
    """How each output the predictor offers for this version is encoded."""
    n_classes = len(manifest.classes or [])
    if manifest.kind == "regressor":
        label = "FP64"
    else:  # class labels: integers, or strings as BYTES
        label = "BYTES" if manifest.string_labels else "INT64"
    specs = {
        PREDICT: OutputSpec(PREDICT, label, 0),
        PREDICT_PROBA: OutputSpec(PREDICT_PROBA, "FP64", n_classes),
        # One score per row for two classes, one per class otherwise (scikit-learn's shapes).
        DECISION_FUNCTION: OutputSpec(DECISION_FUNCTION, "FP64", n_classes if n_classes > 2 else 0),
    }
    return {name: specs[name] for name in offered_outputs(manifest)}


def input_descriptions(manifest: Manifest) -> list[TensorDescription]:
    """One [N, F] FP64 tensor when every column is numeric (one [N] tensor per column is taken too);
    else one [N] tensor per column, BYTES for a string column."""
    if manifest.has_strings:
        return [_column_description(c) for c in manifest.columns]
    # Strings, not lists: MLServer drops list parameters from gRPC metadata.
    parameters = {"feature_names": ",".join(manifest.feature_names)}
    gaps = [c.name for c in manifest.columns if c.missing]
    if gaps:  # which columns take null / NaN (per column, as a string column's tensor says it)
        parameters["may_be_missing"] = ",".join(gaps)
    return [TensorDescription(INPUT_NAME, "FP64", [-1, manifest.n_features], parameters)]


def _column_description(column: InputColumn) -> TensorDescription:
    parameters: dict[str, Any] = {"may_be_missing": column.missing}
    if column.categories is not None:
        # A JSON string, not a list: MLServer drops list parameters from gRPC metadata.
        parameters["categories"] = json.dumps(column.categories)
        parameters["unseen"] = column.unseen
    return TensorDescription(column.name, "BYTES" if column.kind == "string" else "FP64", [-1], parameters)


def output_descriptions(specs: dict[str, OutputSpec]) -> list[TensorDescription]:
    return [TensorDescription(s.name, s.datatype, [-1, s.width] if s.width else [-1]) for s in specs.values()]


def encode_outputs(results: dict[str, np.ndarray], specs: dict[str, OutputSpec]) -> list[EncodedOutput]:
    # Flat data: valid V2 for any shape, and the cheapest form to serialise.
    return [
        EncodedOutput(name, list(values.shape), specs[name].datatype, values.ravel().tolist())
        for name, values in results.items()
    ]
