"""JSON log lines with MLServer's model context, from the very first line MLServer writes.

MLServer lists the models (and may warn, e.g. "Model name 'diabetes' is different than model's
folder name", which the top-level stable alias and every KServe-mounted /mnt/models trigger)
before it applies `logging_settings`, so those lines would be plain text. The repository class
named by `model_repository_implementation` (a public setting) is the one piece of a runtime
MLServer builds before that moment; listing the models stays MLServer's own
SchemalessModelRepository.
"""

from __future__ import annotations

import logging
from typing import Any

from mlserver.context import model_name_var, model_version_var
from mlserver.repository import SchemalessModelRepository

from runtime.logs import JsonFormatter


class ModelContextJsonFormatter(JsonFormatter):
    """JsonFormatter plus MLServer's model context, for its own lines about a model (e.g.
    "Loaded model ...")."""

    def context(self) -> dict[str, Any]:
        return {
            "model": model_name_var.get("") or None,
            "version": model_version_var.get("") or None,
        }


def use_json_on_mlserver_console() -> None:
    """JSON on the console handler MLServer's CLI installs before it reads `logging_settings`
    (which, once applied, replaces it with logging.json's handler)."""
    for handler in logging.getLogger("mlserver").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setFormatter(ModelContextJsonFormatter())


class JsonLoggingModelRepository(SchemalessModelRepository):
    """MLServer's own repository, built after switching its console to JSON."""

    def __init__(self, *args: Any, **kwargs: Any):
        use_json_on_mlserver_console()
        super().__init__(*args, **kwargs)
