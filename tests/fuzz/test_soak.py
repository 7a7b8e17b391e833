"""A short soak (about 10 s, 8 concurrent clients, REST and gRPC, good and bad requests): every good
request answered correctly, every bad one refused with its client error, the server still ready,
and its resident memory flat in the second half. The 60 s run is `python -m bench.soak --seconds 60`.
"""

from __future__ import annotations

import os

import pytest

from harness import soak

SECONDS = float(os.environ.get("SOAK_SECONDS", "10"))
MAX_SECOND_HALF_GROWTH_MB = 10.0


@pytest.mark.timeout(180)
def test_short_soak_has_no_errors_and_flat_memory(server):
    result = soak.run_soak(server, seconds=SECONDS, clients=8, warmup=2.0, seed=1)
    print("\n" + soak.table(result))
    assert result["good_requests"] > 0 and result["bad_requests"] > 0, result["rows"]
    assert {r["protocol"] for r in result["rows"]} == {"rest", "grpc"}, result["rows"]
    assert result["good_errors"] == 0, "\n".join(result["error_examples"])
    assert result["bad_errors"] == 0, "\n".join(result["error_examples"])
    assert not result["stuck_clients"], result["stuck_clients"]
    assert result["server_healthy_after"], result["health_note"]
    growth = result["rss_mb"]["second_half_growth"]
    assert growth < MAX_SECOND_HALF_GROWTH_MB, (
        f"server RSS grew {growth} MB in the second half of the soak: {result['rss_samples']}"
    )
