"""What one source's round hands the target's state: samples, or why it failed.

Dump and progress are read by the poll side itself; an extra source (agent
mode's NVML reader) returns a `SourceResult` and writes nothing, and the
target's state records it through the same path as the other two
(`poll/target.py`, `TargetState.record_source`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sigma_exporter.collect.samples import Samples
from sigma_exporter.source.client import PollError
from sigma_exporter.source.snapshot import Dump


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one source failed this round: a reason of the closed set, a message,
    and the exception when it was a bug of ours (logged with its traceback)."""

    reason: str
    message: str
    bug: BaseException | None = None

    @staticmethod
    def of(error: PollError) -> Failure:
        return Failure(error.reason, error.message)

    @staticmethod
    def internal(exc: BaseException, reason: str = "internal") -> Failure:
        return Failure(reason, f"{type(exc).__name__}: {exc}", exc)


@dataclass(frozen=True, slots=True)
class SourceResult:
    """One round of an extra source (agent mode's `nvml`), as its reader returns it."""

    source: str
    reasons: tuple[str, ...]  # how it can fail; each counter exists at 0 from the first round
    samples: Samples
    duration: float
    failure: Failure | None = None


# An after-dump hook (agent mode): given the target's name and its fresh dump,
# it reads its own source and returns the result (None: not for this target).
# It writes nothing; the target's state records the result.
AfterDump = Callable[[str, Dump | None], Awaitable[SourceResult | None]]
