"""How the poll loop schedules a fleet and when /metrics sees what it published."""

from __future__ import annotations

import asyncio
import gc
import gzip as gzip_module
import logging
import threading
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import free_port, free_ports, value

from sigma_exporter.collect import exposition
from sigma_exporter.collect.health import TargetHealth
from sigma_exporter.config import Config, TargetConfig
from sigma_exporter.poll.scheduler import PUBLISH_MAX_DELAY, PUBLISH_SETTLE, Poller, poll_jitter
from sigma_exporter.poll.view import ConfigReload, TargetView, View
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.web.exporter import PREBUILD_WINDOW, Exporter


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
            # The application schedules this on the web thread; one loop does here.
            poller.on_publish = exporter.prebuild
            builds: list[tuple[bool, bool, int]] = []
            real_build = exporter._build

            def counting(openmetrics: bool, gzip: bool, view: View) -> Any:
                builds.append((openmetrics, gzip, view.generation))
                return real_build(openmetrics, gzip, view)

            exporter._build = counting  # type: ignore[method-assign]
            try:
                await poller.poll_all_once()  # nobody asked yet: nothing prebuilt
                assert builds == []
                body = gzip_module.decompress(exporter.metrics_body(True, True))
                assert builds == [(True, True, poller.generation)]  # built on demand once
                assert value(body.decode(), "sigma_up", target="s1") == 1

                sim.set_job_speed(1, "VTV3", 0.5)
                await poller.poll_all_once()  # announced: the asked variant is prebuilt
                exporter._building[(True, True)].result(timeout=10)  # on the build thread
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
                exporter.close()
                await poller.stop()

    asyncio.run(run())


def test_a_scrape_during_a_build_gets_the_last_complete_body_at_once() -> None:
    """The build of a new View's body (the whole fleet merged and compressed)
    runs on the build thread: a scrape meanwhile is answered from the last
    complete body instead of waiting for it, and the next one gets the new."""
    async def run() -> None:
        first = free_ports(1)
        sim = Simulator(make_servers(1), listen_host="127.0.0.1", first_port=first)
        async with sim:
            poller = Poller(Config((TargetConfig(name="s0", url=sim.url(0), timeout=2.0),)))
            exporter = Exporter(poller)
            poller.on_publish = exporter.prebuild
            release = threading.Event()
            real_build = exporter._build

            def slow(openmetrics: bool, gzip: bool, view: View) -> Any:
                release.wait(timeout=30)  # a build that takes as long as the test says
                return real_build(openmetrics, gzip, view)

            try:
                await poller.poll_all_once()
                first_body = exporter.metrics_body(False, False).decode()  # built now
                assert value(first_body, "sigma_job_speed", target="s0", job_name="VTV3") != 0.25
                exporter._build = slow  # type: ignore[method-assign]
                sim.set_job_speed(0, "VTV3", 0.25)
                await poller.poll_all_once()  # announced: the build starts and blocks
                pending = exporter._building[(False, False)]
                during = exporter.metrics_body(False, False).decode()  # does not wait
                assert not pending.done()
                assert value(during, "sigma_job_speed", target="s0", job_name="VTV3") \
                    == value(first_body, "sigma_job_speed", target="s0", job_name="VTV3")
                release.set()
                pending.result(timeout=10)
                after = exporter.metrics_body(False, False).decode()
                assert value(after, "sigma_job_speed", target="s0", job_name="VTV3") == 0.25
            finally:
                release.set()
                exporter.close()
                await poller.stop()

    asyncio.run(run())


def test_views_announced_during_a_build_are_not_lost_the_newest_is_built_next() -> None:
    """A 1,000-target round announces several Views; one build at a time must not
    drop the ones that arrive meanwhile: the newest is built as soon as the
    running build ends, and the next scrape gets it."""
    def make_view(generation: int) -> View:
        rendered = exposition.render({"sigma_poll_interval_seconds": [(("t",),
                                                                       float(generation))]})
        return View.of(generation, [TargetView("t", "http://t", 15.0, rendered)],
                       ready=True, reload=ConfigReload())

    class Views:
        view = make_view(1)

    async def run() -> None:
        exporter = Exporter(Views())
        release = threading.Event()
        real_build = exporter._build
        built: list[int] = []

        def gated(openmetrics: bool, gzip: bool, view: View) -> Any:
            release.wait(timeout=30)
            built.append(view.generation)
            return real_build(openmetrics, gzip, view)

        try:
            first = exporter.metrics_body(False, False).decode()  # View 1, built now
            assert value(first, "sigma_poll_interval_seconds", target="t") == 1
            exporter._build = gated  # type: ignore[method-assign]
            Views.view = make_view(2)
            exporter.prebuild(Views.view)  # View 2: its build starts and blocks
            Views.view = make_view(3)
            exporter.prebuild(Views.view)  # View 3 and 4 are announced meanwhile
            Views.view = make_view(4)
            exporter.prebuild(Views.view)
            during = exporter.metrics_body(False, False).decode()
            assert value(during, "sigma_poll_interval_seconds", target="t") == 1  # no wait
            release.set()
            for _ in range(200):  # the builds finish on the build thread; the loop collects
                await asyncio.sleep(0.01)
                if exporter._bodies[(False, False)].generation == 4:
                    break
            after = exporter.metrics_body(False, False).decode()
            assert value(after, "sigma_poll_interval_seconds", target="t") == 4
            assert built == [2, 4]  # View 3 was superseded before its turn: never built
        finally:
            release.set()
            exporter.close()

    asyncio.run(run())


