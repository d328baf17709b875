"""Property tests: any JSON shaped like a Sigma answer is survived and exposed validly.

Hypothesis builds dump and progress answers with the documented keys in random
case, values of every JSON type (plus NaN and infinities, huge and negative
numbers, odd unicode and lone surrogates), random nesting and junk keys. For
each: the parsers never raise; the rendered exposition parses with both the
Prometheus text parser and the OpenMetrics parser; every series the parser
produced is read back with exactly the same label values, once.

The number of examples per test comes from the Hypothesis profile (tests/conftest.py):
a quick look by default, 1,300 (5,200 in all) under `--hypothesis-profile=ci`, which
scripts/test passes; SIGMA_FUZZ_EXAMPLES overrides both, and `bench/fuzz` uses it to
run the same checks with 100,000 examples.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

from sigma_exporter.collect import exposition
from sigma_exporter.collect.counters import ErrorLineCounter
from sigma_exporter.collect.health import SourceHealth, TargetHealth
from sigma_exporter.collect.samples import (
    Samples,
    dump_samples,
    merge,
    new_samples,
    progress_samples,
)
from sigma_exporter.collect.source import Reading
from sigma_exporter.metrics import BY_NAME
from sigma_exporter.source import fields
from sigma_exporter.source.parse import parse_dump, parse_progress

# Unset: the loaded profile's max_examples (settings() reads it when created).
EXAMPLES = int(os.environ.get("SIGMA_FUZZ_EXAMPLES") or settings().max_examples)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="CI" in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# --- strategies -------------------------------------------------------------------

# Every code point, lone surrogates included (legal in JSON \u escapes).
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
ODD_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=20),
    st.sampled_from(["", " ", "\\", '"', "\n", "{}", "=", ",", "\u2028", "\ud800", "\udfff",
                     "a\ud800b", "\x00", "\ufeff", "é", "👍", "#", "# EOF", "NaN", "+Inf",
                     "x" * 300, "\\n\\\"", 'a"b\\c\nd']),
)
UNIT_TEXT = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True)),
    st.sampled_from(["", "%", "MB", "GB", "KB", "B", "MiB", "h", "m", "s", "D", "d",
                     "1D09h31m20s", " %", "Kbps", "e5", "..", "--"]),
)
TIMES = st.sampled_from(["2024-03-02T16:53:51.624+07:00", "2024-03-02 16:53:51",
                         "1h41m18s", "2020-08-13 11:50:05", "2024-13-45T99:99:99Z", "0",
                         "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "yesterday"])
NUMBERS = st.one_of(
    st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, 2**63, -(2**63), 10**18, 10**30]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, ODD_TEXT, UNIT_TEXT, TIMES)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(ODD_TEXT, children, max_size=4)),
    max_leaves=12,
)


def cased(key: str, mask: int) -> str:
    """`key` with the letters whose bit is set in `mask` upper-cased."""
    return "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(key))


def shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """An object with some of `fields` (random key case) plus junk, or any JSON at all."""
    # Built once, not per draw (building a strategy costs more than drawing from it);
    # a key's case is one drawn bit mask, not a draw per letter.
    either = {key: st.one_of(strategy, JSON) for key, strategy in fields.items()}
    masks = {key: st.integers(0, (1 << len(key)) - 1) for key in fields}

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        out: dict[str, Any] = {}
        for key, strategy in fields.items():
            if draw(st.integers(0, 5)) == 0:
                continue  # missing
            value = draw(either[key]) if draw(st.booleans()) else draw(strategy)
            out[cased(key, draw(masks[key]))] = value
        for _ in range(draw(st.integers(0, 2))):
            out[draw(ODD_TEXT)] = draw(JSON)
        return out

    return st.one_of(build(), build(), build(), JSON)


def many(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(strategy, max_size=4), JSON)


TEXTY = st.one_of(ODD_TEXT, NUMBERS, st.none())
PROCESS = shaped({"cpu": UNIT_TEXT, "ram": UNIT_TEXT, "child": NUMBERS})
GPU = shaped({"index": TEXTY, "name": TEXTY, "total": UNIT_TEXT, "used": UNIT_TEXT,
              "gpu": UNIT_TEXT, "enc": UNIT_TEXT, "dec": UNIT_TEXT, "temp": NUMBERS,
              "fan": NUMBERS, "power_draw": UNIT_TEXT, "Odd-Key!": NUMBERS})
SYSTEM = shaped({
    "os": TEXTY, "cores": NUMBERS, "cpu": UNIT_TEXT, "thread": NUMBERS,
    "ramtotal": UNIT_TEXT, "ramused": UNIT_TEXT, "swaptotal": UNIT_TEXT,
    "swapused": UNIT_TEXT, "updatetime": TIMES,
    "network": many(shaped({"name": TEXTY, "ip": TEXTY, "netmask": TEXTY})),
    "storage": many(shaped({"name": TEXTY, "time": UNIT_TEXT, "delay": UNIT_TEXT,
                            "folder": many(TEXTY)})),
    "log": shaped({"folder": TEXTY, "used": UNIT_TEXT}),
    "gpu": many(GPU),
    "process": PROCESS,
})
DUMP = shaped({
    "name": TEXTY, "version": TEXTY, "branch": TEXTY, "hostname": TEXTY,
    "timezone": st.one_of(st.sampled_from(["Asia/Ho_Chi_Minh", "UTC", "Europe/Berlin",
                                           "Mars/Olympus", "../../etc/passwd"]), TEXTY),
    "build": TIMES, "start": TIMES, "local": TIMES, "speed": NUMBERS, "port": NUMBERS,
    "queue": NUMBERS, "total": NUMBERS,
    "task": st.dictionaries(ODD_TEXT, NUMBERS, max_size=3),
    "supported": many(shaped({"name": TEXTY, "encoder": many(TEXTY),
                              "decoder": many(TEXTY)})),
    "system": SYSTEM,
    "apps": many(shaped({"name": TEXTY, "state": TEXTY, "life": UNIT_TEXT,
                         "process": PROCESS})),
    # The tail of the complete documented answer.
    "nats": shaped({"id": TEXTY, "license": TEXTY, "hook": NUMBERS, "startup": TIMES,
                    "connected": st.one_of(NUMBERS, st.booleans(), TEXTY)}),
    "licensestatus": st.one_of(st.sampled_from(["VALID", "expired", "Not Valid",
                                                "Y7KI4-HHQX5-0N9QN-X8TLN-VOPE7"]), TEXTY),
    "ec": NUMBERS, "dt": NUMBERS, "now": TIMES,
})
JOB = shaped({
    "speed": NUMBERS, "state": TEXTY, "life": UNIT_TEXT, "pts": UNIT_TEXT,
    "startup": TIMES, "weight": NUMBERS,
    "error": many(st.one_of(TEXTY, st.sampled_from([
        "[08-13 11:48:24] Input timeout (code: INPUT_TIMEOUT)", "(code: )", "(code: \ud800)",
        "[x] y (code: A\"B)"]))),
    "input": many(shaped({"url": st.one_of(TEXTY, st.sampled_from([
        "rtmp://u:p@h/app?token=t", "udp://@234.5.6.7:8888", "srt://h:1?passphrase=x#f",
        "http://[::1", "://", "a" * 400])), "bitrate": NUMBERS})),
    "profile": many(shaped({"id": TEXTY, "bitrate": NUMBERS})),
    "target": many(shaped({"format": TEXTY, "url": TEXTY, "bitrate": NUMBERS})),
})
PROGRESS = st.one_of(
    shaped({"result": st.dictionaries(ODD_TEXT, st.one_of(JOB, JSON), max_size=5),
            "total": NUMBERS, "ec": NUMBERS}),
    JSON,
)

# --- the checks (bench/fuzz calls these too) ----------------------------------------

Series = Counter[tuple[str, tuple[tuple[str, str], ...]]]


def _expected(samples: Samples) -> Series:
    out: Series = Counter()
    for name, entries in samples.items():
        names = BY_NAME[name].labels
        for labels, _value in entries:
            out[(name, tuple(sorted(zip(names, labels, strict=True))))] += 1
    return out


def _read_back(body: str, openmetrics: bool) -> Series:
    parse = om_families if openmetrics else text_families
    out: Series = Counter()
    for family in parse(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] += 1
    return out


def check_samples(samples: Samples) -> None:
    """Rendered both ways, the exposition parses and every series comes back as made."""
    expected = _expected(samples)
    duplicates = [key for key, count in expected.items() if count > 1]
    assert not duplicates, f"duplicate series: {duplicates[:3]}"
    rendered = exposition.render(samples)
    for openmetrics in (False, True):
        body = exposition.merge([rendered], openmetrics).decode("utf-8")
        assert _read_back(body, openmetrics) == expected
    for entries in samples.values():
        for _labels, value in entries:
            assert isinstance(value, float | int) and not isinstance(value, bool)
            assert not math.isnan(value) or True  # NaN is allowed; it must only render


def health_after(source: str, prefix: str, parse_errors: tuple[str, ...]) -> Samples:
    """Target t's health series after one good read of `source` with these parse errors."""
    read = SourceHealth("t", source, ("timeout",), None, prefix)
    read.record(None, 0.01, Reading(new_samples(), received_at=1.7e9, parse_errors=parse_errors))
    return TargetHealth(15.0, [read]).samples("t")


