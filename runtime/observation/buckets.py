"""The histogram bucket bounds of the stage timings: the one copy the metrics and the rollout
rehearsal's verdict tests both read (this module imports nothing, so a test reads it without loading
the metric families)."""

SECONDS_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
