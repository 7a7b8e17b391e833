"""What a request must pass, and how a model's own failures are contained: bearer tokens (auth), the
repository lock (admin), admission before the model (admission: deadlines, in-flight cap, rate
limit), the circuit breaker and fallback budget (breaker, resilience), and the graceful drain
(drain)."""
