"""One target between polls: its counters, its health, its last published view.

Each poll asks for `dump` and `progress` at once, parses both, updates the
target's counters and renders its exposition. The result replaces the
target's previous `TargetView` in a single assignment; the poller collects
those into the View the web side reads.

Every failure of every source (dump, progress, and agent mode's nvml) goes
through `TargetState.record_failure`, every success through
`record_success`: the source's up flag, its failure counter, its last error
and the log line (once per change) are kept in one place.

A bug of ours while handling one target's answer (like node_exporter's
`execute()`) is that target's `sigma_up 0` with reason `internal`, never its
old data and never another target's problem.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sigma_exporter.collect import exposition
from sigma_exporter.collect.counters import ErrorLineCounter, RestartDetector
from sigma_exporter.collect.result import AfterDump, Failure, SourceResult
from sigma_exporter.collect.samples import (
    Health,
    Samples,
    dump_samples,
    health_samples,
    merge,
    new_samples,
    progress_samples,
)
from sigma_exporter.config import TargetConfig
from sigma_exporter.logsetup import fields
from sigma_exporter.poll.summary import MediaClock, summarize
from sigma_exporter.poll.view import TargetView
from sigma_exporter.redact import redact_text, redact_url
from sigma_exporter.source.client import (
    DUMP_REQUEST,
    PROGRESS_REQUEST,
    REASONS,
    Answer,
    PollError,
    SigmaClient,
    SSLContexts,
)
from sigma_exporter.source.parse import parse_dump, parse_progress
from sigma_exporter.source.snapshot import Dump, Job

log = logging.getLogger(__name__)

# A target that keeps failing is logged when it goes down (or its reason
# changes), then reminded at most this often, then "recovered".
REMIND_DOWN_EVERY = 300.0

# Each source's up flag in Health: what record_failure and record_success set.
_UP_FLAG = {"dump": "up", "progress": "progress_up", "nvml": "nvml_up"}


@dataclass(slots=True)
class _Down:
    reason: str
    since: float  # monotonic
    last_logged: float
    failures: int


class TargetState:
    """Everything the exporter remembers about one target between polls."""

    def __init__(self, config: TargetConfig, contexts: SSLContexts) -> None:
        self.config = config
        self.client = SigmaClient(config, contexts)
        self.health = Health(interval_seconds=config.interval)
        self.timezone: str | None = None  # last known; progress start times need it
        self.server_start = RestartDetector()
        self.app_uptimes: dict[str, RestartDetector] = {}
        self.job_uptimes: dict[str, RestartDetector] = {}
        self.job_errors: dict[str, ErrorLineCounter] = {}
        self.polls_done = 0
        self.media_clock = MediaClock()  # the status page's stalled channels
        self._url = redact_url(config.url)
        self.published = TargetView(config.name, self._url, config.interval, {})
        self._lock = asyncio.Lock()
        self._internal_errors_logged: set[str] = set()
        self._down: dict[str, _Down] = {}  # source -> since when and why (for the log)
        # Failure counters whose label values are a closed set exist at 0 from
        # the first poll: a counter born at 1 hides its first event from
        # increase() and rate().
        sources = ("dump", "progress") if config.jobs.enabled else ("dump",)
        for source in sources:
            self.health.polls[source] = 0
            for reason in REASONS:
                self.health.poll_errors[(source, reason)] = 0

    @property
    def name(self) -> str:
        return self.config.name

    # --- the one health path ---------------------------------------------------

    def record_failure(self, source: str, failure: Failure,
                       secrets: tuple[str, ...] = ()) -> None:
        """`source` failed this round: down, counted, its error kept, logged once per change."""
        setattr(self.health, _UP_FLAG[source], False)
        key = (source, failure.reason)
        self.health.poll_errors[key] = self.health.poll_errors.get(key, 0) + 1
        if failure.bug is not None:
            error = f"{failure.reason}: {failure.message}"[:300]
            self.health.last_error = f"{source}: {error}"[:300]
            self.health.errors[source] = error
            self._log_bug(source, failure.bug)
            return
        message = redact_text(failure.message, secrets)
        self.health.last_error = f"{source}: {failure.reason}: {message}"
        self.health.errors[source] = f"{failure.reason}: {message}"
        self._log_down(source, failure.reason, message)

    def record_success(self, source: str) -> None:
        """`source` answered this round: up, and "recovered" logged if it was down."""
        setattr(self.health, _UP_FLAG[source], True)
        down = self._down.pop(source, None)
        if down is not None:
            log.info("target recovered", extra=fields(
                target=self.name, source=source,
                down_for=f"{time.monotonic() - down.since:.0f}s", failures=down.failures))

    def record_source(self, result: SourceResult) -> None:
        """An extra source's round (agent mode): polled, timed, then failed or answered."""
        for reason in result.reasons:
            self.health.poll_errors.setdefault((result.source, reason), 0)
        self.health.count_poll(result.source)
        self.health.durations[result.source] = result.duration
        if result.failure is not None:
            self.record_failure(result.source, result.failure)
        else:
            self.record_success(result.source)

    def _log_down(self, source: str, reason: str, message: str) -> None:
        """Log a change (down, or a new reason), then a reminder at most every
        REMIND_DOWN_EVERY seconds: a server down for a day is not 10,000
        identical warnings. The counter still counts every failure."""
        now = time.monotonic()
        down = self._down.get(source)
        if down is None or down.reason != reason:
            since, failures = (now, 1) if down is None else (down.since, down.failures + 1)
            self._down[source] = _Down(reason, since, now, failures)
            log.warning("target down", extra=fields(
                target=self.name, source=source, reason=reason, error=message))
            return
        down.failures += 1
        if now - down.last_logged >= REMIND_DOWN_EVERY:
            down.last_logged = now
            log.warning("target still down", extra=fields(
                target=self.name, source=source, reason=reason,
                down_for=f"{now - down.since:.0f}s", failures=down.failures, error=message))

    def _log_bug(self, source: str, exc: BaseException) -> None:
        """A bug of ours: its traceback once per distinct error, so a bug that
        repeats every poll does not flood the log; the counter shows it repeats."""
        if source not in self._down:  # for the "recovered" line
            now = time.monotonic()
            self._down[source] = _Down("internal", now, now, 1)
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
        signature = f"{source}|{type(exc).__name__}|{where}"
        if signature in self._internal_errors_logged:
            log.debug("internal error again", extra=fields(
                target=self.name, source=source, error=str(exc)))
            return
        if len(self._internal_errors_logged) < 64:
            self._internal_errors_logged.add(signature)
        log.error("internal error, target marked down",
                  extra=fields(target=self.name, source=source), exc_info=exc)

    # --- bookkeeping --------------------------------------------------------

    def _parse_errors(self, source: str, paths: tuple[str, ...]) -> None:
        for path in paths:
            key = f"{source}.{path}" if source != "dump" else path
            self.health.parse_errors[key] = self.health.parse_errors.get(key, 0) + 1
        if paths:
            log.debug("unparsable fields", extra=fields(
                target=self.name, source=source, paths=",".join(sorted(set(paths)))))

    def _within_budget(self, source: str, over: bool, samples: Samples,
                       budget: int) -> int | None:
        """The series count of `samples`, or None when the series budget refuses them.

        Refused: the source's data is dropped (health series stay), counted as
        `series_limit` and in sigma_series_dropped, and logged as the source
        going down (a change is logged, not every poll).
        """
        count = sum(map(len, samples.values()))
        if not over and count <= budget:
            return count
        # Reading stopped at the budget: more than `budget` were on their way.
        dropped = max(count, budget + 1) if over else count
        self.health.series_dropped += dropped
        self.record_failure(source, Failure(
            "series_limit", f"series budget exceeded, data dropped: {dropped}"
            f"{' or more' if over else ''} series, {budget} left of max_series "
            f"{self.config.max_series}"))
        return None

    def observe_dump(self, dump: Dump) -> dict[str, int]:
        if dump.timezone is not None:
            self.timezone = dump.timezone
        before = self.server_start.restarts
        self.server_start.observe_start(dump.start_timestamp)
        if self.server_start.restarts != before:
            log.info("server restarted", extra=fields(target=self.name))
        self.health.server_restarts = self.server_start.restarts
        names = {app.name for app in dump.apps}
        for app in dump.apps:
            self.app_uptimes.setdefault(app.name, RestartDetector()).observe_uptime(
                app.uptime_seconds)
        for gone in set(self.app_uptimes) - names:
            del self.app_uptimes[gone]
        return {name: d.restarts for name, d in self.app_uptimes.items()}

    def wants_job(self, name: str) -> bool:
        """Whether the include/exclude rules keep the job named `name`."""
        rules = self.config.jobs
        return ((rules.include is None or rules.include.search(name) is not None)
                and (rules.exclude is None or rules.exclude.search(name) is None))

    def observe_jobs(self, jobs: tuple[Job, ...]) -> dict[str, int]:
        names = {job.name for job in jobs}
        for job in jobs:
            self.job_uptimes.setdefault(job.name, RestartDetector()).observe_uptime(
                job.uptime_seconds)
            if job.errors is not None:
                self.job_errors.setdefault(job.name, ErrorLineCounter()).observe(job.errors)
        # A job that disappeared takes its series and its memory with it.
        for gone in set(self.job_uptimes) - names:
            del self.job_uptimes[gone]
        for gone in set(self.job_errors) - names:
            del self.job_errors[gone]
        return {name: d.restarts for name, d in self.job_uptimes.items()}

    # --- one poll -------------------------------------------------------------

    async def poll(self, secrets: tuple[str, ...], after_dump: AfterDump | None = None) -> None:
        """Poll dump and progress once; never raises, whatever happens inside."""
        async with self._lock:  # never two polls of one target at once
            polls = self.health.polls.get("dump", 0)
            try:
                await self._poll(secrets, after_dump)
            except Exception as exc:  # a bug of ours is this target's up 0
                if self.health.polls.get("dump", 0) == polls:  # failed before ingest
                    self.health.count_poll("dump")
                self.record_failure("dump", Failure.internal(exc))
                self.publish([])

    async def _fetch(self, payload: dict[str, str], method: str) -> Answer | PollError:
        try:
            return await self.client.fetch(payload, method)
        except PollError as error:
            return error

    async def _poll(self, secrets: tuple[str, ...], after_dump: AfterDump | None) -> None:
        started = time.perf_counter()
        fetches = [self._fetch(DUMP_REQUEST, self.config.method)]
        if self.config.jobs.enabled:
            fetches.append(self._fetch(PROGRESS_REQUEST, "POST"))
        results = await asyncio.gather(*fetches)
        elapsed = time.perf_counter() - started
        parts, dump = self.ingest(results[0], results[1] if len(results) > 1 else None,
                                  secrets, elapsed)
        if after_dump is not None:
            try:
                result = await after_dump(self.name, dump)
            except Exception:  # the hook reports its failures in its result; not this
                log.exception("after-dump hook failed", extra=fields(target=self.name))
            else:
                if result is not None:
                    self.record_source(result)
                    parts.append(result.samples)
        self.publish(parts)

    def ingest(self, dump_result: Answer | PollError, progress_result: Answer | PollError | None,
               secrets: tuple[str, ...] = (), elapsed: float = 0.0,
               ) -> tuple[list[Samples], Dump | None]:
        """Turn one round of answers into samples and updated counters (no I/O)."""
        self.health.last_error = None
        self.health.errors.clear()
        self.health.count_poll("dump")
        self.health.series_dropped = 0
        budget = self.config.max_series  # series left for this round's data
        parts: list[Samples] = []
        dump: Dump | None = None
        if isinstance(dump_result, PollError):
            self.health.durations["dump"] = elapsed
            self.record_failure("dump", Failure.of(dump_result), secrets)
        else:
            self.health.durations["dump"] = dump_result.duration
            try:
                parsed = parse_dump(dump_result.body, budget)
                self._parse_errors("dump", parsed.errors)
                app_restarts = self.observe_dump(parsed.value)
                samples = dump_samples(self.name, parsed.value,
                                       dump_result.received_at, app_restarts)
                used = self._within_budget("dump", parsed.over_budget, samples, budget)
            except Exception as exc:  # up 0, never a half-read dump
                self.record_failure("dump", Failure.internal(exc))
            else:
                if used is not None:
                    dump = parsed.value
                    budget -= used
                    self.record_success("dump")
                    self.health.last_success_timestamp = dump_result.received_at
                    parts.append(samples)
        if progress_result is None:
            self.health.progress_up = None
            self.health.durations.pop("progress", None)
        else:
            self.health.count_poll("progress")
            try:
                parts.append(self._progress(progress_result, secrets, elapsed, budget))
            except Exception as exc:  # the dump side stays good
                self.record_failure("progress", Failure.internal(exc))
        return parts, dump

    def publish(self, parts: list[Samples]) -> None:
        """Swap in this round's view (health included) in one assignment.

        If rendering the data fails, the target is published with its health
        series alone (`sigma_up 0`, reason `internal`): never its old data.
        """
        self.polls_done += 1
        try:
            samples = merge([*parts, health_samples(self.name, self.health)])
            self.published = self._view(exposition.render(samples), samples)
            return
        except Exception as exc:  # see the docstring
            self.record_failure("dump", Failure.internal(exc))
        try:
            health = health_samples(self.name, self.health)
            self.published = self._view(exposition.render(health), health)
        except Exception:  # not even health renders: publish nothing
            log.exception("cannot render health series", extra=fields(target=self.name))
            self.published = TargetView(self.name, self._url, self.config.interval, {})

    def _view(self, rendered: exposition.Rendered, samples: Samples) -> TargetView:
        return TargetView(self.name, self._url, self.config.interval, rendered,
                          summarize(samples, self.health, self.media_clock))

    def _progress(self, result: Answer | PollError, secrets: tuple[str, ...],
                  elapsed: float, budget: int) -> Samples:
        if isinstance(result, PollError):
            self.health.durations["progress"] = elapsed
            self.record_failure("progress", Failure.of(result), secrets)
            return new_samples()
        self.health.durations["progress"] = result.duration
        # Filters and the max apply before a job's fields are read: a job we
        # leave out costs no parsing, however its fields are written.
        parsed = parse_progress(result.body, self.wants_job, self.config.jobs.max, budget)
        if parsed is None:
            self.record_failure("progress", Failure(
                "invalid_schema", "progress answer has no `result` object"), secrets)
            return new_samples()
        self._parse_errors("progress", parsed.errors)
        job_restarts = self.observe_jobs(parsed.value.jobs)
        samples = progress_samples(self.name, parsed.value, self.timezone,
                                   parsed.value.dropped, self.job_errors, job_restarts)
        if self._within_budget("progress", parsed.over_budget, samples, budget) is None:
            return new_samples()
        self.record_success("progress")
        return samples
