"""The log line format: logfmt or JSON, fields as real keys, the flag's level names."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from sigma_exporter.logsetup import JsonFormatter, LogfmtFormatter, fields


def _record(level: int, message: str, /, **values: str | int | float | bool | None
            ) -> logging.LogRecord:
    record = logging.LogRecord("sigma_exporter.poll", level, __file__, 1, message, (), None)
    record.__dict__.update(fields(**values))  # what `extra=fields(...)` does
    return record


def test_logfmt_line_has_fields_as_keys_after_msg() -> None:
    line = LogfmtFormatter().format(_record(
        logging.WARNING, "target down", target="sigma-01", source="dump", reason="timeout",
        error='read timed out after 5s "GET /"', failures=3))
    head, rest = line.split(" level=", 1)
    assert head.startswith("ts=") and head.endswith("Z")
    assert rest == ('warn logger=sigma_exporter.poll msg="target down" target=sigma-01 '
                    'source=dump reason=timeout error="read timed out after 5s \\"GET /\\"" '
                    'failures=3')


def test_json_line_has_the_same_keys_with_typed_values() -> None:
    entry = json.loads(JsonFormatter().format(_record(
        logging.INFO, "first poll round complete", targets=3, up=2, ratio=0.5, ok=True)))
    assert entry.pop("ts").endswith("Z")
    assert entry == {"level": "info", "logger": "sigma_exporter.poll",
                     "msg": "first poll round complete", "targets": 3, "up": 2,
                     "ratio": 0.5, "ok": True}


@pytest.mark.parametrize("level, name", [(logging.DEBUG, "debug"), (logging.INFO, "info"),
                                         (logging.WARNING, "warn"), (logging.ERROR, "error"),
                                         (logging.CRITICAL, "error")])
def test_level_names_are_the_flag_values(level: int, name: str) -> None:
    assert f" level={name} " in LogfmtFormatter().format(_record(level, "x"))
    assert json.loads(JsonFormatter().format(_record(level, "x")))["level"] == name


def test_a_field_never_overwrites_a_fixed_key() -> None:
    clash = {"msg": "other", "level": "x"}
    line = LogfmtFormatter().format(_record(logging.INFO, "event", **clash))
    assert " msg=event " in line and line.endswith(" field_msg=other field_level=x")
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
