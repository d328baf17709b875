"""The poll loop: one APScheduler job per target, results published as bytes.

Each poll asks for `dump` and `progress` at once, parses both, updates the
target's counters and renders its exposition. The result replaces the
target's previous one in a single assignment, so a scrape always reads a
complete picture and never waits on a poll.

A bug of ours while handling one target's answer (like node_exporter's
`execute()`) is that target's `sigma_up 0` with reason `internal`, never its
old data and never another target's problem.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sigma_exporter.collect import exposition
from sigma_exporter.collect.counters import ErrorLineCounter, RestartDetector
from sigma_exporter.collect.samples import (
    Health,
    Samples,
    dump_samples,
    health_samples,
    merge,
    new_samples,
    progress_samples,
)
from sigma_exporter.config import Config, TargetConfig
from sigma_exporter.redact import redact_text
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
from sigma_exporter.web.status import TargetStatus, summarize

log = logging.getLogger("sigma_exporter.poll.poller")

# An after-dump hook (agent mode): given the target and the fresh dump, it
# returns extra samples for that target (NVML readings, the cross-check).
AfterDump = Callable[["TargetState", Dump | None], Awaitable[Samples]]


# A target that keeps failing is logged when it goes down (or its reason
# changes), then reminded at most this often, then "recovered".
REMIND_DOWN_EVERY = 300.0


@dataclass(slots=True)
class _Down:
    reason: str
    since: float  # monotonic
    last_logged: float
    failures: int


@dataclass(frozen=True, slots=True)
class Published:
    """What a scrape reads for one target: immutable, swapped whole."""

    rendered: exposition.Rendered
    status: TargetStatus | None = None  # the status page's view; None before a poll


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
        self.published = Published({})
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

    # --- bookkeeping --------------------------------------------------------

    def count_error(self, source: str, reason: str) -> None:
        key = (source, reason)
        self.health.poll_errors[key] = self.health.poll_errors.get(key, 0) + 1

    def _fail(self, source: str, error: PollError, secrets: tuple[str, ...]) -> None:
        self.count_error(source, error.reason)
        message = redact_text(error.message, secrets)
        self.health.last_error = f"{source}: {error.reason}: {message}"
        self.health.errors[source] = f"{error.reason}: {message}"
        self._log_down(source, error.reason, message)

    def _log_down(self, source: str, reason: str, message: str) -> None:
        """Log a change (down, or a new reason), then a reminder at most every
        REMIND_DOWN_EVERY seconds: a server down for a day is not 10,000
        identical warnings. The counter still counts every failure."""
        now = time.monotonic()
        down = self._down.get(source)
        if down is None or down.reason != reason:
            since, failures = (now, 1) if down is None else (down.since, down.failures + 1)
            self._down[source] = _Down(reason, since, now, failures)
            log.warning("target down target=%s source=%s reason=%s error=%r",
                        self.name, source, reason, message)
            return
        down.failures += 1
        if now - down.last_logged >= REMIND_DOWN_EVERY:
            down.last_logged = now
            log.warning("target still down target=%s source=%s reason=%s for=%.0fs "
                        "failures=%d error=%r", self.name, source, reason, now - down.since,
                        down.failures, message)

    def _recovered(self, source: str) -> None:
        down = self._down.pop(source, None)
        if down is not None:
            log.info("target recovered target=%s source=%s after=%.0fs failures=%d",
                     self.name, source, time.monotonic() - down.since, down.failures)

    def _parse_errors(self, source: str, paths: tuple[str, ...]) -> None:
        for path in paths:
            key = f"{source}.{path}" if source != "dump" else path
            self.health.parse_errors[key] = self.health.parse_errors.get(key, 0) + 1
        if paths:
            log.debug("unparsable fields target=%s source=%s fields=%s",
                      self.name, source, ",".join(sorted(set(paths))))

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
        self._fail(source, PollError(
            "series_limit", f"series budget exceeded, data dropped: {dropped}"
            f"{' or more' if over else ''} series, {budget} left of max_series "
            f"{self.config.max_series}"), ())
        return None

    def observe_dump(self, dump: Dump) -> dict[str, int]:
        if dump.timezone is not None:
            self.timezone = dump.timezone
        before = self.server_start.restarts
        self.server_start.observe_start(dump.start_timestamp)
        if self.server_start.restarts != before:
            log.info("server restarted target=%s", self.name)
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
                self._internal("dump", exc)
                self.publish([])

    def _internal(self, source: str, exc: BaseException) -> None:
        """Record a bug of ours as this source's failure: down, counted, logged once."""
        if source == "progress":
            self.health.progress_up = False
        else:
            self.health.up = False
        self.count_error(source, "internal")
        self.health.last_error = f"{source}: internal: {type(exc).__name__}: {exc}"[:300]
        self.health.errors[source] = f"internal: {type(exc).__name__}: {exc}"[:300]
        if source not in self._down:  # for the "recovered" line; the traceback is below
            now = time.monotonic()
            self._down[source] = _Down("internal", now, now, 1)
        # The traceback once per distinct error, so a bug that repeats every
        # poll does not flood the log; the counter shows that it repeats.
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
        signature = f"{source}|{type(exc).__name__}|{where}"
        if signature in self._internal_errors_logged:
            log.debug("internal error again target=%s source=%s error=%r",
                      self.name, source, str(exc))
            return
        if len(self._internal_errors_logged) < 64:
            self._internal_errors_logged.add(signature)
        log.error("internal error, target marked down target=%s source=%s", self.name,
                  source, exc_info=exc)

    async def _fetch(self, source: str, payload: dict[str, str],
                     method: str) -> Answer | PollError:
        try:
            return await self.client.fetch(payload, method)
        except PollError as error:
            return error

    async def _poll(self, secrets: tuple[str, ...], after_dump: AfterDump | None) -> None:
        started = time.perf_counter()
        fetches = [self._fetch("dump", DUMP_REQUEST, self.config.method)]
        if self.config.jobs.enabled:
            fetches.append(self._fetch("progress", PROGRESS_REQUEST, "POST"))
        results = await asyncio.gather(*fetches)
        elapsed = time.perf_counter() - started
        parts, dump = self.ingest(results[0], results[1] if len(results) > 1 else None,
                                  secrets, elapsed)
        if after_dump is not None:
            try:
                parts.append(await after_dump(self, dump))
            except Exception:  # a bug in the agent hook must not stop the poll loop
                log.exception("after-dump hook failed target=%s", self.name)
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
            self.health.up = False
            self._fail("dump", dump_result, secrets)
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
                self._internal("dump", exc)
            else:
                self.health.up = used is not None
                if used is not None:
                    dump = parsed.value
                    budget -= used
                    self._recovered("dump")
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
                self._internal("progress", exc)
        return parts, dump

    def publish(self, parts: list[Samples]) -> None:
        """Swap in this round's exposition (health included) in one assignment.

        If rendering the data fails, the target is published with its health
        series alone (`sigma_up 0`, reason `internal`): never its old data.
        """
        self.polls_done += 1
        try:
            samples = merge([*parts, health_samples(self.name, self.health)])
            self.published = Published(exposition.render(samples),
                                       summarize(samples, self.health))
            return
        except Exception as exc:  # see the docstring
            self._internal("dump", exc)
        try:
            health = health_samples(self.name, self.health)
            self.published = Published(exposition.render(health),
                                       summarize(health, self.health))
        except Exception:  # not even health renders: publish nothing
            log.exception("cannot render health series target=%s", self.name)
            self.published = Published({})

    def _progress(self, result: Answer | PollError, secrets: tuple[str, ...],
                  elapsed: float, budget: int) -> Samples:
        if isinstance(result, PollError):
            self.health.durations["progress"] = elapsed
            self.health.progress_up = False
            self._fail("progress", result, secrets)
            return new_samples()
        self.health.durations["progress"] = result.duration
        # Filters and the max apply before a job's fields are read: a job we
        # leave out costs no parsing, however its fields are written.
        parsed = parse_progress(result.body, self.wants_job, self.config.jobs.max, budget)
        if parsed is None:
            self.health.progress_up = False
            self._fail("progress", PollError("invalid_schema",
                                             "progress answer has no `result` object"), secrets)
            return new_samples()
        self._parse_errors("progress", parsed.errors)
        job_restarts = self.observe_jobs(parsed.value.jobs)
        samples = progress_samples(self.name, parsed.value, self.timezone,
                                           parsed.value.dropped, self.job_errors, job_restarts)
        within = self._within_budget("progress", parsed.over_budget, samples, budget)
        self.health.progress_up = within is not None
        if within is None:
            return new_samples()
        self._recovered("progress")
        return samples


