"""What a feature backend is: a `FeatureSource` turns entity ids into rows, or says why it cannot.

PostgreSQL (runtime.features.postgres) is one source; the cache, the breaker and the metrics
(runtime.features.wrappers) wrap any source, so another backend is one class with these four
members. A source that cannot answer raises `SourceUnavailable`, whose `failure` tells the wrappers
how to count it; runtime.features.store turns it into the caller's FeatureStoreUnavailable (503).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

Value = float | str | None  # a number, a text (for a string column) or None (NULL)
Row = tuple[Value, ...]  # one entity's values in the model's feature order, as the backend holds them


class Failure(StrEnum):
    """Why a lookup got no answer; the value is the `kind` label of pipeline_feature_lookup_errors_total."""

    TIMEOUT = "timeout"  # no answer within the lookup's budget
    UNAVAILABLE = "unavailable"  # the backend failed
    BUSY = "pool_full"  # refused for load before asking the backend (the label predates other backends)
    BREAKER_OPEN = "breaker_open"  # refused by the breaker after repeated failures

    @property
    def counts_against_source(self) -> bool:
        """A breaker counts only the backend's own failures: load and an open breaker say nothing of its health."""
        return self in (Failure.TIMEOUT, Failure.UNAVAILABLE)


class SourceUnavailable(Exception):
    """A lookup the source could not answer; str() is the message the caller gets."""

    def __init__(self, failure: Failure, message: str):
        super().__init__(message)
        self.failure = failure


class FeatureSource(Protocol):
    """Entity ids -> feature rows. Only the event loop calls it (lookups run there)."""

    @property
    def description(self) -> str:
        """What the source is, in the words of a log line: 'the feature store of <model>'."""
        ...

    async def open(self) -> None:
        """Start; must not wait for the backend, so a model loads while its backend is down."""
        ...

    async def close(self) -> None: ...

    async def fetch(self, ids: Sequence[str]) -> dict[str, Row]:
        """The rows of `ids` (an id the source does not know is absent), or SourceUnavailable."""
        ...
