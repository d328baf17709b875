"""What the status page needs of one poll, summarized on the poll side.

`summarize` runs on the poll loop right after a target's poll. From the very
samples the target's exposition is rendered from (and its health) it keeps
the little the page shows, in a frozen `TargetStatus` that the poller puts in
the target's view together with its exposition, so the web thread renders
the page without reading anything the poll loop changes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sigma_exporter.collect.samples import Health, Labels

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
class TargetStatus:
    """One target as the page shows it, as of its last poll (immutable)."""

    up: bool | None  # dump side; None before the first poll finished
    progress_up: bool | None  # None: progress is not polled
    nvml_up: bool | None  # None: not the agent-mode target
    last_success: float | None  # Unix time of the last good dump
    errors: tuple[tuple[str, str], ...]  # (source, error) of the last poll
    channels: int  # channels seen (after include/exclude/max)
    channels_up: int
    channels_dropped: int  # left out by the target's jobs: include/exclude/max
    down: tuple[Channel, ...]
    slow: tuple[Channel, ...]
    stalled: tuple[Channel, ...]  # up, media time not advancing (never also in `slow`)
    gpus: tuple[Gpu, ...]
    mismatches: tuple[str, ...]  # cross-check findings, as sentences

    def error(self, source: str) -> str | None:
        return dict(self.errors).get(source)


Samples = Mapping[str, Sequence[tuple[Labels, float]]]  # read only


def _by_label(samples: Samples, name: str, position: int = 1) -> dict[str, float]:
    """One metric's values keyed by one label (default: the one after `target`)."""
    return {labels[position]: value for labels, value in samples.get(name, ())}


class MediaClock:
    """Each running channel's media time at its recent polls, to name the stalled ones.

    One per target, fed once per poll on the poll loop. Per channel it keeps
    the polls of about the last STALL_WINDOW seconds (a few entries at the
    usual intervals); a channel that is down, gone, or whose media time went
    back (restarted) starts over.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, deque[tuple[float, float]]] = {}

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
            seen = self._seen.setdefault(name, deque())
            if seen and media < seen[-1][1]:
                seen.clear()
            seen.append((now, media))
            # Keep as the oldest the newest poll that is STALL_WINDOW old or older.
            while len(seen) > 1 and now - seen[1][0] >= STALL_WINDOW:
                seen.popleft()
            then, media_then = seen[0]
            if now - then >= STALL_WINDOW and media - media_then < STALL_SPEED * (now - then):
                found.add(name)
        return found


def _channels(samples: Samples, clock: MediaClock | None
              ) -> tuple[int, int, tuple[Channel, ...], tuple[Channel, ...], tuple[Channel, ...]]:
    up = _by_label(samples, "sigma_job_up")
    speed = _by_label(samples, "sigma_job_speed")
    state = {labels[1]: labels[2] for labels, _ in samples.get("sigma_job_state", ())}
    names = list(dict.fromkeys([*up, *speed]))  # the server's order
    stalled = set() if clock is None else clock.stalled(
        _by_label(samples, "sigma_job_media_time_seconds"),
        (name for name, value in up.items() if value == 1))
    down, slow, stalls = [], [], []
    for name in names:
        channel = Channel(name, state.get(name), speed.get(name))
        if up.get(name) == 0:
            down.append(channel)
        elif name in stalled:
            stalls.append(channel)
        elif channel.speed is not None and channel.speed < SLOW_SPEED:
            slow.append(channel)
    return (len(names), sum(1 for v in up.values() if v == 1), tuple(down), tuple(slow),
            tuple(stalls))


def _gpus(samples: Samples) -> tuple[Gpu, ...]:
    names = {labels[1]: labels[2] for labels, _ in samples.get("sigma_gpu_info", ())}
    core = _by_label(samples, "sigma_gpu_utilization_ratio")
    encoder = _by_label(samples, "sigma_gpu_encoder_utilization_ratio")
    decoder = _by_label(samples, "sigma_gpu_decoder_utilization_ratio")
    temperature = _by_label(samples, "sigma_gpu_temperature_celsius")
    indexes = dict.fromkeys([*names, *core, *encoder, *decoder, *temperature])
    return tuple(Gpu(i, names.get(i, ""), core.get(i), encoder.get(i), decoder.get(i),
                     temperature.get(i)) for i in indexes)


def _mismatches(samples: Samples) -> tuple[str, ...]:
    found = [f"GPU {gpu}: {field} differs from NVML"
             for (_, gpu, field), value in samples.get("sigma_gpu_crosscheck_mismatch", ())
             if value == 1]
    found += [f"GPU {gpu}: missing on the {side} side"
              for (_, gpu, side), value in samples.get("sigma_gpu_crosscheck_gpu_missing", ())
              if value == 1]
    return tuple(found)


def summarize(samples: Samples, health: Health, clock: MediaClock | None = None
              ) -> TargetStatus:
    """What the page needs of one poll's samples; cheap, called once per poll.

    `clock`: the target's MediaClock, which this poll feeds; without it no
    channel is ever stalled."""
    channels, channels_up, down, slow, stalled = _channels(samples, clock)
    dropped = _by_label(samples, "sigma_jobs_dropped", 0)
    return TargetStatus(
        up=health.up, progress_up=health.progress_up, nvml_up=health.nvml_up,
        last_success=health.last_success_timestamp,
        errors=tuple(sorted(health.errors.items())),
        channels=channels, channels_up=channels_up,
        channels_dropped=int(sum(dropped.values())),
        down=down, slow=slow, stalled=stalled, gpus=_gpus(samples),
        mismatches=_mismatches(samples))
