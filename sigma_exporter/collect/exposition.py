"""Samples to exposition bytes, rendered once per poll and merged per scrape.

A target's samples are rendered into one block of sample lines per family
right after its poll. A scrape only concatenates, per family, the HELP/TYPE
header and every target's block: the body is valid for both the Prometheus
text format 0.0.4 and OpenMetrics 1.0 (the headers differ, the sample lines
do not), and no per-sample work happens on the scrape path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sigma_exporter.collect.samples import Samples
from sigma_exporter.metrics import BY_NAME, DEFINITIONS, MetricDef

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# Rendered sample lines of one target: metric name -> bytes.
Rendered = dict[str, bytes]

_ESCAPE = str.maketrans({"\\": r"\\", '"': r"\"", "\n": r"\n"})


def escape_label(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.translate(_ESCAPE)
    return value


def format_value(value: float) -> str:
    if value.is_integer() and -1e15 < value < 1e15:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _pieces() -> dict[str, tuple[str, ...]]:
    """Per metric, the fixed text of one sample line around its variable parts.

    (`name{a="`, -, `",b="`, -, `"} `, -, newline): label values go into the
    odd slots, the value into the last but one. Filling a list and joining it
    is much cheaper than %-formatting the whole line (a long template).
    """
    out = {}
    for d in DEFINITIONS:
        if d.labels:
            heads = [f'{d.name}{{{d.labels[0]}="']
            heads += [f'",{label}="' for label in d.labels[1:]]
            heads.append('"} ')
        else:
            heads = [f"{d.name} "]
        pieces = []
        for head in heads:
            pieces += [head, ""]
        pieces.append("\n")
        out[d.name] = tuple(pieces)
    return out


_PIECES = _pieces()


def render(samples: Mapping[str, list[tuple[tuple[str, ...], float]]]) -> Rendered:
    """Sample lines per metric, in one pass; called once per poll, not per scrape."""
    out: Rendered = {}
    for name, entries in samples.items():
        if not entries:
            continue
        line = list(_PIECES[name])
        width = len(BY_NAME[name].labels)
        label_slots = slice(1, 2 * width, 2)
        lines = []
        for labels, value in entries:
            if len(labels) != width:  # a bug, not data: never emit a broken line
                raise ValueError(f"{name}: {len(labels)} label values for {width} labels")
            joined = "".join(labels)  # one check for all labels: escaping is rare
            if '"' in joined or "\\" in joined or "\n" in joined:
                labels = tuple(map(escape_label, labels))
            line[label_slots] = labels
            line[-2] = format_value(value)
            lines.append("".join(line))
        out[name] = "".join(lines).encode("utf-8")
    return out


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _headers(openmetrics: bool) -> dict[str, bytes]:
    """Each family's metadata lines, built once at import (scrapes only concatenate).

    OpenMetrics gets the family name, the `info` type and a `# UNIT` where the
    name ends in a unit; the text format 0.0.4 knows neither, and keeps the
    sample name and `gauge`.
    """
    headers = {}
    for d in DEFINITIONS:
        if openmetrics:
            text = f"# HELP {d.family} {_help(d.help)}\n# TYPE {d.family} {d.type}\n"
            if d.unit:
                text += f"# UNIT {d.family} {d.unit}\n"
        else:
            text = f"# HELP {d.name} {_help(d.help)}\n# TYPE {d.name} {d.text_type}\n"
        headers[d.name] = text.encode()
    return headers


_TEXT_HEADERS = _headers(openmetrics=False)
_OM_HEADERS = _headers(openmetrics=True)


def merge(blocks: Iterable[Rendered], openmetrics: bool, end: bool = True) -> bytes:
    """One body: every family once, its lines from every target in order.

    `end=False` leaves out the OpenMetrics `# EOF` so more families can follow.
    """
    blocks = list(blocks)
    headers = _OM_HEADERS if openmetrics else _TEXT_HEADERS
    parts: list[bytes] = []
    for d in DEFINITIONS:
        name = d.name
        chunks = [b for block in blocks if (b := block.get(name))]
        if chunks:
            parts.append(headers[name])
            parts.extend(chunks)
    if openmetrics and end:
        parts.append(b"# EOF\n")
    return b"".join(parts)


def to_families(samples: Samples) -> Iterator[Metric]:
    """The same samples as prometheus_client families (for registries and tests)."""
    for d in DEFINITIONS:
        entries = samples.get(d.name)
        if not entries:
            continue
        yield _family(d, entries)


def _family(d: MetricDef, entries: list[tuple[tuple[str, ...], float]]) -> Metric:
    family: GaugeMetricFamily | CounterMetricFamily
    if d.type == "counter":
        family = CounterMetricFamily(d.family, d.help, labels=list(d.labels))
    else:
        family = GaugeMetricFamily(d.name, d.help, labels=list(d.labels))
    for labels, value in entries:
        family.add_metric(list(labels), value)
    return family


def read_back(rendered: Rendered) -> Samples:
    """A target's rendered exposition parsed back into samples (tools and tests)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    body = merge([rendered], openmetrics=False).decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            names = BY_NAME[sample.name].labels
            out.setdefault(sample.name, []).append(
                (tuple(sample.labels[n] for n in names), sample.value))
    return out
