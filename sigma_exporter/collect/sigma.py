"""The two sources every target has: a Sigma server's `dump` and its `progress`.

Both ask the server over the target's one client (a keep-alive pool of two
connections), at the same time. An answer whose `ec` is present and not 0 is
Sigma refusing the call (`api_error`, its `msg` kept, bounded): never a good
poll, whatever else the answer holds. Progress reads the dump of the same
round for the server's time zone, and falls back to the last one it saw.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sigma_exporter.collect.counters import ErrorLineCounter, RestartDetector
from sigma_exporter.collect.samples import Samples, dump_samples, progress_samples
from sigma_exporter.collect.source import Reading, Round, Source, SourceFactory
from sigma_exporter.config import TargetConfig
from sigma_exporter.source.client import (
    DUMP_REQUEST,
    PROGRESS_REQUEST,
    READ_COST,
    REASONS,
    Answer,
    SigmaClient,
    SSLContexts,
)
from sigma_exporter.source.errors import PollError
from sigma_exporter.source.parse import parse_dump, parse_progress
from sigma_exporter.source.snapshot import Dump, Job
from sigma_exporter.source.units import wall_clock_zone

# Most characters of Sigma's `msg` kept with an `api_error`.
MAX_MSG_CHARS = 200


class Fetcher(Protocol):
    """What the two sources need of a client: `SigmaClient`, or a test's stand-in."""

    async def fetch(self, payload: dict[str, str], method: str = "POST") -> Answer: ...

    async def aclose(self) -> None: ...


def _key(body: Mapping[str, Any], name: str) -> Any:
    """`body[name]`, matching the key's case loosely as Sigma writes it."""
    if name in body:
        return body[name]
    for key, value in body.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def refusal(body: Mapping[str, Any]) -> PollError | None:
    """The `api_error` of an answer whose `ec` is present and not 0, else None.

    Sigma documents `ec` 0 as success and `{"ec": N, "msg": "..."}` for a
    refused call. `null` is taken for absent; any other value than 0 (as a
    number or a numeric string) is a refusal.
    """
    ec = _key(body, "ec")
    if ec is None:
        return None
    if isinstance(ec, bool):
        ok = False
    elif isinstance(ec, int | float):
        ok = ec == 0
    else:
        try:
            ok = float(str(ec)) == 0
        except ValueError:
            ok = False
    if ok:
        return None
    code = f"{ec:g}" if isinstance(ec, float) and math.isfinite(ec) else str(ec)
    msg = _key(body, "msg")
    said = "" if msg is None else _printable(str(msg))
    return PollError("api_error", f"Sigma refused the call: ec {_printable(code)[:20]}"
                     + (f": {said}" if said else " (no msg)"))


def _printable(text: str) -> str:
    """One line of printable text, at most MAX_MSG_CHARS: `msg` is the server's to write."""
    clean = "".join(c if c.isprintable() else " " for c in text[:MAX_MSG_CHARS * 2])
    clean = " ".join(clean.split())
    return clean if len(clean) <= MAX_MSG_CHARS else clean[:MAX_MSG_CHARS - 1] + "…"


def _checked(answer: Answer) -> Answer:
    error = refusal(answer.body)
    if error is not None:
        raise error
    return answer


def _read_in_time(answer: Answer, read_since: float) -> None:
    """Learn what this read cost; refuse its data if it overran the target's timeout.

    `read_since`: time.monotonic() when the answer was decoded. The client
    refuses an answer whose read is unlikely to fit (READ_COST); this catches
    the one that did not fit anyway: a poll's whole cost stays within the
    timeout, or its data is not published.
    """
    now = time.monotonic()
    READ_COST.observe(answer.size, answer.decode_seconds + now - read_since)
    if now > answer.deadline:
        raise PollError("timeout", f"reading the answer of {answer.size} bytes ended "
                        f"{now - answer.deadline:.2f}s past the target's timeout: data dropped")


