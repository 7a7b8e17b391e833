"""One throw-away PostgreSQL cluster for the suite (installed from the distribution's packages
when missing, run as an unprivileged user, stopped at the end), with the diabetes feature table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tritonclient.grpc as tgrpc

from harness.postgres import Postgres
from tests.features.support import cluster


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    yield from cluster()


@pytest.fixture(scope="module")
def grpc(server) -> Iterator[tgrpc.InferenceServerClient]:
    """A tritonclient gRPC client of the module's `server`."""
    client = tgrpc.InferenceServerClient(url=server.grpc_url)
    yield client
    client.close()
