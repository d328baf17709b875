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

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sigma_exporter.collect.counters import error_code
from sigma_exporter.collect.health import TargetHealth
from sigma_exporter.collect.source import Outcome
from sigma_exporter.outputs.source import OutputsReport
from sigma_exporter.source.errorcodes import CLASSES_AND_UNKNOWN, classes_of
from sigma_exporter.source.jobstates import MEANS_COMING_UP, MEANS_UP, state_meaning
from sigma_exporter.source.snapshot import Dump, Progress

# A channel is slow when it is up but its last reported speed is below this
# (1.0 is real time). Same number as SigmaJobBehindRealtime's threshold
# (alerts/thresholds.yml job_speed_ratio); the alert averages 5 minutes,
# the page shows the last poll.
SLOW_SPEED = 0.97
# A channel is stalled when it is up but its media time (PTS) advanced less
# than STALL_SPEED seconds per second over the last STALL_WINDOW seconds or a
# little more: SigmaJobStalled's threshold (job_stalled_speed_ratio). The alert
# fits a 2-minute line and waits a minute more; the page compares two polls at
# least this far apart (Sigma's media time has whole seconds: a shorter window
# would read one poll's rounding as a stall).
STALL_SPEED = 0.8
STALL_WINDOW = 30.0


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
    down: tuple[Channel, ...]  # state means down or stopped
    slow: tuple[Channel, ...]
    stalled: tuple[Channel, ...]  # up, media time not advancing (never also in `slow`)
    coming_up: tuple[Channel, ...]  # starting or preparing: not down (yet)
    gpus: tuple[Gpu, ...]
    license_status: str | None = None  # as the dump reported it; VALID is the good one
    control_plane_connected: bool | None = None
    # Error lines the server lists now, over every channel, by class
    # (input, output, processing, config, unknown); classes with none left out.
    errors_by_class: tuple[tuple[str, int], ...] = ()
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

    @property
    def license_bad(self) -> bool:
        return self.license_status is not None and self.license_status != "VALID"


class MediaClock:
    """Each running channel's media time at its recent polls, to name the stalled ones.

    One per target, fed once per poll on the poll loop. Per channel it keeps
    the polls of about the last STALL_WINDOW seconds (a few entries at the
    usual intervals); a channel that is down, gone, or whose media time went
    back (restarted) starts over.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # channel -> [(when, media time)], oldest first; a list of a few
        # entries (a deque costs ten times the memory at thousands of channels)
        self._seen: dict[str, list[tuple[float, float]]] = {}

    def stalled(self, media_times: Mapping[str, float], running: Iterable[str]) -> set[str]:
        """The running channels whose media time advanced less than STALL_SPEED s/s over
        the last STALL_WINDOW seconds (or a little more)."""
        now = self._clock()
        running = set(running) & set(media_times)
        for gone in set(self._seen) - running:
            del self._seen[gone]
        found = set()
        for name in running:
            media = media_times[name]
            seen = self._seen.setdefault(name, [])
            if seen and media < seen[-1][1]:
                seen.clear()
            seen.append((now, media))
            # Keep as the oldest the newest poll that is STALL_WINDOW old or older.
            while len(seen) > 1 and now - seen[1][0] >= STALL_WINDOW:
                del seen[0]
            then, media_then = seen[0]
            if now - then >= STALL_WINDOW and media - media_then < STALL_SPEED * (now - then):
                found.add(name)
        return found


@dataclass(frozen=True, slots=True)
class _Channels:
    total: int = 0
    up: int = 0
    down: tuple[Channel, ...] = ()
    slow: tuple[Channel, ...] = ()
    stalled: tuple[Channel, ...] = ()
    coming_up: tuple[Channel, ...] = ()
    errors_by_class: tuple[tuple[str, int], ...] = ()


def _channels(progress: Progress | None, clock: MediaClock | None) -> _Channels:
    if progress is None:
        return _Channels()
    meaning = {job.name: state_meaning(job.state) for job in progress.jobs}
    running = [name for name, means in meaning.items() if means == MEANS_UP]
    stalled = set() if clock is None else clock.stalled(
        {j.name: j.media_time_seconds for j in progress.jobs
         if j.media_time_seconds is not None}, running)
    down, slow, stalls, coming = [], [], [], []
    by_class = dict.fromkeys(CLASSES_AND_UNKNOWN, 0)
    for job in progress.jobs:  # the server's order
        channel = Channel(job.name, job.state, job.speed)
        means = meaning[job.name]
        if means == MEANS_COMING_UP:
            coming.append(channel)
        elif means is not None and means != MEANS_UP:
            down.append(channel)
        elif job.name in stalled:
            stalls.append(channel)
        elif channel.speed is not None and channel.speed < SLOW_SPEED:
            slow.append(channel)
        for line in job.errors or ():
            for error_class in classes_of(error_code(line)):
                by_class[error_class] += 1
    return _Channels(len(progress.jobs), len(running), tuple(down), tuple(slow), tuple(stalls),
                     tuple(coming), tuple((c, n) for c, n in by_class.items() if n))


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


def summarize(outcomes: Sequence[Outcome], health: TargetHealth,
              clock: MediaClock | None = None) -> TargetStatus:
    """What the page needs of one round; cheap, called once per poll.

    `clock`: the target's MediaClock, which this round feeds; without it no
    channel is ever stalled."""
    values = {o.source: o.reading.value for o in outcomes if o.reading is not None}
    findings = {o.source: o.reading.findings for o in outcomes if o.reading is not None}
    dump = values.get("dump")
    dump = dump if isinstance(dump, Dump) else None
    progress = values.get("progress")
    channels = _channels(progress if isinstance(progress, Progress) else None, clock)
    return TargetStatus(
        up=health.up, last_success=health.last_success_timestamp,
        sources=tuple(SourceStatus(name, s.up, s.error, findings.get(name, ()))
                      for name, s in health.sources.items()),
        channels=channels.total, channels_up=channels.up,
        channels_dropped=progress.dropped if isinstance(progress, Progress) else 0,
        down=channels.down, slow=channels.slow, stalled=channels.stalled,
        coming_up=channels.coming_up, gpus=_gpus(dump),
        license_status=None if dump is None else dump.license_status,
        control_plane_connected=None if dump is None else dump.control_plane_connected,
        errors_by_class=channels.errors_by_class,
        stale_outputs=_stale(values.get("outputs")))
