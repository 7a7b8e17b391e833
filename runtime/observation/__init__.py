"""What the runtime tells its operators: Prometheus metrics (metrics), JSON-lines logs (logs), and the
per-request observation that times the stages, counts the outcome, logs the line and opens the
spans (observer)."""
