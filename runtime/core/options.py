"""The runtime's own knobs, read from `parameters.extra` in model-settings.json."""

from __future__ import annotations

import json
import math
import re
import weakref
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runtime.core.artifacts import LoadPolicy
from runtime.core.errors import ArtifactError, validation_problems

DEFAULT_MAX_ROWS = 10_000
# 4 training standard deviations: the training data itself goes beyond it rarely (the shares are in
# docs/operations.md, "Out-of-distribution counts"), so in-distribution traffic leaves the
# out-of-distribution counts near zero.
DEFAULT_OOD_Z_THRESHOLD = 4.0


class AdmissionOptions(BaseModel):
    """What the server process checks before a request reaches the model (runtime.policy.admission).

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
    request_timeout_ms: float | None = Field(
        None,
        gt=0,
        description="Default deadline of a request, from its arrival; an X-Request-Timeout-Ms header "
        "(gRPC metadata x-request-timeout-ms) replaces it per request. Work whose deadline passed "
        "before it starts is refused with 504 / gRPC DEADLINE_EXCEEDED. null: no default.",
    )
    offload_compute: bool | None = Field(
        None,
        description="Run the computation on one dedicated thread, so that the event loop keeps "
        "accepting, counting and refusing requests meanwhile. null (auto): on when max_in_flight or "
        "request_timeout_ms is set (without it, parallel_workers 0 serialises requests before "
        "anything can count them), off otherwise (saves the thread hop).",
    )
    rate_limit_per_s: float | None = Field(
        None,
        gt=0,
        description="Requests a second each client may send this model on average (a token bucket "
        "per client: its bearer token, else its address); more get 429 / gRPC RESOURCE_EXHAUSTED "
        "with a Retry-After hint. null: no limit.",
    )
    rate_limit_burst: int | None = Field(
        None,
        ge=1,
        description="Requests a client may send at once before the rate applies; default: the rate rounded up.",
    )
    auth_token_file: str | None = Field(
        None,
        description="Require `Authorization: Bearer <token>` for inference; tokens are the non-empty "
        "lines of this file (re-read when it changes). Overrides PIPELINE_AUTH_TOKEN_FILE / "
        "PIPELINE_AUTH_TOKENS for this model.",
    )
    auth_token_env: str | None = Field(
        None,
        description="Like auth_token_file, with the tokens (comma-separated) in this environment variable.",
    )

    @property
    def burst(self) -> int:
        return self.rate_limit_burst or max(1, math.ceil(self.rate_limit_per_s or 1))

    @property
    def offload(self) -> bool:
        if self.offload_compute is not None:
            return self.offload_compute
        return bool(self.max_in_flight) or self.request_timeout_ms is not None


# A table or column name as it may appear unquoted in SQL (the runtime quotes it anyway).
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class FeatureStoreOptions(BaseModel):
    """Where a model looks up its features by entity id (runtime.features.store)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn_file: str | None = Field(
        None, description="File holding the libpq connection string (never the settings file itself)."
    )
    dsn_env: str | None = Field(None, description="Environment variable holding the connection string.")
    table: str = Field(description="Table (or schema.table) with one row per entity.")
    key_column: str = Field("entity_id", description="The entity id column (text).")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Feature name -> column, for features whose column is named differently; "
        "every other feature is read from the column of its own name.",
    )
    pool_min: int = Field(1, ge=0, description="Connections kept open.")
    pool_max: int = Field(4, ge=1, description="Connections at most (per server process).")
    pool_max_waiting: int = Field(
        16, ge=1, description="Lookups that may wait for a connection; more are refused with 503."
    )
    pool_max_lifetime_s: float = Field(1800.0, gt=0, description="A connection is replaced after this long.")
    pool_max_idle_s: float = Field(
        300.0, gt=0, description="An idle connection above pool_min is closed after this long."
    )
    pool_check: bool = Field(True, description="Check a connection (one empty round trip) before a lookup uses it.")
    connect_timeout_s: float = Field(2.0, gt=0, description="Per connection attempt.")
    reconnect_timeout_s: float = Field(
        2.0,
        gt=0,
        description="How long the pool retries a lost connection (backing off from 1 s) before "
        "giving up on it; the next lookup then starts a fresh attempt at once. Short keeps recovery "
        "within a few seconds of the database's return, whatever the length of the outage.",
    )
    lookup_timeout_ms: float = Field(
        50.0, gt=0, description="A whole lookup (waiting for a connection and the query); past it, 503."
    )
    cache_ttl_s: float = Field(30.0, ge=0, description="How long a fetched row is reused; 0: no cache.")
    cache_entries: int = Field(10_000, ge=1, description="Rows the cache holds at most.")
    max_ids: int = Field(1000, ge=1, description="Entity ids per request at most.")
    max_id_bytes: int = Field(128, ge=1, description="Longest entity id accepted (UTF-8 bytes).")
    defaults: dict[str, float | str] | None = Field(
        None,
        description="A value for every feature: an unknown id gets these (its row flagged) instead of a 400.",
    )
    on_unavailable: Literal["error", "defaults"] = Field(
        "error",
        description="error: 503 while the store is down; defaults: answer with `defaults` (rows flagged).",
    )
    breaker_failure_ratio: float = Field(0.5, gt=0, le=1, description="Failed lookups that open the breaker.")
    breaker_window: int = Field(20, ge=1, description="Lookups the failure ratio is taken over.")
    breaker_min_calls: int = Field(5, ge=1, description="Lookups in the window before it may open.")
    breaker_open_s: float = Field(2.0, gt=0, description="Seconds open before a half-open probe.")
    breaker_probes: int = Field(1, ge=1, description="Successful probes that close it again.")

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not all(_IDENTIFIER.match(part) for part in value.split(".")) or value.count(".") > 1:
            raise ValueError(f"{value!r} is not a table name (letters, digits, _; optionally schema.table)")
        return value

    @field_validator("key_column")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a column name")
        return value

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [c for c in value.values() if not _IDENTIFIER.match(c)]
        if bad:
            raise ValueError(f"not column names: {bad}")
        return value

    @model_validator(mode="after")
    def _one_dsn_and_complete_defaults(self) -> FeatureStoreOptions:
        if (self.dsn_file is None) == (self.dsn_env is None):
            raise ValueError("give exactly one of dsn_file and dsn_env")
        if self.on_unavailable == "defaults" and self.defaults is None:
            raise ValueError("on_unavailable 'defaults' needs defaults")
        return self

    def column(self, feature: str) -> str:
        return self.columns.get(feature, feature)


