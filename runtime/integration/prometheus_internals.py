"""prometheus_client's private per-child state that the runtime's metrics read.

runtime.observation.metrics records a request's histogram observations and prediction counts
through each child's own bucket bounds, bucket values, sum and value (`observer`, `incrementer`,
`observe_many`), not through `observe`/`inc` and their per-call checks. It falls back to those
calls when a child lacks them, so a prometheus_client release that renamed them would still count
right, only slower and without a word: here each is a point, so the start fails instead, naming it.
"""

from __future__ import annotations

from runtime.integration.patching import read_point
from runtime.observation.metrics import COUNTER_VALUE, HISTOGRAM_STATE

# Each attribute runtime.observation.metrics reads: its class, the method that sets it on a child, what it is.
_STATE = {
    "_upper_bounds": ("Histogram", "_prepare_buckets", "a histogram child's bucket bounds, bisected once"),
    "_buckets": ("Histogram", "_metric_init", "a histogram child's bucket values, incremented directly"),
    "_sum": ("Histogram", "_metric_init", "a histogram child's sum, incremented directly"),
    "_value": ("Counter", "_metric_init", "a counter child's value, incremented directly"),
}

PATCHES = [
    read_point(
        f"prometheus_client.metrics:{owner}.{name}",
        f"{what} (runtime.observation.metrics)",
        "prometheus/client_python#733, #1124 (declined: a bulk observe)",
        "the runtime's metrics pay prometheus_client's per-call checks on every request",
        set_by=set_by,
    )
    for name in (*HISTOGRAM_STATE, COUNTER_VALUE)
    for owner, set_by, what in [_STATE[name]]
]