def tune_gc() -> None:
    """Make the cyclic GC cheap for a long-running poll loop.

    Each round allocates many short-lived objects (decoded JSON, samples);
    with CPython's default thresholds that triggers frequent full collections
    that walk every live object, a third of a 1,000-target round's CPU.
    Almost nothing we allocate forms cycles (refcounting frees it), so we
    collect less often and move the start-up objects out of the GC's sight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def poll_jitter(interval: float) -> float:
    """Most seconds a poll may start late: enough that a thousand targets do
    not all fire in one loop iteration, small enough that a round stays one
    burst (its answers then describe the fleet at one moment; at 15 s a
    1,000-target round finishes within about a second)."""
    return min(0.25, interval * 0.02)


# How publishes are coalesced into scrape-cache generations (Poller._published).
PUBLISH_SETTLE = 0.05
PUBLISH_MAX_DELAY = 0.25


class Poller:
    """Owns the targets' states and the scheduler that polls them."""

    def __init__(self, config: Config, after_dump: AfterDump | None = None) -> None:
        self.config = config
        self.contexts = SSLContexts()
        self.after_dump = after_dump
        self.targets: dict[str, TargetState] = {
            t.name: TargetState(t, self.contexts) for t in config.targets
        }
        self.scheduler: AsyncIOScheduler | None = None
        self._semaphore = asyncio.Semaphore(config.max_concurrent_polls)
        self._secrets = config.secrets()  # redacted from every log line and error
        self.first_round = asyncio.Event()
        # Bumped when published data changed; the scrape cache keys on it.
        # Publishes of a burst are coalesced (see `_published`).
        self.generation = 0
        self._pending_since: float | None = None
        self._bump: asyncio.TimerHandle | None = None
        # Called with the next generation just before it is published (the
        # web side prebuilds its bodies there); runs on the poll loop.
        self.on_flush: Callable[[int], None] | None = None

    async def poll_target(self, name: str) -> None:
        state = self.targets.get(name)
        if state is None:
            return
        async with self._semaphore:
            await state.poll(self._secrets, self.after_dump)
        self._published()
        if not self.first_round.is_set() and all(
                s.polls_done > 0 for s in self.targets.values()):
            self.flush_published()  # ready means every target is in /metrics now
            self.first_round.set()
            log.info("first poll round complete targets=%d up=%d", len(self.targets),
                     sum(1 for s in self.targets.values() if s.health.up))

    def _published(self) -> None:
        """Coalesce a burst of publishes into a few scrape-cache rebuilds.

        A round publishes a thousand targets within about a second; bumping
        the generation on each made every scrape in that second re-merge the
        whole fleet (~35 ms of CPU, fighting the poll loop for the GIL). The
        bump waits until publishing has paused for PUBLISH_SETTLE seconds,
        but never more than PUBLISH_MAX_DELAY after the first pending publish,
        so fresh data is at most that much later in /metrics.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._pending_since is None:
            self._pending_since = now
        if self._bump is not None:
            self._bump.cancel()
        delay = min(PUBLISH_SETTLE, self._pending_since + PUBLISH_MAX_DELAY - now)
        self._bump = loop.call_later(max(0.0, delay), self.flush_published)

    def flush_published(self) -> None:
        """Make everything published so far visible to the next scrape now."""
        if self._bump is not None:
            self._bump.cancel()
        self._bump = None
        self._pending_since = None
        generation = self.generation + 1
        if self.on_flush is not None:
            try:
                self.on_flush(generation)
            except Exception:  # scrapes then build lazily; never stop the poll loop
                log.exception("prebuilding the scrape body failed")
        self.generation = generation

    async def poll_all_once(self) -> None:
        await asyncio.gather(*(self.poll_target(name) for name in list(self.targets)))
        self.flush_published()

    def start(self) -> None:
        tune_gc()
        self.scheduler = AsyncIOScheduler()
        for state in self.targets.values():
            self._schedule(state.config)
        self.scheduler.start()

    def _schedule(self, target: TargetConfig) -> None:
        if self.scheduler is None:
            raise RuntimeError("scheduler not started")
        jitter = poll_jitter(target.interval)
        first = datetime.now() + timedelta(seconds=random.uniform(0, jitter))  # noqa: S311 - scheduling jitter, not security
        self.scheduler.add_job(
            self.poll_target, IntervalTrigger(seconds=target.interval, jitter=jitter),
            args=[target.name], id=target.name, name=f"poll {target.name}",
            next_run_time=first, max_instances=1, coalesce=True, misfire_grace_time=None,
            replace_existing=True,
        )

    async def reload(self, config: Config) -> None:
        """Swap in a new config: unchanged targets keep their state and counters."""
        old = self.targets
        new: dict[str, TargetState] = {}
        for target in config.targets:
            state = old.get(target.name)
            if state is not None and state.config == target:
                new[target.name] = state
            else:
                new[target.name] = TargetState(target, self.contexts)
        removed = [s for name, s in old.items() if new.get(name) is not s]
        self.config = config
        self._secrets = config.secrets()
        self.targets = new
        self._semaphore = asyncio.Semaphore(config.max_concurrent_polls)
        if self.scheduler is not None:
            for state in removed:
                if self.scheduler.get_job(state.name) is not None:
                    self.scheduler.remove_job(state.name)
            for target in config.targets:
                if old.get(target.name) is not new[target.name]:
                    self._schedule(target)
        for state in removed:
            await state.client.aclose()
        self.flush_published()

    async def stop(self) -> None:
        if self._bump is not None:
            self._bump.cancel()
            self._bump = None
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        for state in self.targets.values():
            await state.client.aclose()
