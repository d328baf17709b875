"""The poll loop: one APScheduler job per target, published as one View per generation.

The poller owns every TargetState and runs on the main thread's event loop.
Whenever published data changed it builds a new immutable `View` and swaps
it in with one assignment (`self.view = ...`); the web thread only ever
reads that attribute. `on_publish`, when the application sets it, is told
of each new View (it schedules work on the web thread; it must not block).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sigma_exporter.collect.sigma import sigma_sources
from sigma_exporter.collect.source import SourceFactory
from sigma_exporter.config import Config, TargetConfig
from sigma_exporter.logsetup import fields
from sigma_exporter.poll.target import TargetState
from sigma_exporter.poll.view import ConfigReload, View
from sigma_exporter.source.client import SSLContexts

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


def poll_jitter(interval: float) -> float:
    """Most seconds a poll may start late: enough that a thousand targets do
    not all fire in one loop iteration, small enough that a round stays one
    burst (its answers then describe the fleet at one moment; at 15 s a
    1,000-target round finishes within about a second)."""
    return min(0.25, interval * 0.02)


# How publishes are coalesced into Views (Poller._published).
PUBLISH_SETTLE = 0.05
PUBLISH_MAX_DELAY = 0.25


class Poller:
    """Owns the targets' states and the scheduler that polls them."""

    def __init__(self, config: Config, sources: Sequence[SourceFactory] = ()) -> None:
        """`sources`: factories of the sources besides a Sigma server's own dump and
        progress (agent mode's NVML, the outputs), asked once per target config."""
        self.config = config
        self.contexts = SSLContexts()
        self.factories: tuple[SourceFactory, ...] = (sigma_sources(self.contexts), *sources)
        self.targets: dict[str, TargetState] = {
            t.name: self._state(t) for t in config.targets
        }
        self.scheduler: AsyncIOScheduler | None = None
        # The polls running now, with the state each polls: cut short (cancelled and
        # awaited) before their state's sources close, at stop and on a reload.
        self._polling: dict[asyncio.Task[Any], TargetState] = {}
        self._cutting: set[asyncio.Task[Any]] = set()  # cancelled by `_cut`, on purpose
        self._semaphore = asyncio.Semaphore(config.max_concurrent_polls)
        self._secrets = config.secrets()  # redacted from every log line and error
        self.first_round = asyncio.Event()
        self._reload = ConfigReload()
        # Publishes of a burst are coalesced into one View (see `_published`).
        self._pending_since: float | None = None
        self._bump: asyncio.TimerHandle | None = None
        # Told of each new View; the application schedules the web side's
        # prebuild with it. Runs on the poll loop: it must only schedule.
        self.on_publish: Callable[[View], None] | None = None
        self.view = self._next_view(0)

    def _state(self, target: TargetConfig) -> TargetState:
        return TargetState(target, [s for make in self.factories for s in make(target)])

    @property
    def generation(self) -> int:
        return self.view.generation

    def _next_view(self, generation: int) -> View:
        return View.of(generation, [s.published for s in self.targets.values()],
                       self.first_round.is_set(), self._reload)

    async def poll_target(self, name: str) -> None:
        """One poll of a target: the scheduler's job. It never raises: APScheduler
        logs an escaping exception (a cancellation too) as an error with a traceback."""
        state = self.targets.get(name)
        task = asyncio.current_task()
        if state is None or task is None:
            return
        self._polling[task] = state
        try:
            async with self._semaphore:
                await state.poll(self._secrets)
        except asyncio.CancelledError:
            if task in self._cutting:
                return  # cut short on purpose (`_cut`): stopping, or a reload replaced it
            raise
        finally:
            self._polling.pop(task, None)
            self._cutting.discard(task)
        self._published()
        if not self.first_round.is_set() and all(
                s.polls_done > 0 for s in self.targets.values()):
            self.first_round.set()
            self.flush_published()  # ready means every target is in /metrics now
            log.info("first poll round complete", extra=fields(
                targets=len(self.targets),
                up=sum(1 for s in self.targets.values() if s.health.up)))

    def _published(self) -> None:
        """Coalesce a burst of publishes into a few Views.

        A round publishes a thousand targets within about a second; a View
        per publish made every scrape in that second re-merge the whole fleet
        (~35 ms of CPU, fighting the poll loop for the GIL). The new View
        waits until publishing has paused for PUBLISH_SETTLE seconds, but
        never more than PUBLISH_MAX_DELAY after the first pending publish,
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
        """Hand the web side everything published so far: a new View, now."""
        if self._bump is not None:
            self._bump.cancel()
        self._bump = None
        self._pending_since = None
        view = self._next_view(self.view.generation + 1)
        self.view = view  # the hand-off: one assignment
        if self.on_publish is not None:
            try:
                self.on_publish(view)
            except Exception:  # scrapes then build lazily; never stop the poll loop
                log.exception("announcing a new view failed")

    def reload_failed(self) -> None:
        """A config reload was refused: sigma_config_last_reload_successful 0, at once."""
        self._reload = ConfigReload(False, self._reload.last_success)
        self.flush_published()

    async def poll_all_once(self) -> None:
        await asyncio.gather(*(self.poll_target(name) for name in list(self.targets)))
        self.flush_published()

    def start(self) -> None:
        # Imported here: `once` polls through a Poller and never schedules.
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.scheduler = AsyncIOScheduler()
        for state in self.targets.values():
            self._schedule(state.config)
        self.scheduler.start()

    def _schedule(self, target: TargetConfig) -> None:
        if self.scheduler is None:
            raise RuntimeError("scheduler not started")
        from apscheduler.triggers.interval import IntervalTrigger

        jitter = poll_jitter(target.interval)
        first = datetime.now() + timedelta(seconds=random.uniform(0, jitter))  # noqa: S311 - scheduling jitter, not security
        self.scheduler.add_job(
            self.poll_target, IntervalTrigger(seconds=target.interval, jitter=jitter),
            args=[target.name], id=target.name, name=f"poll {target.name}",
            next_run_time=first, max_instances=1, coalesce=True, misfire_grace_time=None,
            replace_existing=True,
        )

    async def reload(self, config: Config, rebuild: bool = False) -> None:
        """Swap in a new config (a successful reload): unchanged targets keep
        their state and counters, unless `rebuild` (a factory's settings changed:
        every target gets its sources anew)."""
        old = self.targets
        new: dict[str, TargetState] = {}
        for target in config.targets:
            state = old.get(target.name)
            if state is not None and state.config == target and not rebuild:
                new[target.name] = state
            else:
                new[target.name] = self._state(target)
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
        await self._cut(removed)
        for state in removed:
            await state.aclose()
        self._reload = ConfigReload(True, time.time())
        self.flush_published()

    async def stop(self) -> None:
        if self._bump is not None:
            self._bump.cancel()
            self._bump = None
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        await self._cut(list(self.targets.values()))
        for state in self.targets.values():
            await state.aclose()

    async def _cut(self, states: Sequence[TargetState]) -> None:
        """Cancel the polls running on `states` and wait until they have ended, so that
        no poll is left reading a source that is about to close (it would fail with a
        traceback in the log; a stop or a reload is not the target's failure)."""
        cut = [task for task, state in self._polling.items()
               if any(state is s for s in states) and task is not asyncio.current_task()]
        for task in cut:
            self._cutting.add(task)
            task.cancel()
        if cut:
            await asyncio.wait(cut)
