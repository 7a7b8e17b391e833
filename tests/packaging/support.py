"""What both packaging suites compare a served answer with: the pipeline's own, output by output."""

from __future__ import annotations

import numpy as np

RTOL, ATOL = 1e-9, 1e-12


def assert_same_output(label: str, output: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Floats within RTOL/ATOL of scikit-learn's, labels exactly equal, the same shape."""
    assert got.shape == expected.shape, (label, output, got.shape, expected.shape)
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=f"{label} {output}")
    else:
        assert got.tolist() == expected.tolist(), (label, output)
