"""runtime.allocator: a process that allocates and frees a large request's worth of memory again and
again faults its pages in once, not on every request. Measured in a fresh interpreter, whose
allocator nothing else has set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.allocator import OPERATOR_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
# A large request's transient blocks (body, a padded copy, a numbers buffer), allocated and freed
# 50 times: the page faults per round, after a warm-up.
_ROUNDS = """
import json, resource, sys
from runtime.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def request():
    blocks = [bytes(2_000_000), bytearray(2_100_000), bytes(800_000)]
    del blocks
for _ in range(3):
    request()
before = faults()
for _ in range(50):
    request()
print(json.dumps({"kept": kept, "faults": (faults() - before) / 50}))
"""


def _rounds(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in OPERATOR_SETTINGS}
    out = subprocess.run(
        [sys.executable, "-c", _ROUNDS, mode],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_for_the_next_large_request():
    default, kept = _rounds("default"), _rounds("keep")
    assert kept["kept"] is True
    # 4.9 MB a round is ~1,200 pages: faulted in every round by default, about none once kept.
    assert default["faults"] > 500
    assert kept["faults"] < 50


def test_the_operators_own_allocator_setting_wins():
    assert _rounds("keep", MALLOC_TOP_PAD_="0")["kept"] is False
