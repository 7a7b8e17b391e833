"""The first piece of the runtime MLServer builds: its model repository class.

`mlserver start` builds the class named by `model_repository_implementation` (a public setting)
before it applies `logging_settings` and before it creates its REST and gRPC servers. So this is
where the runtime sets itself up: JSON on MLServer's console from the first line (it lists the
models, and may warn, e.g. "Model name 'diabetes' is different than model's folder name", before
its logging settings apply), and the MLServer integration installed before the servers exist (the
REST guard goes into the app MLServer creates, gRPC's interceptor into its server, and uvicorn
never takes the signals). Listing the models stays MLServer's own SchemalessModelRepository.
"""

from __future__ import annotations

from typing import Any

from mlserver.repository import SchemalessModelRepository

from runtime.integration.log_format import use_json_on_mlserver_console


class StartupRepository(SchemalessModelRepository):
    def __init__(self, *args: Any, **kwargs: Any):
        use_json_on_mlserver_console()
        import runtime.model  # noqa: F401  (installs the integration, once per process)

        super().__init__(*args, **kwargs)