class RuntimeOptions(AdmissionOptions):
    # Unknown keys are refused so a misspelt option fails the load instead of being ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int = Field(DEFAULT_MAX_ROWS, ge=1, description="Row cap per request.")
    prediction_buckets: list[float] | None = Field(
        None,
        min_length=1,
        description="Upper edges of the buckets this regressor's predictions are counted in "
        "(pipeline_prediction_bucket_total), for comparing versions (rollout analyze): give a canary "
        "the stable version's edges. null: the deciles of the model's own predictions on its "
        "reference rows, fixed at load.",
    )
    fast_path: bool = Field(
        True,
        description="Serve this model's simple V2 REST requests past FastAPI "
        "(runtime.integration.fast_path); false: MLServer's own path for every request.",
    )
    ood_z_threshold: float | None = Field(
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

    fallback_model: str | None = Field(
        None,
        description="Another model of this server (by name) that answers when this one fails with "
        "an internal error, its circuit breaker is open, or it is slower than fallback_budget_ms. "
        "A client's mistake is never rescued: it stays a 400.",
    )
    fallback_budget_ms: float | None = Field(
        None, gt=0, description="How long this model may compute before the fallback answers instead."
    )
    breaker_failure_ratio: float | None = Field(
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

    shadow_model: str | None = Field(
        None,
        description="Another model of this server (by name) evaluated on a sample of this model's "
        "requests off the request path and compared with it; its answers never reach a caller.",
    )
    shadow_sample_rate: float = Field(1.0, gt=0, le=1, description="Share of requests shadowed.")
    shadow_queue: int = Field(
        5000, ge=1, description="Requests waiting for the shadow (a tick, 0.5 s, of 10,000 req/s); more are dropped."
    )
    shadow_window: int = Field(1000, ge=10, description="Predictions PSI and KS are computed over.")

    feature_store: FeatureStoreOptions | None = Field(
        None,
        description="Accept an `entity_id` BYTES input and look its features up in PostgreSQL "
        "(runtime.features.store); feature inputs sent beside it override the looked-up values.",
    )

    @classmethod
    def from_extra(cls, extra: dict[str, Any] | None) -> RuntimeOptions:
        """The options of these settings, shared by the models configured alike (frozen)."""
        key = (cls, json.dumps(extra or {}, sort_keys=True, default=repr))
        shared = _SHARED_OPTIONS.get(key)
        if shared is not None:
            return shared
        try:
            options = cls.model_validate(extra or {})
        except ValidationError as exc:
            raise ArtifactError(f"invalid parameters.extra: {validation_problems(exc)}") from None
        _SHARED_OPTIONS[key] = options
        return options

    def load_policy(self) -> LoadPolicy:
        return LoadPolicy(
            extra_trusted_types=tuple(self.trusted_types),
            allow_sklearn_version_mismatch=self.allow_sklearn_version_mismatch,
        )


# RuntimeOptions by their settings' JSON: a fleet of models configured alike holds one object (~1.2 KiB
# a model otherwise); weak, so it goes with the last model holding it.
_SHARED_OPTIONS: weakref.WeakValueDictionary[tuple[type, str], RuntimeOptions] = weakref.WeakValueDictionary()
