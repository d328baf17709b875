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
from typing import TYPE_CHECKING

from sigma_exporter import metrics
from sigma_exporter.collect.samples import Samples
from sigma_exporter.metrics import MetricDef

if TYPE_CHECKING:
    from prometheus_client.core import Metric

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


def _build_pieces(d: MetricDef) -> tuple[str, ...]:
    """One metric's fixed text of a sample line around its variable parts.

    (`name{a="`, -, `",b="`, -, `"} `, -, newline): label values go into the
    odd slots, the value into the last but one. Filling a list and joining it
    is much cheaper than %-formatting the whole line (a long template).
    """
    if d.labels:
        heads = [f'{d.name}{{{d.labels[0]}="']
        heads += [f'",{label}="' for label in d.labels[1:]]
        heads.append('"} ')
    else:
        heads = [f"{d.name} "]
    pieces: list[str] = []
    for head in heads:
        pieces += [head, ""]
    pieces.append("\n")
    return tuple(pieces)


# Built once per metric, on first use: the table is read when rendering, so a
# source's rows in metrics.py are all it takes for its families to render.
_PIECES: dict[str, tuple[str, ...]] = {}


def _pieces(name: str) -> tuple[str, ...]:
    pieces = _PIECES.get(name)
    if pieces is None:
        pieces = _PIECES[name] = _build_pieces(metrics.BY_NAME[name])
    return pieces


def render(samples: Mapping[str, list[tuple[tuple[str, ...], float]]]) -> Rendered:
    """Sample lines per metric, in one pass; called once per poll, not per scrape."""
    return render_parts([samples])


def render_parts(parts: Iterable[Mapping[str, list[tuple[tuple[str, ...], float]]]]) -> Rendered:
    """`render(samples.merge(parts))`, without building the merged samples first:
    a family in several parts gets their lines in the parts' order."""
    out: Rendered = {}
    for part in parts:
        for name, entries in part.items():
            if entries:
                block = _render_family(name, entries)
                before = out.get(name)
                out[name] = block if before is None else before + block
    return out


def _render_family(name: str, entries: list[tuple[tuple[str, ...], float]]) -> bytes:
    line = list(_pieces(name))
    width = len(metrics.BY_NAME[name].labels)
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
    return "".join(lines).encode("utf-8")


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _header(d: MetricDef, openmetrics: bool) -> bytes:
    """A family's metadata lines, built once (scrapes only concatenate).

    OpenMetrics gets the family name, the `info` type and a `# UNIT` where the
    name ends in a unit; the text format 0.0.4 knows neither, and keeps the
    sample name and `gauge`.
    """
    if openmetrics:
        text = f"# HELP {d.family} {_help(d.help)}\n# TYPE {d.family} {d.type}\n"
        if d.unit:
            text += f"# UNIT {d.family} {d.unit}\n"
    else:
        text = f"# HELP {d.name} {_help(d.help)}\n# TYPE {d.name} {d.text_type}\n"
    return text.encode()


_HEADERS: dict[tuple[str, bool], bytes] = {}


def merge(blocks: Iterable[Rendered], openmetrics: bool, end: bool = True) -> bytes:
    """One body: every family once, its lines from every target in order.

    `end=False` leaves out the OpenMetrics `# EOF` so more families can follow.
    """
    blocks = list(blocks)
    parts: list[bytes] = []
    for d in metrics.DEFINITIONS:
        name = d.name
        chunks = [b for block in blocks if (b := block.get(name))]
        if chunks:
            header = _HEADERS.get((name, openmetrics))
            if header is None:
                header = _HEADERS[(name, openmetrics)] = _header(d, openmetrics)
            parts.append(header)
            parts.extend(chunks)
    if openmetrics and end:
        parts.append(b"# EOF\n")
    return b"".join(parts)


def to_families(samples: Samples) -> Iterator[Metric]:
    """The same samples as prometheus_client families (for registries and tests)."""
    for d in metrics.DEFINITIONS:
        entries = samples.get(d.name)
        if not entries:
            continue
        yield _family(d, entries)


def _family(d: MetricDef, entries: list[tuple[tuple[str, ...], float]]) -> Metric:
    # Here, not at the top: the poll path never needs prometheus_client's families.
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
            names = metrics.BY_NAME[sample.name].labels
            out.setdefault(sample.name, []).append(
                (tuple(sample.labels[n] for n in names), sample.value))
    return out
