"""One throw-away PostgreSQL cluster for the suite (installed from the distribution's packages
when missing, run as an unprivileged user, stopped at the end), with the diabetes feature table."""

from __future__ import annotations

from typing import Iterator

import pytest

from harness.postgres import Postgres, load_feature_table, start_cluster
from tests.features.support import TABLE


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    cluster = start_cluster()
    try:
        load_feature_table(cluster, TABLE)
        yield cluster
    finally:
        cluster.close()
