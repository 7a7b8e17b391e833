"""The Open Inference Protocol's numeric datatypes and their numpy dtypes: the one table.

The contract, the gRPC decoder, the tests and the benchmarks all read it from here.
"""

from __future__ import annotations

import numpy as np

NUMERIC_DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype)
    for name, dtype in {
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
    }.items()
}
NUMERIC_HINT = "use a numeric datatype (FP16/FP32/FP64, INT8..INT64, UINT8..UINT64)"


def v2_name(dtype: np.dtype) -> str:
    """'FP32' for float32: the V2 name of a numpy dtype from the table."""
    return next(k for k, v in NUMERIC_DATATYPES.items() if v == dtype)