def check_dump(obj: Any) -> None:
    parsed = parse_dump(obj)
    samples = dump_samples("t", parsed.value, 1.7e9, {"a": 1})
    check_samples(merge([samples, health_after("dump", "", parsed.errors)]))


def check_progress(obj: Any, timezone: str | None) -> None:
    parsed = parse_progress(obj)
    if parsed is None:
        return
    counters: dict[str, ErrorLineCounter] = {}
    for job in parsed.value.jobs:
        if job.errors is not None:
            counters.setdefault(job.name, ErrorLineCounter()).observe(job.errors)
    samples = progress_samples("t", parsed.value, timezone, 0, counters,
                                       {job.name: 0 for job in parsed.value.jobs})
    check_samples(merge([samples, health_after("progress", "progress.", parsed.errors)]))


TIMEZONES = st.sampled_from([None, "UTC", "Asia/Ho_Chi_Minh", "America/St_Johns"])

# --- the tests ------------------------------------------------------------------------


@FUZZ
@given(DUMP)
def test_any_dump_is_survived_and_exposed_validly(obj: Any) -> None:
    check_dump(obj)


@FUZZ
@given(PROGRESS, TIMEZONES)
def test_any_progress_is_survived_and_exposed_validly(obj: Any, timezone: str | None) -> None:
    check_progress(obj, timezone)