def test_a_late_announcement_never_replaces_a_newer_body() -> None:
    async def run() -> None:
        poller = Poller(Config((TargetConfig(name="t", url=f"http://127.0.0.1:{free_port()}",
                                             timeout=1.0),)))
        exporter = Exporter(poller)
        stale = poller.view
        poller.flush_published()
        exporter.metrics_body(False, False)  # a scrape built the newer View's body first
        newer = exporter._bodies[(False, False)]
        assert newer.generation == poller.generation > stale.generation
        exporter.prebuild(stale)  # the older View's announcement arrives late
        exporter.prebuild(poller.view)  # and the newer one's, after the scrape
        assert exporter._bodies[(False, False)] is newer  # neither rebuilt it
        await poller.stop()

    asyncio.run(run())


# --- the hand-off: the web side reads one immutable View ------------------------------


def test_each_generation_is_a_new_view_and_an_old_one_never_changes() -> None:
    async def run() -> None:
        config = Config((TargetConfig(name="t", url=f"http://127.0.0.1:{free_port()}",
                                      timeout=1.0),))
        poller = Poller(config)
        before = poller.view
        await poller.poll_all_once()
        after = poller.view
        assert after is not before and after.generation > before.generation
        # What a scrape holding the old View reads is what it was: nothing polled yet.
        assert before.targets["t"].rendered == {} and not before.ready
        assert after.targets["t"].rendered and after.ready
        poller.reload_failed()
        assert poller.view.reload.successful is False and after.reload.successful is True
        with pytest.raises(TypeError):
            poller.view.targets["other"] = after.targets["t"]  # type: ignore[index]
        await poller.stop()

    asyncio.run(run())


def test_the_web_side_serves_from_a_view_alone() -> None:
    class Source:
        view = View.of(7, [TargetView("a", "http://sigma:9999", 15.0,
                                      exposition.render(TargetHealth(15.0, []).samples("a")))],
                       ready=True, reload=ConfigReload(False, 1234.0))

    exporter = Exporter(Source())
    body = exporter.metrics_body(False, False).decode()
    assert value(body, "sigma_poll_interval_seconds", target="a") == 15.0
    assert value(body, "sigma_targets") == 1
    assert value(body, "sigma_config_last_reload_successful") == 0
    assert value(body, "sigma_config_last_reload_success_timestamp_seconds") == 1234.0
    assert exporter.probe_body("a", False) is not None and exporter.probe_body("b", False) is None
    assert exporter.ready()
    assert "http://sigma:9999" in exporter.landing_page()


def test_a_poller_leaves_the_process_gc_alone() -> None:
    async def run() -> None:
        poller = Poller(Config((TargetConfig(name="t", url="http://127.0.0.1:9"),)))
        poller.start()
        await poller.stop()

    thresholds = gc.get_threshold()
    asyncio.run(run())
    assert gc.get_threshold() == thresholds  # tuning is the application's (app.py)


def test_stop_and_reload_end_polls_in_flight_without_an_error_in_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """A poll waiting on a hung server when a reload replaces its target, or when the
    exporter stops, is cut short quietly: no APScheduler error with a traceback (a
    cancellation escaping the job), no "target down" (it is not the target's failure),
    and the stop does not wait for the 30 s timeout."""
    async def run() -> None:
        release = asyncio.Event()  # the test's own servers end their handlers cleanly

        async def hung_server() -> tuple[asyncio.Server, str, asyncio.Queue[int]]:
            asked = asyncio.Queue[int]()

            async def hang(reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
                await reader.read(1)  # a request came: never answered
                asked.put_nowait(1)
                await release.wait()
                writer.close()

            server = await asyncio.start_server(hang, "127.0.0.1", 0)
            return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", asked

        first, first_url, first_asked = await hung_server()
        second, second_url, second_asked = await hung_server()
        poller = Poller(Config((TargetConfig(name="hung", url=first_url, interval=60.0,
                                             timeout=30.0),)))
        try:
            poller.start()
            await asyncio.wait_for(first_asked.get(), 10)  # its first poll hangs
            await asyncio.wait_for(poller.reload(Config((TargetConfig(
                name="hung", url=second_url, interval=60.0, timeout=30.0),))), 10)
            await asyncio.wait_for(second_asked.get(), 10)  # the new state's poll hangs
        finally:
            await asyncio.wait_for(poller.stop(), 10)  # not the 30 s timeout
            release.set()
            for server in (first, second):
                server.close()
                await server.wait_closed()

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    noise = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noise, [r.getMessage() for r in noise]
