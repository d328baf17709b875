"""Logging in the exporter convention: logfmt (default) or JSON, one line each.

A line is an event plus its fields, as real keys a log pipeline can index:

    log.warning("target down", extra=fields(target="sigma-01", reason="timeout"))

    ts=... caller=poll/target.py:151 level=warn msg="target down" target=sigma-01 reason=timeout

The fixed keys are Prometheus 2.x's (go-kit log): `ts`, `caller` (the file,
with its folder, and the line that logged), `level`, `msg`. Not Prometheus
3's `source=`: here `source` is a field already, the poll source (dump,
progress, nvml). `msg` says what happened in words; every value that varies
(a target, a reason, a count, an error) goes into a field, never into the
message text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping

# The --log.level values, named as the Prometheus exporters name them.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR}
# What each level is called on a line: the flag's names, so `level=warn` greps
# the same lines `--log.level=warn` keeps.
LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
               logging.ERROR: "error", logging.CRITICAL: "error"}

Value = str | int | float | bool | None
# The fixed keys of every line; a field never takes their place.
RESERVED = frozenset({"ts", "caller", "level", "msg", "exception"})


def fields(**values: Value) -> dict[str, dict[str, Value]]:
    """`extra=` for a log call: the event's fields, in this order, after `msg`."""
    return {"fields": values}


def record_fields(record: logging.LogRecord) -> Mapping[str, Value]:
    found = getattr(record, "fields", None)
    return found if isinstance(found, Mapping) else {}


def plain(record: logging.LogRecord) -> str:
    """The message and its fields on one line, for text shown to a person (check-config)."""
    pairs = " ".join(f"{k}={_logfmt_value(v)}" for k, v in record_fields(record).items())
    return f"{record.getMessage()} ({pairs})" if pairs else record.getMessage()


def level_name(record: logging.LogRecord) -> str:
    return LEVEL_NAMES.get(record.levelno, record.levelname.lower())


def exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback: formatted here, or already by the redacting filter."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


def caller(record: logging.LogRecord) -> str:
    """`folder/file.py:line` of the log call: short, as go-kit's caller, yet unique
    across the package (poll/target.py, not a bare target.py)."""
    folder, name = os.path.split(record.pathname)
    return f"{os.path.basename(folder)}/{name}:{record.lineno}"


def _stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
        f".{int(record.msecs):03d}Z"


def _logfmt_value(value: Value) -> str:
    text = "" if value is None else str(value)
    if text and all(c.isalnum() or c in "-._/:@" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _key(name: str) -> str:
    return f"field_{name}" if name in RESERVED else name


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [f"ts={_stamp(record)}", f"caller={caller(record)}",
                 f"level={level_name(record)}", f"msg={_logfmt_value(record.getMessage())}"]
        parts.extend(f"{_key(k)}={_logfmt_value(v)}" for k, v in record_fields(record).items())
        exception = exception_text(self, record)
        if exception:
            parts.append(f"exception={_logfmt_value(exception)}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Value] = {"ts": _stamp(record), "caller": caller(record),
                                   "level": level_name(record), "msg": record.getMessage()}
        for key, value in record_fields(record).items():
            entry[_key(key)] = value
        exception = exception_text(self, record)
        if exception:
            entry["exception"] = exception
        return json.dumps(entry, default=str)


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    # APScheduler logs every job run at INFO; keep it to warnings.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
