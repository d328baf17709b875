"""How the poll loop schedules a fleet: each round is one short burst."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from conftest import free_port

from sigma_exporter.config import Config, TargetConfig
from sigma_exporter.poller import Poller, poll_jitter


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
            # The first round: now, each target at most the jitter late.
            assert all(before <= t <= before + timedelta(seconds=0.3) for t in firsts)
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
