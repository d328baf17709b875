"""What the status page needs of one poll, summarized on the poll side from typed results.

`summarize` runs on the poll loop right after a target's round. From the
round's typed readings (the dump's `Dump`, progress's `Progress`, the
outputs' `OutputsReport`, every source's findings) and the target's health
it keeps the little the page shows, in a frozen `TargetStatus` that the
poller puts in the target's view together with its exposition, so the web
thread renders the page without reading anything the poll loop changes.
Nothing here reads metric names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sigma_exporter.collect.health import TargetHealth
from sigma_exporter.collect.samples import UP_STATES_JOB
from sigma_exporter.collect.source import Outcome
from sigma_exporter.outputs.source import OutputsReport
from sigma_exporter.source.snapshot import Dump, Progress

# A channel is slow when it is up but its last reported speed is below this
# (1.0 is real time). Same number as SigmaJobBehindRealtime's threshold
# (alerts/thresholds.yml job_speed_ratio); the alert averages 5 minutes,
# the page shows the last poll.
SLOW_SPEED = 0.97


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    state: str | None
    speed: float | None


@dataclass(frozen=True, slots=True)
class Gpu:
    index: str
    name: str
    core: float | None  # ratios 0-1
    encoder: float | None
    decoder: float | None
    temperature: float | None  # °C


@dataclass(frozen=True, slots=True)
class StaleOutput:
    """A rendition whose live playlist stopped changing (the outputs source's verdict)."""

    job: str
    output: str
    rendition: str
    age: float  # seconds unchanged
    limit: float | None  # stale beyond this (1.5 target durations)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source of the target as of its last read."""

    name: str
    up: bool | None  # None: not read yet
    error: str | None  # "reason: message" of the last read, if it failed
    findings: tuple[str, ...] = ()  # problems its last read found, as sentences


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One target as the page shows it, as of its last poll (immutable)."""

    up: bool | None  # the primary source (dump); None before the first poll finished
    last_success: float | None  # Unix time of the last good dump
    sources: tuple[SourceStatus, ...]  # in the target's order, dump first
    channels: int  # channels seen (after include/exclude/max)
    channels_up: int
    channels_dropped: int  # left out by the target's jobs: include/exclude/max
    down: tuple[Channel, ...]
    slow: tuple[Channel, ...]
    gpus: tuple[Gpu, ...]
    # Renditions whose playlists stopped changing, the longest-stale first.
    stale_outputs: tuple[StaleOutput, ...] = ()

    def source(self, name: str) -> SourceStatus | None:
        for source in self.sources:
            if source.name == name:
                return source
        return None

    def error(self, source: str) -> str | None:
        found = self.source(source)
        return None if found is None else found.error

    def up_of(self, source: str) -> bool | None:
        """`source`'s up flag; None when it was not read (or the target has none)."""
        found = self.source(source)
        return None if found is None else found.up

    @property
    def progress_up(self) -> bool | None:
        return self.up_of("progress")

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(f for source in self.sources for f in source.findings)


def _channels(progress: Progress | None) -> tuple[int, int, tuple[Channel, ...],
                                                  tuple[Channel, ...]]:
    if progress is None:
        return 0, 0, (), ()
    down, slow, up = [], [], 0
    for job in progress.jobs:  # the server's order
        channel = Channel(job.name, job.state, job.speed)
        if job.state is not None and job.state not in UP_STATES_JOB:
            down.append(channel)
        else:
            up += job.state is not None
            if channel.speed is not None and channel.speed < SLOW_SPEED:
                slow.append(channel)
    return len(progress.jobs), up, tuple(down), tuple(slow)


def _gpus(dump: Dump | None) -> tuple[Gpu, ...]:
    if dump is None:
        return ()
    return tuple(Gpu(g.index, g.name or "", g.utilization_ratio, g.encoder_utilization_ratio,
                     g.decoder_utilization_ratio, g.temperature_celsius) for g in dump.gpus)


def _stale(report: object) -> tuple[StaleOutput, ...]:
    if not isinstance(report, OutputsReport):
        return ()
    stale = sorted(report.stale, key=lambda r: -r.age)
    return tuple(StaleOutput(r.job, r.output, r.rendition, r.age, r.limit) for r in stale)


def summarize(outcomes: Sequence[Outcome], health: TargetHealth) -> TargetStatus:
    """What the page needs of one round; cheap, called once per poll."""
    values = {o.source: o.reading.value for o in outcomes if o.reading is not None}
    findings = {o.source: o.reading.findings for o in outcomes if o.reading is not None}
    dump = values.get("dump")
    progress = values.get("progress")
    progress = progress if isinstance(progress, Progress) else None
    channels, channels_up, down, slow = _channels(progress)
    return TargetStatus(
        up=health.up, last_success=health.last_success_timestamp,
        sources=tuple(SourceStatus(name, s.up, s.error, findings.get(name, ()))
                      for name, s in health.sources.items()),
        channels=channels, channels_up=channels_up,
        channels_dropped=progress.dropped if progress is not None else 0,
        down=down, slow=slow, gpus=_gpus(dump if isinstance(dump, Dump) else None),
        stale_outputs=_stale(values.get("outputs")))
