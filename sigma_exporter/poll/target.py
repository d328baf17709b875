"""One target between polls: its sources, their health, its last published view.

A poll is one round of every source of the target (`collect/source.py`):
they run at once, each inside `execute()`, which times it, classifies its
failure, charges the series budget and records its health. The round's
readings, the sources' kept series and the health series are then rendered
together, and the result replaces the target's previous `TargetView` in a
single assignment; the poller collects those into the View the web side
reads.

A bug of ours outside every source (while rendering, say) is the target's
`sigma_up 0` with reason `internal` and its health series alone, never its
old data and never another target's problem.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from sigma_exporter.collect import exposition
from sigma_exporter.collect.execute import execute
from sigma_exporter.collect.health import SourceHealth, TargetHealth
from sigma_exporter.collect.samples import Samples
from sigma_exporter.collect.source import COMMON_REASONS, Failure, Outcome, Round, Source
from sigma_exporter.config import TargetConfig
from sigma_exporter.logsetup import fields
from sigma_exporter.poll.summary import MediaClock, summarize
from sigma_exporter.poll.view import TargetView
from sigma_exporter.redact import redact_url

log = logging.getLogger(__name__)


def source_health(target: str, source: Source) -> SourceHealth:
    reasons = tuple(dict.fromkeys([*source.reasons, *COMMON_REASONS]))
    prefix = source.field_prefix if source.field_prefix is not None else f"{source.name}."
    return SourceHealth(target, source.name, reasons, source.up_metric, prefix)


class TargetState:
    """Everything the exporter remembers about one target between polls: its
    sources (which keep their own counters), their health, its published view."""

    def __init__(self, config: TargetConfig, sources: Sequence[Source],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not sources:
            raise ValueError(f"target {config.name} has no source")
        self.config = config
        self.sources = tuple(sources)
        self.clock = clock  # times each source's read
        self.health = TargetHealth(config.interval,
                                   [source_health(config.name, s) for s in self.sources])
        self.polls_done = 0
        self.media_clock = MediaClock()  # the status page's stalled channels
        self._url = redact_url(config.url)
        self.published = TargetView(config.name, self._url, config.interval, {})
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    async def poll(self, secrets: tuple[str, ...] = ()) -> None:
        """One round of every source, then publish; never raises, whatever happens inside."""
        async with self._lock:  # never two rounds of one target at once
            try:
                this = Round(self.name, secrets, self.config.max_series,
                             [s.name for s in self.sources], self.clock)
                outcomes = await asyncio.gather(*(
                    execute(s, this, self.health.sources[s.name], self.config.max_series)
                    for s in self.sources))
                self.health.series_dropped = this.series_dropped
            except Exception as exc:  # a bug of ours outside the sources: the target's up 0
                self._internal(exc, secrets, counted=False)
                outcomes = []
            self.publish(outcomes, secrets)

    def publish(self, outcomes: Sequence[Outcome], secrets: tuple[str, ...] = ()) -> None:
        """Swap in this round's view (health included) in one assignment.

        If rendering fails, the target is published with its health series
        alone (`sigma_up 0`, reason `internal`): never its old data.
        """
        self.polls_done += 1
        try:
            parts = [o.reading.samples for o in outcomes if o.reading is not None]
            rendered = exposition.render_parts(
                [*parts, *self._kept(), self.health.samples(self.name)])
            self.published = TargetView(self.name, self._url, self.config.interval,
                                        rendered,
                                        summarize(outcomes, self.health, self.media_clock))
            return
        except Exception as exc:  # see the docstring
            self._internal(exc, secrets, counted=True)
        try:
            health = exposition.render_parts([*self._kept(), self.health.samples(self.name)])
            self.published = TargetView(self.name, self._url, self.config.interval,
                                        health, summarize([], self.health))
        except Exception:  # not even health renders: publish nothing
            log.exception("cannot render health series", extra=fields(target=self.name))
            self.published = TargetView(self.name, self._url, self.config.interval, {})

    def _kept(self) -> list[Samples]:
        return [s.kept_samples(self.name) for s in self.sources]

    def _internal(self, exc: Exception, secrets: tuple[str, ...], counted: bool) -> None:
        primary = self.health.sources[self.sources[0].name]
        primary.record(Failure.internal(exc), None, None, secrets, counted=counted)

    async def aclose(self) -> None:
        for source in self.sources:
            await source.aclose()
