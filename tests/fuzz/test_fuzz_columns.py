"""Property-based fuzzing of a model with string columns and gaps (harness.mixed_model, served beside
the shipped models): per-column V2 requests over REST and gRPC, and /predict records. A valid request
(gaps and unseen categories where the schema allows them, [N] or [N, 1] columns, any numeric datatype,
raw or typed gRPC contents) is answered 200 / OK with the pipeline's own answers; an invalid one (a
wrong datatype, text in a numeric column, a number or null in a string one, bytes that are not UTF-8,
a wrong shape, a missing, extra or repeated column, an unseen category where refused) is refused
4xx / INVALID_ARGUMENT with the contract's message; the same over REST in V2's binary extension, where a
broken binary body is a 400 too. Never a 5xx, never a hang (harness/fuzz.py).

Fewer examples than test_fuzz.py's (the catalogue is smaller): FUZZ_COLUMN_EXAMPLES=<n> overrides.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import strategies as st

from harness import fuzz as fs
from harness import strategies as S

EXAMPLES = int(os.environ.get("FUZZ_COLUMN_EXAMPLES", 250))


def _fuzz(session: fs.FuzzSession, protocol: str, strategy: st.SearchStrategy[S.AnyCase]) -> None:
    stats = session.fuzz(protocol, strategy, EXAMPLES)
    # Both kinds of case reached the server and were judged (hypothesis drew each often).
    for expect in (S.OK, S.REJECT):
        assert sum(n for (p, e, _), n in stats.outcomes.items() if (p, e) == (protocol, expect)) >= EXAMPLES // 5


@pytest.mark.timeout(600)
def test_rest_column_requests_get_the_pipelines_answer_or_the_contracts_refusal(fuzz):
    _fuzz(fuzz, "rest", S.mixed_rest_cases())


@pytest.mark.timeout(600)
def test_grpc_column_requests_get_the_pipelines_answer_or_the_contracts_refusal(fuzz):
    _fuzz(fuzz, "grpc", S.mixed_grpc_cases())


@pytest.mark.timeout(600)
def test_predict_records_get_the_pipelines_answer_or_the_contracts_refusal(fuzz):
    _fuzz(fuzz, "rest", S.legacy_mixed_cases())


@pytest.mark.timeout(600)
def test_binary_column_requests_get_the_pipelines_answer_or_a_refusal_naming_the_input(fuzz):
    """V2's binary extension (runtime.edge.binary): BYTES length-prefixed, gaps NaN, some columns in
    JSON; broken sizes, offsets past the end, header lengths past the body, stray bytes."""
    _fuzz(fuzz, "rest", S.mixed_binary_cases())
