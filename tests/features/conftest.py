"""One throw-away PostgreSQL cluster for the suite (installed from the distribution's packages
when missing, run as an unprivileged user, stopped at the end), with the diabetes feature table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.postgres import Postgres
from tests.features.support import cluster


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    yield from cluster()
