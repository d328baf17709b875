"""One shape for every source of a target's data, and the one `execute()` around each.

A source is what node_exporter calls a collector and blackbox_exporter a
prober: the dump and the progress of a Sigma server (`collect/sigma.py`),
agent mode's NVML (`agent/source.py`), the outputs. Each is a small object
with a `name`, the closed set of `reasons` it can fail for, the metric that
says whether it answered (`up_metric`, if it has one), and one coroutine:
`read(round)` returns a `Reading` (samples, plus a typed value that later
sources and the status page read) or raises `SourceError` with a reason.

`execute()` (collect/execute.py) is the only caller of `read`. It times the read, turns every
failure into one of the source's reasons (anything unforeseen is a bug of
ours: `internal`, its traceback logged once), applies the target's series
budget, and records the outcome in the source's health (`collect/health.py`:
polls and failures counted, the last error kept, changes of state logged).
A source writes nothing else and never sees another target.

The sources of one target run concurrently, each in its own task; a source
that needs another's result of the same round (progress needs the dump's
time zone, the NVML cross-check the dump's GPUs, the outputs the jobs)
awaits `round.value(name)`. The time spent waiting there is not the
source's own and is left out of its duration.

Adding a source: one module with a `Source` subclass and a factory
(`SourceFactory`: target config -> the sources for that target), its rows
in `metrics.py`, and the factory handed to the `Poller`. Nothing else
changes (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sigma_exporter.collect.samples import Samples
from sigma_exporter.config import TargetConfig
from sigma_exporter.source.errors import SourceError as SourceError

# Every source can fail for these, whatever it reads: its data exceeded the
# target's series budget, or a bug of ours while reading it.
COMMON_REASONS = ("series_limit", "internal")


@dataclass(frozen=True, slots=True)
class Reading:
    """What one successful read hands the target."""

    samples: Samples
    value: object = None  # the typed snapshot: for later sources and the status page
    received_at: float | None = None  # exporter wall clock when the data arrived
    parse_errors: tuple[str, ...] = ()  # field paths present but unreadable
    # The answer held more entries than the series budget allows; reading
    # stopped there, so the data is refused whatever `samples` counts.
    over_budget: bool = False
    # Problems this read found that an operator should see, as sentences
    # (the status page lists them): the NVML cross-check's mismatches, say.
    findings: tuple[str, ...] = ()


class Source:
    """One source of a target's data (see the module docstring)."""

    name: str = ""
    reasons: tuple[str, ...] = ()  # how `read` can fail, besides COMMON_REASONS
    up_metric: str | None = None  # the gauge that is 1 when the last read worked
    # Prefix of this source's field paths in sigma_parse_errors_total;
    # None: the source's name and a dot.
    field_prefix: str | None = None

    async def read(self, round: Round) -> Reading:
        raise NotImplementedError

    def kept_samples(self, target: str) -> Samples:
        """Series that outlive a failed read (counters such as restarts); none by default."""
        return {}

    async def aclose(self) -> None:
        """Let go of connections or threads; the target is being removed."""


# The sources a target has, made once per target config (and again after a
# reload changed it). A factory returns none for a target it does not serve.
SourceFactory = Callable[[TargetConfig], Sequence[Source]]


@dataclass(slots=True)
class Outcome:
    """One source's part of a round: its reading, or why there is none."""

    source: str
    reading: Reading | None
    failure: Failure | None
    duration: float


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one source failed this round: a reason, a message, and the exception
    when it was a bug of ours (logged with its traceback)."""

    reason: str
    message: str
    bug: BaseException | None = None

    @staticmethod
    def internal(exc: BaseException) -> Failure:
        return Failure("internal", f"{type(exc).__name__}: {exc}", exc)


class Round:
    """One poll of one target: the series budget, the secrets, every source's outcome."""

    def __init__(self, target: str, secrets: tuple[str, ...], series_budget: int,
                 sources: Sequence[str], clock: Callable[[], float] = time.perf_counter) -> None:
        self.target = target
        self.clock = clock  # times the sources (tests give a clock of their own)
        self.secrets = secrets  # blanked from every error message
        self.series_left = series_budget
        self.series_dropped = 0
        loop = asyncio.get_running_loop()
        self._outcomes: dict[str, asyncio.Future[Outcome]] = {
            name: loop.create_future() for name in sources}
        self._waited: dict[asyncio.Task[object] | None, float] = {}

    async def value(self, source: str) -> object:
        """The typed value `source` read this round, once it is done; None if it
        failed or the target has no such source."""
        future = self._outcomes.get(source)
        if future is None:
            return None
        started = self.clock()
        outcome = await asyncio.shield(future)
        task = asyncio.current_task()
        self._waited[task] = self._waited.get(task, 0.0) + self.clock() - started
        return None if outcome.reading is None else outcome.reading.value

    def waited(self) -> float:
        """Seconds the current task spent in `value` (not its own work)."""
        return self._waited.get(asyncio.current_task(), 0.0)

    def take_series(self, count: int, over: bool) -> int:
        """Charge `count` series to the budget; the number dropped (0: they fit)."""
        if not over and count <= self.series_left:
            self.series_left -= count
            return 0
        # Reading stopped at the budget: more than it allows were on their way.
        dropped = max(count, self.series_left + 1) if over else count
        self.series_dropped += dropped
        return dropped

    def done(self, outcome: Outcome) -> None:
        future = self._outcomes.get(outcome.source)
        if future is not None and not future.done():
            future.set_result(outcome)
