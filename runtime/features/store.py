"""Online features from PostgreSQL: entity ids -> feature rows, in one round trip.

    ids -> TTL cache -> circuit breaker -> connection pool -> one prepared
    `SELECT key, f1, ..., fn FROM table WHERE key = ANY(%s)` -> rows by id

The pool is psycopg 3's `AsyncConnectionPool`, opened without waiting: a model whose database is
down at start-up still loads and reports ready, its lookups fail fast (503) and the pool keeps
reconnecting in the background, so the model recovers on its own when the database returns. Each
lookup has a time budget covering both the wait for a connection and the query, far inside a
request's deadline; lookups beyond `pool_max` + `pool_max_waiting` in progress are refused at
once, like the in-flight cap. The breaker (runtime.policy.breaker, the same one the model uses) turns a failing
database into sub-millisecond refusals instead of one timeout per request.

Only the event loop calls `fetch` (the cache is not thread-safe, and the pool belongs to the loop
that opened it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from runtime.core.errors import ArtifactError, FeatureStoreUnavailable
from runtime.core.options import FeatureStoreOptions
from runtime.features.ttl_cache import TTLCache
from runtime.observation import metrics
from runtime.policy.breaker import STATE_VALUES, CircuitBreaker

logger = logging.getLogger("runtime.features.store")

Row = tuple[float | None, ...]  # one entity's values in the model's feature order; None: NULL


@dataclass(frozen=True)
class Fetched:
    rows: dict[str, Row]  # every id the store (or the cache) knows; unknown ids are absent
    cached: frozenset[str]  # the ids the cache answered


def read_dsn(options: FeatureStoreOptions) -> str:
    """The connection string from its file or environment variable (never from the settings)."""
    if options.dsn_file is not None:
        try:
            dsn = Path(options.dsn_file).read_text().strip()
        except OSError as exc:
            raise ArtifactError(f"feature_store.dsn_file: cannot read {options.dsn_file}: {exc.strerror}") from None
    else:
        dsn = os.environ.get(options.dsn_env or "", "").strip()
    if not dsn:
        where = options.dsn_file or f"environment variable {options.dsn_env}"
        raise ArtifactError(f"feature_store: no connection string in {where}")
    return dsn


def lookup_query(options: FeatureStoreOptions, feature_names: Sequence[str]) -> sql.Composed:
    table = sql.Identifier(*options.table.split("."))
    key = sql.Identifier(options.key_column)
    columns = sql.SQL(", ").join(sql.Identifier(options.column(f)) for f in feature_names)
    return sql.SQL("SELECT {key}, {columns} FROM {table} WHERE {key} = ANY(%s)").format(
        key=key, columns=columns, table=table
    )


class FeatureStore:
    def __init__(self, model: str, options: FeatureStoreOptions, feature_names: Sequence[str]):
        self.model, self.options = model, options
        self._query = lookup_query(options, feature_names)
        self._timeout_s = options.lookup_timeout_ms / 1000.0
        self._lookups = 0  # in progress: holding a connection or waiting for one
        self._max_lookups = options.pool_max + options.pool_max_waiting
        self._cache: TTLCache[str, Row] = TTLCache(options.cache_ttl_s, options.cache_entries)
        self._metrics = metrics.FeatureStoreMetrics(model)
        self._breaker = CircuitBreaker(
            f"the feature store of {model}",
            options.breaker_failure_ratio,
            options.breaker_window,
            options.breaker_min_calls,
            options.breaker_open_s,
            options.breaker_probes,
            on_change=lambda state: self._metrics.set_breaker(STATE_VALUES[state]),
        )
        self._pool = AsyncConnectionPool(
            read_dsn(options),
            min_size=options.pool_min,
            max_size=options.pool_max,
            # Not the pool's max_waiting: psycopg_pool 3.3.3 leaves a waiter that timed out in
            # its queue until a connection frees it, so with the database down the queue fills,
            # every later request is refused before it can ask the pool to reconnect, and the
            # pool never recovers. The cap is counted here instead (self._lookups).
            max_lifetime=options.pool_max_lifetime_s,
            max_idle=options.pool_max_idle_s,
            reconnect_timeout=options.reconnect_timeout_s,
            timeout=self._timeout_s,
            check=AsyncConnectionPool.check_connection if options.pool_check else None,
            # Prepared on first use on each connection; autocommit: a lookup is one statement;
            # the application name lets a DBA tell each model's pool apart in pg_stat_activity.
            kwargs={
                "autocommit": True,
                "prepare_threshold": 0,
                "connect_timeout": options.connect_timeout_s,
                "application_name": f"pipeline-runtime/{model}",
            },
            name=f"features-{model}",
            open=False,
        )

    async def open(self) -> None:
        """Start connecting in the background; never waits for the database."""
        await self._pool.open(wait=False)
        self._metrics.set_breaker(STATE_VALUES[self._breaker.state])

    async def close(self) -> None:
        await self._pool.close(timeout=1.0)

    async def fetch(self, ids: Sequence[str]) -> Fetched:
        """The rows of `ids` (unknown ids absent), or FeatureStoreUnavailable."""
        rows: dict[str, Row] = {}
        missing = []
        for entity in dict.fromkeys(ids):
            row = self._cache.get(entity)
            if row is None:
                missing.append(entity)
            else:
                rows[entity] = row
        self._metrics.cache(hits=len(rows), misses=len(missing))
        cached = frozenset(rows)
        if missing:
            fetched = await self._from_database(missing)
            for entity, row in fetched.items():
                self._cache.put(entity, row)
            rows.update(fetched)
        return Fetched(rows, cached)

    async def _from_database(self, ids: list[str]) -> dict[str, Row]:
        if not self._breaker.allow():
            self._metrics.error("breaker_open")
            raise FeatureStoreUnavailable(
                "the feature store is unavailable (circuit breaker open after repeated failures); retry later"
            )
        if self._lookups >= self._max_lookups:
            # Load, not a database failure: refused at once, like the in-flight cap.
            self._breaker.forget()
            self._metrics.error("pool_full")
            raise FeatureStoreUnavailable(
                f"the feature store is busy ({self.options.pool_max_waiting} lookups already waiting "
                "for a connection); retry later"
            )
        started = time.perf_counter()
        worked: bool | None = None  # None: cancelled: the breaker forgets the call
        self._lookups += 1
        try:
            rows = await self._select(ids)
            worked = True
        except (TimeoutError, PoolTimeout):
            worked = False
            self._metrics.error("timeout")
            raise FeatureStoreUnavailable(
                f"the feature store is unavailable (no answer within {self.options.lookup_timeout_ms:g} ms); retry later"
            ) from None
        except psycopg.Error as exc:
            worked = False
            self._metrics.error("unavailable")
            logger.warning("feature lookup for %s failed: %s", self.model, str(exc).strip() or type(exc).__name__)
            raise FeatureStoreUnavailable("the feature store is unavailable; retry later") from None
        finally:
            self._lookups -= 1
            if worked is None:
                self._breaker.forget()
            else:
                self._breaker.record(worked)
            self._metrics.pool(self._pool.get_stats())
        self._metrics.fetched(time.perf_counter() - started, len(rows))
        return rows

    async def _select(self, ids: list[str]) -> dict[str, Row]:
        """One round trip within the lookup's budget. The wait for a connection is bounded by the
        pool's own timeout, never by cancelling it: psycopg_pool 3.3.3 keeps a cancelled waiter
        in its queue, which then fills max_waiting for good."""
        deadline = time.monotonic() + self._timeout_s
        async with self._pool.connection(timeout=self._timeout_s) as conn:
            # A query cancelled here leaves its connection unusable; the pool discards it.
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.monotonic()):
                cursor = await conn.execute(self._query, (ids,), prepare=True)
                found = await cursor.fetchall()
        return {str(key): tuple(None if v is None else float(v) for v in values) for key, *values in found}

    def count_unknown(self) -> None:
        """A request named an id the store does not know (or a row missing a feature)."""
        self._metrics.error("unknown_id")
