"""The runtime's own knobs, read from `parameters.extra` in model-settings.json."""

from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.artifacts import LoadPolicy
from runtime.errors import ArtifactError, validation_problems

DEFAULT_MAX_ROWS = 10_000
# 4 training standard deviations: the training data itself goes beyond it rarely (0.02% of the
# diabetes values, 0.4% of the heavier-tailed breast-cancer ones), so in-distribution traffic
# leaves the out-of-distribution counts near zero.
DEFAULT_OOD_Z_THRESHOLD = 4.0


class AdmissionOptions(BaseModel):
    """What the server process checks before a request reaches the model (runtime.admission).

    Read from the same `parameters.extra` in the process hosting the REST/gRPC servers, which
    with parallel workers never runs `load()`; unknown keys are ignored here and refused by
    `RuntimeOptions` at load.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    max_in_flight: int = Field(
        0,
        ge=0,
        description="Requests this model may have in flight; more are refused at once with 503 / "
        "gRPC UNAVAILABLE. 0: no cap.",
    )
    request_timeout_ms: Optional[float] = Field(
        None,
        gt=0,
        description="Default deadline of a request, from its arrival; an X-Request-Timeout-Ms header "
        "(gRPC metadata x-request-timeout-ms) replaces it per request. Work whose deadline passed "
        "before it starts is refused with 504 / gRPC DEADLINE_EXCEEDED. null: no default.",
    )
    offload_compute: Optional[bool] = Field(
        None,
        description="Run the computation on one dedicated thread, so that the event loop keeps "
        "accepting, counting and refusing requests meanwhile. null (auto): on when max_in_flight or "
        "request_timeout_ms is set (without it, parallel_workers 0 serialises requests before "
        "anything can count them), off otherwise (saves the thread hop).",
    )
    rate_limit_per_s: Optional[float] = Field(
        None,
        gt=0,
        description="Requests a second each client may send this model on average (a token bucket "
        "per client: its bearer token, else its address); more get 429 / gRPC RESOURCE_EXHAUSTED "
        "with a Retry-After hint. null: no limit.",
    )
    rate_limit_burst: Optional[int] = Field(
        None,
        ge=1,
        description="Requests a client may send at once before the rate applies; default: the "
        "rate rounded up.",
    )
    auth_token_file: Optional[str] = Field(
        None,
        description="Require `Authorization: Bearer <token>` for inference; tokens are the non-empty "
        "lines of this file (re-read when it changes). Overrides PIPELINE_AUTH_TOKEN_FILE / "
        "PIPELINE_AUTH_TOKENS for this model.",
    )
    auth_token_env: Optional[str] = Field(
        None,
        description="Like auth_token_file, with the tokens (comma-separated) in this environment "
        "variable.",
    )

    @property
    def burst(self) -> int:
        return self.rate_limit_burst or max(1, math.ceil(self.rate_limit_per_s or 1))

    @property
    def offload(self) -> bool:
        if self.offload_compute is not None:
            return self.offload_compute
        return bool(self.max_in_flight) or self.request_timeout_ms is not None


class RuntimeOptions(AdmissionOptions):
    # Unknown keys are refused so a misspelt option fails the load instead of being ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int = Field(DEFAULT_MAX_ROWS, ge=1, description="Row cap per request.")
    ood_z_threshold: Optional[float] = Field(
        DEFAULT_OOD_Z_THRESHOLD,
        gt=0,
        description="A value further than this many training standard deviations from the training "
        "mean counts as out of distribution; null checks the training range only.",
    )
    trusted_types: list[str] = Field(
        default_factory=list,
        description="Types a skops artifact may contain beyond the runtime's trusted list (full "
        "import paths). Only for artifacts whose author you trust.",
    )
    allow_sklearn_version_mismatch: bool = Field(
        False,
        description="Load artifacts trained with another scikit-learn minor version (logged as a "
        "warning) instead of refusing them.",
    )

    fallback_model: Optional[str] = Field(
        None,
        description="Another model of this server (by name) that answers when this one fails with "
        "an internal error, its circuit breaker is open, or it is slower than fallback_budget_ms. "
        "A client's mistake is never rescued: it stays a 400.",
    )
    fallback_budget_ms: Optional[float] = Field(
        None, gt=0, description="How long this model may compute before the fallback answers instead."
    )
    breaker_failure_ratio: Optional[float] = Field(
        None,
        gt=0,
        le=1,
        description="Open the circuit breaker when this share of the last breaker_window calls "
        "failed (internal errors, over budget); while open, requests go to the fallback or get a "
        "fast 503. null: no breaker.",
    )
    breaker_window: int = Field(20, ge=1, description="Calls the failure ratio is taken over.")
    breaker_min_calls: int = Field(10, ge=1, description="Calls in the window before it may open.")
    breaker_open_s: float = Field(10.0, gt=0, description="Seconds open before half-open probes.")
    breaker_probes: int = Field(3, ge=1, description="Successful probes that close it again.")

    shadow_model: Optional[str] = Field(
        None,
        description="Another model of this server (by name) evaluated on a sample of this model's "
        "requests off the request path and compared with it; its answers never reach a caller.",
    )
    shadow_sample_rate: float = Field(1.0, gt=0, le=1, description="Share of requests shadowed.")
    shadow_queue: int = Field(1000, ge=1, description="Requests waiting for the shadow; more are dropped.")
    shadow_window: int = Field(1000, ge=10, description="Predictions PSI and KS are computed over.")

    @classmethod
    def from_extra(cls, extra: Optional[dict[str, Any]]) -> "RuntimeOptions":
        try:
            return cls.model_validate(extra or {})
        except ValidationError as exc:
            raise ArtifactError(f"invalid parameters.extra: {validation_problems(exc)}") from None

    def load_policy(self) -> LoadPolicy:
        return LoadPolicy(
            extra_trusted_types=tuple(self.trusted_types),
            allow_sklearn_version_mismatch=self.allow_sklearn_version_mismatch,
        )
