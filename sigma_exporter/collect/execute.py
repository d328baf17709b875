"""The one `execute()` around every source's read (node_exporter's `execute()`).

It times the read, turns every failure into one of the source's reasons
(anything unforeseen is a bug of ours: `internal`), charges the target's
series budget, records the outcome in the source's health and hands it to
the round, for the sources that wait on it. See collect/source.py for the
shape of a source.
"""

from __future__ import annotations

from sigma_exporter.collect.health import SourceHealth
from sigma_exporter.collect.source import Failure, Outcome, Reading, Round, Source, SourceError


async def execute(source: Source, round: Round, health: SourceHealth,
                  max_series: int) -> Outcome:
    """Read `source` once, for `round`: timed, classified, budgeted, recorded. Never raises
    (cancellation aside)."""
    started = round.clock()
    reading: Reading | None = None
    failure: Failure | None = None
    try:
        reading = await source.read(round)
        count = sum(map(len, reading.samples.values()))
        left = round.series_left
        dropped = round.take_series(count, reading.over_budget)
        if dropped:
            over = " or more" if reading.over_budget else ""
            failure = Failure("series_limit", f"series budget exceeded, data dropped: "
                              f"{dropped}{over} series, {left} left of max_series {max_series}")
    except SourceError as exc:
        failure = Failure(exc.reason, exc.message)
        if exc.reason not in health.reasons:  # a source naming a reason it did not declare
            failure = Failure.internal(ValueError(f"undeclared reason {exc.reason!r}: "
                                                  f"{exc.message}"))
    except Exception as exc:  # a bug of ours: this source's up 0, never a crash
        failure = Failure.internal(exc)
    duration = round.clock() - started - round.waited()
    outcome = Outcome(source.name, reading if failure is None else None, failure, duration)
    health.record(outcome.failure, duration, reading, round.secrets)
    round.done(outcome)
    return outcome
