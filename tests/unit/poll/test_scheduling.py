"""How the poll loop schedules a fleet and when /metrics sees what it published."""

from __future__ import annotations

import asyncio
import gzip as gzip_module
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

from conftest import free_port, free_ports, value

from sigma_exporter.config import Config, TargetConfig
from sigma_exporter.poll.poller import PUBLISH_MAX_DELAY, PUBLISH_SETTLE, Poller, poll_jitter
from sigma_exporter.sim.simulator import Simulator, make_servers
from sigma_exporter.web.server import PREBUILD_WINDOW, Exporter


def test_a_round_starts_within_a_quarter_second() -> None:
    async def run() -> None:
        refused = f"http://127.0.0.1:{free_port()}"  # nothing listens: polls fail fast
        config = Config(tuple(TargetConfig(name=f"t{i}", url=refused, interval=15.0,
                                           timeout=1.0) for i in range(50)))
        poller = Poller(config)
        before = datetime.now().astimezone()
        poller.start()
        try:
            assert poller.scheduler is not None
            jobs = poller.scheduler.get_jobs()
            assert len(jobs) == 50
            firsts = [job.next_run_time for job in jobs]
            # The first round: now, each target at most the jitter late (the
            # adding itself takes a few ms; start-up GC work before it may take more).
            assert min(firsts) >= before
            assert max(firsts) - min(firsts) <= timedelta(seconds=0.3)
            for job in jobs:
                assert job.trigger.interval == timedelta(seconds=15)
                assert job.trigger.jitter == 0.25
                # Later rounds sit on one grid (start_date + n * interval),
                # each fire at most the jitter late.
                start = job.trigger.start_date
                fire = job.trigger.get_next_fire_time(None, start + timedelta(seconds=15))
                assert start + timedelta(seconds=15) <= fire
                assert fire <= start + timedelta(seconds=15.25)
            spread = max(j.trigger.start_date for j in jobs) - min(
                j.trigger.start_date for j in jobs)
            assert spread < timedelta(seconds=0.1)
        finally:
            await poller.stop()

    asyncio.run(run())


def test_jitter_is_small_for_short_intervals_and_capped_for_long_ones() -> None:
    assert poll_jitter(1.0) == 0.02
    assert poll_jitter(5.0) == 0.1
    assert poll_jitter(15.0) == 0.25
    assert poll_jitter(600.0) == 0.25


class FakeClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the test moves: timers fire when it says."""

    now = 1000.0

    def time(self) -> float:
        return self.now


def _drain_timers() -> Awaitable[None]:
    async def drain() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
    return drain()


def test_a_burst_of_publishes_is_coalesced_but_never_held_back_long() -> None:
    loop = FakeClockLoop()

    async def run() -> None:
        poller = Poller(Config((TargetConfig(name="t", url="http://127.0.0.1:9"),)))
        # A round: a publish every 10 ms for one second.
        bumps: list[float] = []
        oldest_unseen: float | None = None
        worst_lag = 0.0
        for _ in range(100):
            before = poller.generation
            poller._published()
            oldest_unseen = loop.now if oldest_unseen is None else oldest_unseen
            loop.now += 0.01
            await _drain_timers()
            if poller.generation != before:
                bumps.append(loop.now)
                worst_lag = max(worst_lag, loop.now - oldest_unseen)
                oldest_unseen = None
        # Quiet afterwards: the tail is flushed once publishing settles.
        loop.now += PUBLISH_SETTLE
        await _drain_timers()
        assert poller._pending_since is None and poller._bump is None  # nothing held back
        assert 3 <= len(bumps) <= 6, bumps  # not 100 cache rebuilds
        assert worst_lag <= PUBLISH_MAX_DELAY + 0.011
        settled = poller.generation

        # A lone publish is visible after the settle time, not before.
        poller._published()
        loop.now += PUBLISH_SETTLE / 2
        await _drain_timers()
        assert poller.generation == settled
        loop.now += PUBLISH_SETTLE / 2 + 0.001
        await _drain_timers()
        assert poller.generation == settled + 1
        await poller.stop()

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


def test_poll_all_once_and_reload_make_results_visible_at_once() -> None:
    async def run() -> None:
        config = Config((TargetConfig(name="t", url=f"http://127.0.0.1:{free_port()}",
                                      timeout=1.0),))
        poller = Poller(config)
        before = poller.generation
        await poller.poll_all_once()
        assert poller.generation > before  # `once` and tests read right after
        assert poller._bump is None
        before = poller.generation
        await poller.reload(config)
        assert poller.generation > before
        await poller.stop()

    asyncio.run(run())


# --- the scrape body is built ahead, for what scrapers ask for -----------------------


def test_scrape_bodies_are_prebuilt_for_asked_variants_only() -> None:
    async def run() -> None:
        first = free_ports(2)
        sim = Simulator(make_servers(2), listen_host="127.0.0.1", first_port=first)
        async with sim:
            poller = Poller(Config(tuple(TargetConfig(name=f"s{i}", url=sim.url(i),
                                                      timeout=2.0) for i in range(2))))
            exporter = Exporter(poller)
            builds: list[tuple[bool, bool, int]] = []
            real_build = exporter._build

            def counting(openmetrics: bool, gzip: bool, generation: int) -> Any:
                builds.append((openmetrics, gzip, generation))
                return real_build(openmetrics, gzip, generation)

            exporter._build = counting  # type: ignore[method-assign]
            try:
                await poller.poll_all_once()  # nobody asked yet: nothing prebuilt
                assert builds == []
                body = gzip_module.decompress(exporter.metrics_body(True, True))
                assert builds == [(True, True, poller.generation)]  # built on demand once
                assert value(body.decode(), "sigma_up", target="s1") == 1

                sim.set_job_speed(1, "VTV3", 0.5)
                await poller.poll_all_once()  # flushed: the asked variant is prebuilt
                assert builds[-1] == (True, True, poller.generation)
                assert len(builds) == 2
                body = gzip_module.decompress(exporter.metrics_body(True, True))
                assert len(builds) == 2  # the scrape found it ready
                assert value(body.decode(), "sigma_job_speed", target="s1", job_name="VTV3") == 0.5
                assert body.endswith(b"# EOF\n")

                # A variant nobody scraped for PREBUILD_WINDOW is no longer prebuilt.
                exporter._asked[(True, True)] -= PREBUILD_WINDOW + 1
                await poller.poll_all_once()
                assert len(builds) == 2
            finally:
                await poller.stop()

    asyncio.run(run())


def test_a_prebuilt_body_of_the_next_generation_is_served_as_is() -> None:
    async def run() -> None:
        poller = Poller(Config((TargetConfig(name="t", url=f"http://127.0.0.1:{free_port()}",
                                             timeout=1.0),)))
        exporter = Exporter(poller)
        exporter.metrics_body(False, False)
        # The poll loop has built generation N+1 but not announced it yet.
        exporter.prebuild(poller.generation + 1)
        ahead = exporter._bodies[(False, False)]
        exporter.metrics_body(False, False)
        assert exporter._bodies[(False, False)] is ahead  # not rebuilt for the older number
        await poller.stop()

    asyncio.run(run())
