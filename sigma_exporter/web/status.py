"""The status page at `/`: what an operator opens when Grafana is not there.

`render_page` runs on the web thread. It reads only the frozen
`TargetStatus` summaries the poll side put in the View (poll/summary.py):
no polling, no I/O, no lock, and never half a poll.

Everything that comes from Sigma (channel, state and GPU names, errors) is
escaped: a hostile server controls it. The page is plain HTML with inline
CSS, no JavaScript and no external asset, and its links are relative, so it
works unchanged behind basic auth, TLS or a reverse proxy's path prefix.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from sigma_exporter.collect.samples import UP_STATES_JOB
from sigma_exporter.poll.summary import (
    SLOW_SPEED,
    STALL_SPEED,
    STALL_WINDOW,
    Channel,
    Gpu,
    SourceStatus,
    StaleOutput,
    TargetStatus,
)

# Bars turn red above the GPU alerts' thresholds (alerts/thresholds.yml).
GPU_LOAD_HIGH = 0.90
GPU_TEMPERATURE_HIGH = 85.0
GPU_TEMPERATURE_SCALE = 100.0  # °C at a full temperature bar

# The page reloads itself this often: the poll interval, within these bounds.
REFRESH_MIN_SECONDS = 5
REFRESH_MAX_SECONDS = 60
# Names listed (down targets, down or slow channels) before "and N more".
MAX_NAMED = 20


@dataclass(frozen=True, slots=True)
class Row:
    """One target on the page: its config and its last published status."""

    name: str
    url: str  # already redacted
    interval: float
    status: TargetStatus | None  # None until its first poll is published


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def age(seconds: float) -> str:
    """A short human age: 4 s, 3 min, 2 h, 5 d."""
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def refresh_seconds(rows: Sequence[Row]) -> int:
    fastest = min((row.interval for row in rows), default=REFRESH_MAX_SECONDS)
    return int(min(max(math.ceil(fastest), REFRESH_MIN_SECONDS), REFRESH_MAX_SECONDS))


# Where a target goes on the page (lower first), by its worst problem.
RANK_DOWN = 0  # the server does not answer (SigmaServerDown), or its licence lapsed
RANK_BROKEN = 1  # a channel down or stalled, a source failing, a finding (mismatch)
RANK_SLOW = 2  # a channel behind real time (SigmaJobBehindRealtime's threshold)
RANK_PENDING = 3  # not polled yet
RANK_FINE = 4


def problem_rank(status: TargetStatus | None) -> int:
    """A target's place on the page: every target with a problem before the healthy ones.

    The problems are the conditions the alerts fire on, as of the last poll
    (the exporter cannot know which alerts Prometheus has firing): a server
    down or its licence not valid, a channel down or stalled, a source
    failing, a finding (a cross-check mismatch, a stale output), the link to
    the control plane down, then a slow channel. A channel coming up
    (starting, preparing) is not a problem yet.
    """
    if status is None or status.up is None:
        return RANK_PENDING
    if not status.up or status.license_bad:
        return RANK_DOWN
    if (status.down or status.stalled or status.stale_outputs or status.findings
            or any(source.up is False for source in status.sources)
            or status.control_plane_connected is False):
        return RANK_BROKEN
    if status.slow:
        return RANK_SLOW
    return RANK_FINE


def fleet_summary(rows: Sequence[Row]) -> str:
    """The one line on top, as HTML: targets, channels, GPUs, licences, findings."""
    statuses = [row.status for row in rows if row.status is not None]
    up = sum(1 for s in statuses if s.up)
    down = [row.name for row in rows if row.status is not None and row.status.up is False]
    parts = [f"{_count(len(rows), 'target')}: {up} up"]
    if down:
        parts.append(f'<span class="bad">{len(down)} down ({_first(map(esc, down))})</span>')
    pending = len(rows) - up - len(down)
    if pending:
        parts.append(f"{pending} pending")
    channels = sum(s.channels for s in statuses)
    channels_down = sum(len(s.down) for s in statuses)
    stalled = sum(len(s.stalled) for s in statuses)
    slow = sum(len(s.slow) for s in statuses)
    line = ", ".join(parts)
    line += f" · channels {sum(s.channels_up for s in statuses)} / {channels} up"
    if channels_down:
        line += f', <span class="bad">{channels_down} down</span>'
    if stalled:
        line += f', <span class="bad">{stalled} stalled</span>'
    if slow:
        line += f', <span class="warn">{slow} slow</span>'
    coming = sum(len(s.coming_up) for s in statuses)
    if coming:
        line += f", {coming} coming up"
    line += f" · {_count(sum(len(s.gpus) for s in statuses), 'GPU')}"
    licences = sum(1 for s in statuses if s.license_bad)
    if licences:
        line += (f' · <span class="bad">{_count(licences, "licence")} '
                 f'not valid</span>')
    unlinked = sum(1 for s in statuses if s.control_plane_connected is False)
    if unlinked:
        line += f' · <span class="warn">{unlinked} off the control plane</span>'
    stale = sum(len(s.stale_outputs) for s in statuses)
    if stale:
        line += f' · <span class="bad">{_count(stale, "stale output")}</span>'
    findings = sum(len(s.findings) for s in statuses)
    if findings:
        line += f' · <span class="bad">{_count(findings, "finding")}</span>'
    return line


def _first(names: Iterable[str]) -> str:
    """Comma-separated, the first MAX_NAMED of them: a page, not a dump."""
    shown = list(names)
    if len(shown) > MAX_NAMED:
        shown[MAX_NAMED:] = [f"and {len(shown) - MAX_NAMED} more"]
    return ", ".join(shown)


def _named(channels: Sequence[Channel], detail: str) -> str:
    return _first(f"{esc(c.name)} ({esc(_detail(c, detail))})" for c in channels)


def _detail(channel: Channel, detail: str) -> str:
    if detail == "state":
        return channel.state or "state unknown"
    if detail == "media":
        return "media time not advancing"
    return f"speed {channel.speed:g}" if channel.speed is not None else "speed unknown"


def _state_cell(row: Row, now: float) -> str:
    s = row.status
    if s is None or s.up is None:
        badge = '<span class="badge pending">PENDING</span>'
    elif s.up:
        badge = '<span class="badge up">UP</span>'
    else:
        badge = '<span class="badge down">DOWN</span>'
    if s is not None and s.last_success is not None:
        last = (f'last success {age(now - s.last_success)}'
                f'<br><small>{_utc(s.last_success)}</small>')
    else:
        last = "last success never"
    notes = ""
    if s is not None and s.license_bad:  # Sigma stops serving when its licence lapses
        notes += f'<div class="bad">licence {esc(s.license_status)}</div>'
    if s is not None and s.control_plane_connected is False:
        notes += '<div class="warn">control plane: link down</div>'
    return (f'<div class="nowrap">{badge}<br>{last}<br>'
            f"<small>polled every {row.interval:g} s</small>{notes}</div>")


def _source(source: SourceStatus) -> str:
    """One source: ok, or down with its error, or pending; then what it found."""
    if source.error is not None or source.up is False:
        state = (f'<span class="bad">down</span>'
                 f'<div class="error">{esc(source.error or "")}</div>')
    elif source.up:
        state = '<span class="ok">ok</span>'
    else:
        state = '<span class="muted">pending</span>'
    found = "".join(f'<div class="bad">{esc(f)}</div>' for f in source.findings)
    return f'<div class="src"><b>{esc(source.name)}</b> {state}{found}</div>'


def _sources_cell(s: TargetStatus | None) -> str:
    return "" if s is None else "".join(map(_source, s.sources))


def _channels_cell(s: TargetStatus | None) -> str:
    if s is None:
        return ""
    if s.progress_up is None:
        return '<span class="muted">not polled</span>'
    if not s.progress_up:
        return '<span class="muted">unknown: progress is down</span>'
    out = []
    if s.stale_outputs:  # first: what viewers see frozen
        out.append(f'<div class="bad">stale outputs: {_first(map(_stale, s.stale_outputs))}'
                   "</div>")
    out.append(f"{s.channels_up} / {s.channels} up")
    if s.down:
        out.append(f'<div class="bad">down: {_named(s.down, "state")}</div>')
    if s.stalled:
        out.append(f'<div class="bad">stalled: {_named(s.stalled, "media")}</div>')
    if s.slow:
        out.append(f'<div class="warn">slow: {_named(s.slow, "speed")}</div>')
    if s.coming_up:
        out.append(f'<div class="muted">coming up: {_named(s.coming_up, "state")}</div>')
    if s.errors_by_class:
        listed = ", ".join(f"{esc(error_class)} {count}" for error_class, count
                           in s.errors_by_class)
        out.append(f'<div class="warn">error lines listed, by class: {listed}</div>')
    if s.channels_dropped:
        out.append(f'<small class="muted">{s.channels_dropped} more not watched '
                   "(jobs include/exclude/max)</small>")
    return "".join(out)


def _stale(stale: StaleOutput) -> str:
    limit = f", limit {stale.limit:g} s" if stale.limit is not None else ""
    return (f"{esc(stale.job)} {esc(stale.output)} {esc(stale.rendition)} "
            f"(unchanged {stale.age:.0f} s{limit})")


def _meter(label: str, value: float | None, scale: float, high: float, text: str) -> str:
    if value is None:
        return f'<div class="m"><span>{label}</span> <span class="muted">n/a</span></div>'
    shown = min(max(value, 0.0), scale)
    # <meter> draws the bar natively (no style attribute, no script); red past `high`.
    return (f'<div class="m"><span>{label}</span> <meter min="0" max="{scale:g}" '
            f'low="{high:g}" high="{high:g}" optimum="0" value="{shown:g}"></meter> '
            f"<span>{text}</span></div>")


def _percent(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio * 100:.0f}%"


def _gpu(gpu: Gpu) -> str:
    temperature = "" if gpu.temperature is None else f"{gpu.temperature:g} °C"
    return (f'<div class="gpu"><b>GPU {esc(gpu.index)}</b> {esc(gpu.name)}'
            + _meter("core", gpu.core, 1, GPU_LOAD_HIGH, _percent(gpu.core))
            + _meter("enc", gpu.encoder, 1, GPU_LOAD_HIGH, _percent(gpu.encoder))
            + _meter("dec", gpu.decoder, 1, GPU_LOAD_HIGH, _percent(gpu.decoder))
            + _meter("temp", gpu.temperature, GPU_TEMPERATURE_SCALE, GPU_TEMPERATURE_HIGH,
                     temperature)
            + "</div>")


def _gpus_cell(s: TargetStatus | None) -> str:
    nvml = None if s is None else s.source("nvml")
    if s is None or not (s.gpus or nvml is not None):
        return '<span class="muted">none</span>'
    out = [_gpu(gpu) for gpu in s.gpus]
    if nvml is not None and nvml.up is False:
        out.append('<div class="bad">NVML not answering</div>')
    elif nvml is not None and nvml.up:
        out.append('<div class="ok">cross-check with NVML: agrees</div>' if not nvml.findings
                   else f'<div class="bad">cross-check with NVML: '
                        f'{_count(len(nvml.findings), "mismatch", "mismatches")}</div>')
    return "".join(out)


def _row(row: Row, now: float) -> str:
    s = row.status
    cells = [
        f'<a href="probe?target={esc(quote(row.name, safe=""))}">{esc(row.name)}</a>'
        f'<br><small class="muted">{esc(row.url)}</small>',
        _state_cell(row, now),
        _sources_cell(s),
        _channels_cell(s),
        _gpus_cell(s),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def render_page(rows: Iterable[Row], *, version: str, telemetry_path: str,
                now: float) -> str:
    """The whole page; pure, so the web thread never waits on the poll loop."""
    ordered = sorted(rows, key=lambda row: problem_rank(row.status))  # stable: config order
    return _PAGE.format(
        refresh=refresh_seconds(ordered),
        version=esc(version),
        telemetry=esc(telemetry_path.lstrip("/")),
        summary=fleet_summary(ordered),
        rendered=_utc(now),
        rows="\n".join(_row(row, now) for row in ordered),
        slow=f"{SLOW_SPEED:g}",
        stall=f"{STALL_SPEED:g}",
        stall_window=f"{STALL_WINDOW:g}",
        up_states=" or ".join(sorted(UP_STATES_JOB)),
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sigma Exporter status</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1f2328}}
h1{{font-size:1.4em;margin:0 0 .2em}}
.summary{{font-size:1.1em;padding:.5em .8em;background:#f6f8fa;border:1px solid #d0d7de;
border-radius:6px}}
table{{border-collapse:collapse;width:100%}}
th,td{{border-bottom:1px solid #d0d7de;padding:.4em .6em;text-align:left;vertical-align:top}}
th{{background:#f6f8fa}}
small,.muted{{color:#656d76}}
.ok{{color:#1a7f37}}.bad{{color:#cf222e}}.warn{{color:#9a6700}}
.badge{{font-weight:600;padding:0 .4em;border-radius:4px;color:#fff}}
.badge.up{{background:#1a7f37}}.badge.down{{background:#cf222e}}
.badge.pending{{background:#9a6700}}
.error{{color:#cf222e;font-family:monospace;white-space:pre-wrap;word-break:break-word;
max-width:30em}}
.gpu,.src{{margin-bottom:.4em}}
.nowrap,.m{{white-space:nowrap}}
.m{{display:flex;gap:.4em;align-items:center}}.m span:first-child{{width:2.5em}}
meter{{width:7em;height:.9em}}
</style></head>
<body><h1>Sigma Exporter</h1>
<p>Version {version} &middot; <a href="{telemetry}">Metrics</a> &middot;
<a href="-/healthy">Health</a> &middot; <a href="-/ready">Ready</a></p>
<p class="summary">{summary}</p>
<p><small>As of {rendered}; this page reloads every {refresh} s. Problems first: servers
down, then channels down or stalled (and failing sources, findings), then slow channels;
the conditions the alerts fire on, as of the last poll (which alerts Prometheus has firing,
the exporter does not know).</small></p>
<table><tr><th>Target</th><th>State</th><th>Sources</th><th>Channels</th>
<th>GPUs</th></tr>
{rows}
</table>
<p><small>Stale output: a live playlist unchanged for longer than 1.5 target durations
(RFC 8216 6.2.1; docs/outputs.md). Down channel: its state is error, stop or another that
is not {up_states} or coming up (starting, preparing: not down until the alerts' 3-minute
bound). Stalled channel: up, but
its media time advanced less than {stall} s per second over the last {stall_window} s or more (the
SigmaJobStalled threshold; the alert fits 2 minutes and waits 1 more). Slow channel: up, but it ran
below {slow}&times; real time at its last poll (the SigmaJobBehindRealtime threshold; the
alert waits for a 5-minute mean). Bars turn red past the GPU alerts' thresholds.</small></p>
</body></html>
"""
