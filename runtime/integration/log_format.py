"""JSON log lines with MLServer's model context, from the very first line MLServer writes
(runtime.integration.startup switches MLServer's console to it before its logging settings apply).
"""

from __future__ import annotations

import logging
from typing import Any

from mlserver.context import model_name_var, model_version_var

from runtime.observation.logs import JsonFormatter


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
