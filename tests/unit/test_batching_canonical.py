"""The canonical form a validated request joins MLServer's adaptive batch in
(runtime.integration.batching.canonical_request): the same features once parsed again."""

from __future__ import annotations

import pandas as pd
import pytest
from mlserver.types import InferenceRequest, RequestInput

from runtime.core.contract import Contract, Tensor
from runtime.integration import v2
from runtime.integration.batching import canonical_request

NUMERIC = Contract(("age", "income"), ("predict",), max_rows=10, may_be_missing=(False, True))
MIXED = Contract(("age", "city"), ("predict",), max_rows=10, may_be_missing=(True, True), string_columns=(False, True))


@pytest.mark.parametrize(
    "contract,inputs,names",
    [
        (NUMERIC, [Tensor("age", [2], "INT64", [30, 40]), Tensor("income", [2], "FP64", [1.5, None])], ["features"]),
        (
            MIXED,
            [Tensor("age", [2, 1], "FP32", [[None], [4.0]]), Tensor("city", [2, 1], "BYTES", [["paris"], [None]])],
            ["age", "city"],
        ),
    ],
    ids=["numeric: one [N, F] matrix", "string columns: one tensor per column"],
)
def test_the_canonical_form_parses_to_the_same_features(contract, inputs, names):
    parsed = contract.parse("r-1", inputs)
    payload = InferenceRequest(
        id="r-1", inputs=[RequestInput(name=t.name, shape=t.shape, datatype=t.datatype, data=t.data) for t in inputs]
    )
    canonical = canonical_request(payload, parsed, contract)
    assert [i.name for i in canonical.inputs] == names and canonical.id == "r-1"
    call = v2.call(canonical)
    again = contract.parse(call.id, call.inputs, call.outputs).features
    assert again.dtype == parsed.features.dtype and again.shape == parsed.features.shape
    assert pd.DataFrame(again).equals(pd.DataFrame(parsed.features)), (again, parsed.features)  # NaN equals NaN
