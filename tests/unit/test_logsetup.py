"""The log line format: Prometheus 2.x's keys (ts, caller, level, msg), logfmt or JSON,
fields as real keys, the flag's level names."""

from __future__ import annotations

import inspect
import io
import json
import logging
import subprocess
import sys

import pytest

from sigma_exporter.logsetup import JsonFormatter, LogfmtFormatter, fields

# Where the records below say they were logged.
PATHNAME = "/usr/lib/python3/site-packages/sigma_exporter/poll/target.py"


def _record(level: int, message: str, /, **values: str | int | float | bool | None
            ) -> logging.LogRecord:
    record = logging.LogRecord("sigma_exporter.poll", level, PATHNAME, 151, message, (), None)
    record.__dict__.update(fields(**values))  # what `extra=fields(...)` does
    return record


def test_logfmt_line_has_fields_as_keys_after_msg() -> None:
    line = LogfmtFormatter().format(_record(
        logging.WARNING, "target down", target="sigma-01", source="dump", reason="timeout",
        error='read timed out after 5s "GET /"', failures=3))
    head, rest = line.split(" caller=", 1)
    assert head.startswith("ts=") and head.endswith("Z")
    assert rest == ('poll/target.py:151 level=warn msg="target down" target=sigma-01 '
                    'source=dump reason=timeout error="read timed out after 5s \\"GET /\\"" '
                    'failures=3')


def test_json_line_has_the_same_keys_with_typed_values() -> None:
    entry = json.loads(JsonFormatter().format(_record(
        logging.INFO, "first poll round complete", targets=3, up=2, ratio=0.5, ok=True)))
    assert entry.pop("ts").endswith("Z")
    assert list(entry)[:3] == ["caller", "level", "msg"]  # after ts, as in logfmt
    assert entry == {"caller": "poll/target.py:151", "level": "info",
                     "msg": "first poll round complete", "targets": 3, "up": 2,
                     "ratio": 0.5, "ok": True}


@pytest.mark.parametrize("level, name", [(logging.DEBUG, "debug"), (logging.INFO, "info"),
                                         (logging.WARNING, "warn"), (logging.ERROR, "error"),
                                         (logging.CRITICAL, "error")])
def test_level_names_are_the_flag_values(level: int, name: str) -> None:
    assert f" level={name} " in LogfmtFormatter().format(_record(level, "x"))
    assert json.loads(JsonFormatter().format(_record(level, "x")))["level"] == name


def test_a_field_never_overwrites_a_fixed_key() -> None:
    clash = {"msg": "other", "level": "x", "caller": "y"}
    line = LogfmtFormatter().format(_record(logging.INFO, "event", **clash))
    assert " msg=event " in line
    assert line.endswith(" field_msg=other field_level=x field_caller=y")
    entry = json.loads(JsonFormatter().format(_record(logging.INFO, "event", **clash)))
    assert entry["msg"] == "event" and entry["field_msg"] == "other"


def test_warn_level_flag_keeps_warn_lines_and_drops_info() -> None:
    code = ("import logging; from sigma_exporter import logsetup; "
            "logsetup.setup('warn', 'json'); log = logging.getLogger('t'); "
            "log.info('hidden'); log.warning('shown', extra=logsetup.fields(target='a'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["level"], e["msg"], e.get("target")) for e in lines] == [("warn", "shown", "a")]


def test_caller_is_the_line_that_logged() -> None:
    """A real log call, through a real logger: its own file and line, not logging's."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    logger = logging.getLogger("sigma_exporter.test_caller")
    logger.addHandler(handler)
    logger.propagate = False
    # Its own level: another test's `logsetup.setup("error")` (as `once` does in
    # process) must not silence it.
    logger.setLevel(logging.INFO)
    try:
        line_no = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        logger.warning("here", extra=fields(target="a"))
    finally:
        logger.removeHandler(handler)
    assert f" caller=unit/test_logsetup.py:{line_no} level=warn msg=here target=a" in \
        stream.getvalue()
