"""tests/security: real `mlserver start .` processes under hostile input on the wire (raw sockets).

The fleet and the failure report are tests/reliability's: each test module declares its servers
in a module-level `SERVERS` dict. Clients only: never import mlserver here (protobuf trap).
"""

from __future__ import annotations

from tests.reliability.conftest import fleet, pytest_runtest_makereport  # noqa: F401
