"""JSON-lines logs for MLServer's own loggers and the runtime's, from one logging configuration.

`runtime/logging.json` (settings.json `logging_settings`) sends every logger (root, mlserver,
uvicorn, runtime) to one stdout handler using `JsonFormatter` (with MLServer's model context:
runtime.integration.log_format). MLServer applies it in the main
process and in each parallel worker, and uvicorn applies it again for the REST and metrics
servers, so every process writes the same format.

Every line is built by `json.dumps` (ASCII only), so quotes, newlines and non-ASCII text in a
message stay valid JSON; MLServer's own `use_structured_logging` pastes the message into a JSON
template and breaks on the first quote.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted.
# uvicorn's `color_message` repeats the message with terminal colour codes.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, pid, model context and extras."""

    def context(self) -> dict[str, Any]:
        """Fields of the surrounding context (e.g. the model a line is about); none here."""
        return {}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                doc.setdefault(key, value)
        for key, value in self.context().items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return _dumps(doc)


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        # A message whose %-arguments do not fit would make logging print a plain-text
        # "--- Logging error ---" block; keep the line JSON and show what was passed.
        return f"{record.msg!s} {record.args!r}"


def _dumps(doc: dict[str, Any]) -> str:
    try:
        return json.dumps(doc, default=repr)
    except ValueError:  # a circular structure in an extra
        return json.dumps({key: repr(value) for key, value in doc.items()})


def stdout_handler() -> logging.Handler:
    """The one handler of logging.json: stdout, after routing Python warnings through logging."""
    # Otherwise `warnings.warn` (e.g. a library's deprecation notice) writes plain text to stderr.
    logging.captureWarnings(True)
    return logging.StreamHandler(sys.stdout)


# A refused request's id is logged too, and its refusal may be its length (runtime.core.contract's limit).
_LOGGED_ID_CHARS = 256


def _loggable_id(request_id: str | None) -> str | None:
    if request_id is None or len(request_id) <= _LOGGED_ID_CHARS:
        return request_id
    return f"{request_id[:_LOGGED_ID_CHARS]}... ({len(request_id)} characters)"


def log_request(
    logger: logging.Logger,
    level: int,
    *,
    request_id: str | None,
    model: str,
    version: str,
    rows: int | None,
    seconds: float,
    outcome: str,
    error: BaseException | None = None,
    traceback: bool = False,
) -> None:
    """The per-request line: a summary message plus the fields as top-level JSON keys."""
    if not logger.isEnabledFor(level):
        return
    message = "inference ok" if error is None else f"inference failed ({outcome}): {error}"
    logger.log(
        level,
        message,
        exc_info=error if traceback else None,
        extra={
            "request_id": _loggable_id(request_id),
            "model": model,
            "version": version,
            "rows": rows,
            "duration_ms": round(seconds * 1000.0, 3),
            "outcome": outcome,
        },
    )