class DumpSource(Source):
    """The server, its host, GPUs and apps (`{"type": "dump"}`)."""

    name = "dump"
    reasons = REASONS
    up_metric = "sigma_up"
    field_prefix = ""  # dump paths are the metric's field names as they are

    def __init__(self, config: TargetConfig, client: Fetcher) -> None:
        self.config = config
        self.client = client
        self.server_start = RestartDetector()
        self.app_uptimes: dict[str, RestartDetector] = {}
        self._read_once = False

    async def read(self, round: Round) -> Reading:
        self._read_once = True
        answer = _checked(await self.client.fetch(DUMP_REQUEST, self.config.method))
        read_since = time.monotonic()
        parsed = parse_dump(answer.body, round.series_left)
        dump = parsed.value
        samples = dump_samples(self.config.name, dump, answer.received_at,
                               self._observe(dump))
        _read_in_time(answer, read_since)
        return Reading(samples, dump, answer.received_at, parsed.errors, parsed.over_budget)

    def _observe(self, dump: Dump) -> dict[str, int]:
        """Restarts of the server and of its apps, seen from their start and uptimes."""
        self.server_start.observe_start(dump.start_timestamp)
        names = {app.name for app in dump.apps}
        for app in dump.apps:
            detector = self.app_uptimes.get(app.name)
            if detector is None:  # not setdefault: that builds one every poll
                detector = self.app_uptimes[app.name] = RestartDetector()
            detector.observe_uptime(app.uptime_seconds)
        for gone in set(self.app_uptimes) - names:
            del self.app_uptimes[gone]
        return {name: d.restarts for name, d in self.app_uptimes.items()}

    def kept_samples(self, target: str) -> Samples:
        # Exists from the first poll, whatever its outcome, so rate() sees its start.
        if not self._read_once:
            return {}
        return {"sigma_server_restarts_total": [((target,), float(self.server_start.restarts))]}

    async def aclose(self) -> None:
        await self.client.aclose()


class ProgressSource(Source):
    """Every job (channel) of the server (`{"type": "progress", "name": "*"}`)."""

    name = "progress"
    reasons = REASONS
    up_metric = "sigma_progress_up"

    def __init__(self, config: TargetConfig, client: Fetcher) -> None:
        self.config = config
        self.client = client
        self.timezone: str | None = None  # the zone the last dump named
        self.job_uptimes: dict[str, RestartDetector] = {}
        self.job_errors: dict[str, ErrorLineCounter] = {}

    def wants_job(self, name: str) -> bool:
        """Whether the include/exclude rules keep the job named `name`."""
        rules = self.config.jobs
        return ((rules.include is None or rules.include.search(name) is not None)
                and (rules.exclude is None or rules.exclude.search(name) is None))

    async def read(self, round: Round) -> Reading:
        answer = _checked(await self.client.fetch(PROGRESS_REQUEST, "POST"))
        read_since = time.monotonic()
        # Filters and the max apply before a job's fields are read: a job we
        # leave out costs no parsing, however its fields are written.
        parsed = parse_progress(answer.body, self.wants_job, self.config.jobs.max,
                                round.series_left)
        if parsed is None:
            raise PollError("invalid_schema", "progress answer has no `result` object")
        waited = time.monotonic()
        dump = await round.value("dump")
        read_since += time.monotonic() - waited  # waiting for the dump is not reading
        if isinstance(dump, Dump) and dump.timezone is not None:
            self.timezone = dump.timezone
        progress = parsed.value
        job_restarts = self._observe(progress.jobs)
        wall_zone = wall_clock_zone(self.config.timezone, self.timezone)
        samples = progress_samples(self.config.name, progress, wall_zone,
                                   progress.dropped, self.job_errors, job_restarts)
        _read_in_time(answer, read_since)
        return Reading(samples, progress, answer.received_at, parsed.errors,
                       parsed.over_budget)

    def _observe(self, jobs: Sequence[Job]) -> dict[str, int]:
        names = {job.name for job in jobs}
        for job in jobs:
            detector = self.job_uptimes.get(job.name)
            if detector is None:  # not setdefault: that builds one every poll
                detector = self.job_uptimes[job.name] = RestartDetector()
            detector.observe_uptime(job.uptime_seconds)
            if job.errors is not None:
                counter = self.job_errors.get(job.name)
                if counter is None:
                    counter = self.job_errors[job.name] = ErrorLineCounter()
                counter.observe(job.errors)
        # A job that disappeared takes its series and its memory with it.
        for gone in set(self.job_uptimes) - names:
            del self.job_uptimes[gone]
        for gone in set(self.job_errors) - names:
            del self.job_errors[gone]
        return {name: d.restarts for name, d in self.job_uptimes.items()}


def sigma_sources(contexts: SSLContexts) -> SourceFactory:
    """The dump and (unless `jobs.enabled: false`) progress sources of a target,
    sharing one client; `contexts` shares SSL contexts across targets."""
    def make(config: TargetConfig) -> list[Source]:
        client = SigmaClient(config, contexts)
        sources: list[Source] = [DumpSource(config, client)]
        if config.jobs.enabled:
            sources.append(ProgressSource(config, client))
        return sources
    return make

