"""Per-target poll health, keyed by source: kept (and exported) when polls fail.

`execute()` (collect/execute.py) records every read of a source here:
`SourceHealth.record` counts the poll and the failure's reason, keeps the
last error under one truncation rule, and logs a change of state once
(down, a new reason, a reminder every REMIND_DOWN_EVERY while it stays
down, "recovered"); a bug of ours logs its traceback once per distinct
place. `TargetHealth` holds a target's sources' health and renders the
health series, which survive a failed poll (the data series do not).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sigma_exporter.collect.samples import Samples, new_samples
from sigma_exporter.collect.source import Failure, Reading
from sigma_exporter.logsetup import fields
from sigma_exporter.redact import redact_text

log = logging.getLogger("sigma_exporter.collect.health")

# A source that keeps failing is logged when it goes down (or its reason
# changes), then reminded at most this often, then "recovered".
REMIND_DOWN_EVERY = 300.0
# The one truncation rule for a kept error ("reason: message"): the status
# page, `once` and the log show at most this many characters of it.
MAX_ERROR_CHARS = 300
# Distinct bugs whose traceback is logged (one per source, type and place).
MAX_BUGS_LOGGED = 64


@dataclass(slots=True)
class _Down:
    reason: str
    since: float  # monotonic
    last_logged: float
    failures: int


class SourceHealth:
    """One source of one target: its up flag, counters, last error and log state."""

    def __init__(self, target: str, name: str, reasons: tuple[str, ...],
                 up_metric: str | None, field_prefix: str) -> None:
        self.target = target
        self.name = name
        self.reasons = reasons
        self.up_metric = up_metric
        self.field_prefix = field_prefix
        self.up: bool | None = None  # None until its first read finished
        self.duration: float | None = None  # seconds, last read
        self.polls = 0
        # Every reason exists at 0 from the start: a counter born at 1 hides
        # its first event from increase() and rate().
        self.failures: dict[str, int] = dict.fromkeys(reasons, 0)
        self.parse_errors: dict[str, int] = {}  # field path -> count
        self.error: str | None = None  # the last read's "reason: message"; None if it worked
        self.last_success: float | None = None  # Unix time of the data of the last good read
        self._down: _Down | None = None
        self._bugs_logged: set[str] = set()

    def record(self, failure: Failure | None, duration: float | None, reading: Reading | None,
               secrets: tuple[str, ...] = (), *, counted: bool = False) -> None:
        """One read of this source: counted, timed, and its failure kept and logged.

        `counted`: this read was recorded already this round (a bug of ours
        found after it, while publishing): not a second poll.
        """
        if not counted:
            self.polls += 1
        if duration is not None:
            self.duration = duration
        if reading is not None:
            self._count_parse_errors(reading.parse_errors)
        if failure is None:
            self.up, self.error = True, None
            self.last_success = (reading.received_at if reading is not None
                                 and reading.received_at is not None else time.time())
            self._recovered()
            return
        self.up = False
        self.failures[failure.reason] = self.failures.get(failure.reason, 0) + 1
        message = redact_text(failure.message, secrets)
        self.error = f"{failure.reason}: {message}"[:MAX_ERROR_CHARS]
        if failure.bug is not None:
            self._log_bug(failure.bug)
        else:
            self._log_down(failure.reason, self.error)

    def _count_parse_errors(self, paths: tuple[str, ...]) -> None:
        for path in paths:
            key = self.field_prefix + path
            self.parse_errors[key] = self.parse_errors.get(key, 0) + 1
        if paths:
            log.debug("unparsable fields", extra=fields(
                target=self.target, source=self.name, paths=",".join(sorted(set(paths)))))

    def _recovered(self) -> None:
        down, self._down = self._down, None
        if down is not None:
            log.info("target recovered", extra=fields(
                target=self.target, source=self.name,
                down_for=f"{time.monotonic() - down.since:.0f}s", failures=down.failures))

    def _log_down(self, reason: str, error: str) -> None:
        """Log a change (down, or a new reason), then a reminder at most every
        REMIND_DOWN_EVERY seconds: a server down for a day is not 10,000
        identical warnings. The counter still counts every failure."""
        now = time.monotonic()
        down = self._down
        if down is None or down.reason != reason:
            since, failures = (now, 1) if down is None else (down.since, down.failures + 1)
            self._down = _Down(reason, since, now, failures)
            log.warning("target down", extra=fields(
                target=self.target, source=self.name, reason=reason, error=error))
            return
        down.failures += 1
        if now - down.last_logged >= REMIND_DOWN_EVERY:
            down.last_logged = now
            log.warning("target still down", extra=fields(
                target=self.target, source=self.name, reason=reason,
                down_for=f"{now - down.since:.0f}s", failures=down.failures, error=error))

    def _log_bug(self, exc: BaseException) -> None:
        """A bug of ours: its traceback once per distinct place, so a bug that
        repeats every poll does not flood the log; the counter shows it repeats."""
        now = time.monotonic()
        if self._down is None:  # for the "recovered" line
            self._down = _Down("internal", now, now, 1)
        else:
            self._down.failures += 1
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
        signature = f"{type(exc).__name__}|{where}"
        if signature in self._bugs_logged:
            log.debug("internal error again", extra=fields(
                target=self.target, source=self.name, error=self.error))
            return
        if len(self._bugs_logged) < MAX_BUGS_LOGGED:
            self._bugs_logged.add(signature)
        log.error("internal error, target marked down",
                  extra=fields(target=self.target, source=self.name), exc_info=exc)


class TargetHealth:
    """A target's health: each source's, in the target's order; the first is primary.

    The primary source (the dump) decides whether the target is up
    (`sigma_up`) and when it last answered.
    """

    def __init__(self, interval: float, sources: list[SourceHealth]) -> None:
        self.interval_seconds = interval
        self.sources = {s.name: s for s in sources}
        self._primary = sources[0] if sources else None
        self.series_dropped = 0  # data series over the series budget, last poll

    def source(self, name: str) -> SourceHealth | None:
        return self.sources.get(name)

    @property
    def up(self) -> bool | None:
        return None if self._primary is None else self._primary.up

    @property
    def last_success_timestamp(self) -> float | None:
        return None if self._primary is None else self._primary.last_success

    @property
    def errors(self) -> dict[str, str]:
        """source -> its last read's error, for the sources that failed."""
        return {name: s.error for name, s in self.sources.items() if s.error is not None}

    @property
    def last_error(self) -> str | None:
        """The first failing source's error, as `source: reason: message`."""
        for name, error in self.errors.items():
            return f"{name}: {error}"
        return None

    def samples(self, target: str) -> Samples:
        out = new_samples()
        t = (target,)
        out["sigma_poll_interval_seconds"].append((t, self.interval_seconds))
        if self.up is not None:
            out["sigma_series_dropped"].append((t, float(self.series_dropped)))
        if self.last_success_timestamp is not None:
            out["sigma_last_poll_success_timestamp_seconds"].append(
                (t, self.last_success_timestamp))
        # Each family in the order of its label values: as the goldens were rendered.
        for name, s in sorted(self.sources.items()):
            if s.up_metric is not None and s.up is not None:
                out[s.up_metric].append((t, 1.0 if s.up else 0.0))
            if s.duration is not None:
                out["sigma_poll_duration_seconds"].append(((target, name), s.duration))
            out["sigma_polls_total"].append(((target, name), float(s.polls)))
            for reason, count in sorted(s.failures.items()):
                out["sigma_poll_errors_total"].append(((target, name, reason), float(count)))
        parse_errors = sorted(p for s in self.sources.values() for p in s.parse_errors.items())
        for path, count in parse_errors:
            out["sigma_parse_errors_total"].append(((target, path), float(count)))
        return out
