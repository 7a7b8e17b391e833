"""Feature rows from one PostgreSQL table: a `FeatureSource` over a psycopg 3 pool and one prepared
`SELECT key, f1, ..., fn FROM table WHERE key = ANY(%s)`.

The pool is psycopg 3's `AsyncConnectionPool`, opened without waiting: a model whose database is
down at start-up still loads and reports ready, its lookups fail fast (503) and the pool keeps
reconnecting in the background, so the model recovers on its own when the database returns. Each
lookup has a time budget covering both the wait for a connection and the query, far inside a
request's deadline; lookups beyond `pool_max` + `pool_max_waiting` in progress are refused at
once, like the in-flight cap.

Only the event loop calls `fetch` (the pool belongs to the loop that opened it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from runtime.core.errors import ArtifactError
from runtime.core.options import FeatureStoreOptions
from runtime.features.source import Failure, Row, SourceUnavailable, Value

logger = logging.getLogger("runtime.features.postgres")


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


class PostgresSource:
    def __init__(
        self,
        model: str,
        options: FeatureStoreOptions,
        feature_names: Sequence[str],
        on_pool_stats: Callable[[dict[str, int]], None],
    ):
        """`on_pool_stats` gets the pool's counters after every lookup that reached the pool."""
        self.model, self.options = model, options
        self._query = lookup_query(options, feature_names)
        self._timeout_s = options.lookup_timeout_ms / 1000.0
        self._lookups = 0  # in progress: holding a connection or waiting for one
        self._max_lookups = options.pool_max + options.pool_max_waiting
        self._on_pool_stats = on_pool_stats
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

    @property
    def description(self) -> str:
        return f"the feature store of {self.model}"

    async def open(self) -> None:
        """Start connecting in the background; never waits for the database."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close(timeout=1.0)

    async def fetch(self, ids: Sequence[str]) -> dict[str, Row]:
        if self._lookups >= self._max_lookups:
            # Load, not a database failure: refused at once, like the in-flight cap.
            raise SourceUnavailable(
                Failure.BUSY,
                f"the feature store is busy ({self.options.pool_max_waiting} lookups already waiting "
                "for a connection); retry later",
            )
        self._lookups += 1
        try:
            return await self._select(ids)
        except (TimeoutError, PoolTimeout):
            raise SourceUnavailable(
                Failure.TIMEOUT,
                f"the feature store is unavailable (no answer within {self.options.lookup_timeout_ms:g} ms); "
                "retry later",
            ) from None
        except psycopg.Error as exc:
            logger.warning("feature lookup for %s failed: %s", self.model, str(exc).strip() or type(exc).__name__)
            raise SourceUnavailable(Failure.UNAVAILABLE, "the feature store is unavailable; retry later") from None
        finally:
            self._lookups -= 1
            self._on_pool_stats(self._pool.get_stats())

    async def _select(self, ids: Sequence[str]) -> dict[str, Row]:
        """One round trip within the lookup's budget. The wait for a connection is bounded by the
        pool's own timeout, never by cancelling it: psycopg_pool 3.3.3 keeps a cancelled waiter
        in its queue, which then fills max_waiting for good."""
        deadline = time.monotonic() + self._timeout_s
        async with self._pool.connection(timeout=self._timeout_s) as conn:
            # A query cancelled here leaves its connection unusable; the pool discards it.
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.monotonic()):
                cursor = await conn.execute(self._query, (list(ids),), prepare=True)  # a list: psycopg's array
                found = await cursor.fetchall()
        return {str(key): tuple(map(_value, values)) for key, *values in found}


def _value(value: object) -> Value:
    """NULL as None, a number (double precision, numeric, integer, boolean) as float, anything else
    (TEXT, a date, ...) as its text; whether it fits its column is the request's check
    (runtime.features.entities), naming the entity and the feature."""
    if value is None:
        return None
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    return str(value)
