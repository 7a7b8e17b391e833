"""MLServer's model repository, logging in the runtime's JSON format from the first line.

MLServer lists the models (and may warn, e.g. "Model name 'diabetes' is different than model's
folder name", which the top-level stable alias and every KServe-mounted /mnt/models trigger)
before it applies `logging_settings`, so those lines would be plain text. The repository class
named by `model_repository_implementation` is the one piece of a runtime MLServer builds before
that moment; listing the models stays MLServer's own SchemalessModelRepository.
"""

from __future__ import annotations

from typing import Any

from mlserver.repository import SchemalessModelRepository

from runtime import logs


class JsonLoggingModelRepository(SchemalessModelRepository):
    def __init__(self, *args: Any, **kwargs: Any):
        logs.use_json_on_mlserver_console()
        super().__init__(*args, **kwargs)