@FUZZ
@given(JSON)
def test_any_json_at_all(obj: Any) -> None:
    check_dump(obj)
    check_progress(obj, "UTC")


@FUZZ
@given(st.dictionaries(ODD_TEXT, ODD_TEXT, max_size=6))
def test_label_values_round_trip(values: dict[str, str]) -> None:
    """Odd strings as job, app and GPU names come back exactly as the parser made them."""
    check_dump({"name": "n", "version": "v", "start": "2024-03-02T16:53:51Z",
                "apps": [{"name": k, "state": v} for k, v in values.items()],
                "system": {"gpu": [{"index": k, "name": v} for k, v in values.items()]}})
    check_progress({"result": {k: {"state": v, "input": [{"url": v}]}
                               for k, v in values.items()}}, None)


# --- the poll path's shortcuts: the same results as the plain way ----------------------

# Each example parses and renders whole documents twice or three times: a fifth of
# the examples (260 in CI) keeps the two checks below at ~30 s of one core together,
# the shortcuts' inputs being the same documents the tests above try 1,300 of.
SHORTCUTS = settings(FUZZ, max_examples=max(20, EXAMPLES // 5))


@SHORTCUTS
@given(DUMP, DUMP)
def test_parts_render_as_their_merge(first: Any, second: Any) -> None:
    """A target's parts (sources, kept series, health) rendered one by one give the
    bytes of rendering their merge, families shared by several parts included."""
    parts = [dump_samples("t", parse_dump(obj).value, 1.7e9) for obj in (first, second)]
    parts.append(health_after("dump", "", parse_dump(first).errors))
    assert exposition.render_parts(parts) == exposition.render(merge(parts))


@SHORTCUTS
@given(DUMP, PROGRESS)
def test_objects_read_alike_with_their_shapes_known_or_not(dump: Any, progress: Any) -> None:
    """Keys folded per object shape (fields._key_map) read as folding them each time:
    the same snapshot and errors on a cold cache, on a warm one, and after an object
    of the same shape with other values was read."""
    fields._KEY_MAPS.clear()
    cold = parse_dump(dump), parse_progress(progress)
    assert (parse_dump(dump), parse_progress(progress)) == cold
    fields._KEY_MAPS.clear()
    if isinstance(dump, dict):
        parse_dump({key: None for key in dump})  # its shape, none of its values
    assert (parse_dump(dump), parse_progress(progress)) == cold
