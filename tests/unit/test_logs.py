"""JSON log lines (runtime.observation.logs) and the shipped logging configuration (runtime/logging.json)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from runtime.observation.logs import JsonFormatter, log_request

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = 'he said "stop"\nthen \\ left; naïve 日本語 \u2028 \x00'


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("runtime", logging.WARNING, __file__, 1, msg, args or None, None)
    record.__dict__.update(extra)
    return record


def _format(record: logging.LogRecord) -> dict:
    line = JsonFormatter().format(record)
    assert "\n" not in line and line.isascii()
    return json.loads(line)


def test_quotes_newlines_and_non_ascii_stay_valid_json():
    doc = _format(_record("%s", HOSTILE))
    assert doc["message"] == HOSTILE
    assert doc["level"] == "WARNING" and doc["logger"] == "runtime"
    assert doc["time"].endswith("+00:00")


def test_extras_become_top_level_keys_and_odd_values_are_stringified():
    doc = _format(_record("x", request_id="r-1", rows=3, odd={1, 2}, color_message="\x1b[31mx"))
    assert doc["request_id"] == "r-1" and doc["rows"] == 3
    assert doc["odd"] == repr({1, 2})
    assert "color_message" not in doc


def test_mismatched_arguments_do_not_break_the_line():
    doc = _format(_record("%s and %s", "only one"))
    assert "only one" in doc["message"]


def test_exception_is_one_escaped_field():
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    doc = _format(record)
    assert "Traceback" in doc["exception"] and HOSTILE in doc["exception"]


def test_request_line_fields(caplog):
    logger = logging.getLogger("runtime.test")
    with caplog.at_level(logging.DEBUG, logger="runtime.test"):
        log_request(
            logger,
            logging.DEBUG,
            request_id="abc",
            model="m",
            version="1",
            rows=4,
            seconds=0.0012345,
            outcome="ok",
        )
    (record,) = caplog.records
    doc = _format(record)
    assert doc["message"] == "inference ok"
    expected = {
        "request_id": "abc",
        "model": "m",
        "version": "1",
        "rows": 4,
        "duration_ms": 1.234,
        "outcome": "ok",
    }
    assert {key: doc[key] for key in expected} == expected


def test_request_line_is_skipped_below_the_logger_level(caplog):
    logger = logging.getLogger("runtime.test.quiet")
    with caplog.at_level(logging.INFO, logger="runtime.test.quiet"):
        log_request(
            logger, logging.DEBUG, request_id=None, model="m", version="1", rows=None, seconds=0.0, outcome="ok"
        )
    assert not caplog.records


# The shipped logging.json applied the way MLServer applies it, in a fresh interpreter so this
# process's logging (and pytest's capture) stays untouched.
_CHILD = textwrap.dedent(
    """
    import logging, sys, warnings
    from mlserver.logging import configure_logger
    from mlserver.settings import Settings

    configure_logger()  # as `mlserver start` does first, without settings
    configure_logger(Settings(logging_settings="runtime/logging.json"))
    hostile = sys.argv[1]
    logging.getLogger("mlserver").info("mlserver says %s", hostile)
    logging.getLogger("mlserver.parallel").warning("worker says %s", hostile)
    logging.getLogger("uvicorn.error").info("uvicorn says %s", hostile)
    logging.getLogger("runtime").info("runtime says %s", hostile)
    logging.getLogger("runtime").debug("hidden at the shipped level")
    logging.getLogger("opentelemetry.exporter").warning("exporter says %s", hostile)
    warnings.warn("a library warning " + hostile)
    """
)


def test_shipped_logging_config_makes_every_line_json():
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, HOSTILE.replace("\x00", "")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stderr == ""
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["logger"] for d in docs] == [
        "mlserver",
        "mlserver.parallel",
        "uvicorn.error",
        "runtime",
        "opentelemetry.exporter",
        "py.warnings",
    ]
    for doc in docs[:-1]:
        assert doc["message"].endswith(HOSTILE.replace("\x00", ""))


def test_settings_json_points_at_the_shipped_config():
    settings = json.loads((ROOT / "settings.json").read_text())
    assert (ROOT / settings["logging_settings"]).resolve() == ROOT / "runtime" / "logging.json"


def test_a_long_request_id_is_cut_in_the_log_line(caplog):
    logger = logging.getLogger("test.long-id")
    with caplog.at_level(logging.INFO, logger="test.long-id"):
        for request_id in ("short-id", "x" * 100_000):
            log_request(
                logger, logging.INFO, request_id=request_id, model="m", version="1", rows=1, seconds=0.001, outcome="ok"
            )
    short, long = (r.request_id for r in caplog.records)
    assert short == "short-id"
    assert long.startswith("x" * 256 + "...") and long.endswith("(100000 characters)") and len(long) < 300
