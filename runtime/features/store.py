"""A model's feature store: entity ids -> feature rows, through the layers every source gets.

    ids -> TTL cache -> metrics -> circuit breaker -> the source (PostgreSQL unless given another)

The layers are runtime.features.wrappers, the PostgreSQL source runtime.features.postgres; this
class only composes them, binds them to the model's metrics, and turns a source's refusal into the
caller's FeatureStoreUnavailable (503).

Only the event loop calls `fetch` (the cache is not thread-safe, and a source's connections may
belong to the loop that opened them).
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.core.errors import ArtifactError, FeatureStoreUnavailable
from runtime.core.options import FeatureStoreOptions
from runtime.features.source import FeatureSource, SourceUnavailable
from runtime.features.ttl_cache import TTLCache
from runtime.features.wrappers import BreakerGuardedSource, CachingSource, Fetched, MeteredSource
from runtime.observation import metrics
from runtime.policy.breaker import STATE_VALUES, CircuitBreaker


def _postgres_source(
    model: str, options: FeatureStoreOptions, feature_names: Sequence[str], store_metrics: metrics.FeatureStoreMetrics
) -> FeatureSource:
    """The PostgreSQL table `options` names; a missing or broken psycopg fails this model's load."""
    try:
        # Imported here, not at start: psycopg is only needed by a model with a feature store.
        from runtime.features.postgres import PostgresSource
    except ImportError as exc:
        raise ArtifactError(f"feature_store needs psycopg and psycopg_pool, which cannot be imported: {exc}") from None
    return PostgresSource(model, options, feature_names, on_pool_stats=store_metrics.pool)


class FeatureStore:
    def __init__(
        self,
        model: str,
        options: FeatureStoreOptions,
        feature_names: Sequence[str],
        source: FeatureSource | None = None,
    ):
        """`source`: the backend; None: the PostgreSQL table `options` names."""
        missing = [f for f in feature_names if options.defaults is not None and f not in options.defaults]
        if missing:  # refused at load, not as each request's KeyError
            raise ArtifactError(f"feature_store.defaults: no value for feature(s) {', '.join(missing)}")
        self.model, self.options = model, options
        self._metrics = metrics.FeatureStoreMetrics(model)
        if source is None:
            source = _postgres_source(model, options, feature_names, self._metrics)
        self._breaker = CircuitBreaker(
            source.description,
            options.breaker_failure_ratio,
            options.breaker_window,
            options.breaker_min_calls,
            options.breaker_open_s,
            options.breaker_probes,
            on_change=lambda state: self._metrics.set_breaker(STATE_VALUES[state]),
        )
        self._source = CachingSource(
            MeteredSource(BreakerGuardedSource(source, self._breaker), self._metrics),
            TTLCache(options.cache_ttl_s, options.cache_entries),
            on_lookup=self._metrics.cache,
        )

    async def open(self) -> None:
        """Start the source; never waits for its backend."""
        await self._source.open()
        self._metrics.set_breaker(STATE_VALUES[self._breaker.state])

    async def close(self) -> None:
        await self._source.close()

    async def fetch(self, ids: Sequence[str]) -> Fetched:
        """The rows of `ids` (unknown ids absent), or FeatureStoreUnavailable."""
        try:
            return await self._source.fetch(ids)
        except SourceUnavailable as exc:
            raise FeatureStoreUnavailable(str(exc)) from None

    def count_unknown(self) -> None:
        """A request named an id the store does not know (or a row missing a feature)."""
        self._metrics.error("unknown_id")
