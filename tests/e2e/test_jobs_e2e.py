"""Per-channel metrics end to end: simulator over HTTP -> poller -> exposition.

The simulator runs in-process on loopback with a clock the test moves, so
hundreds of simulated minutes pass in a second and the comparison with what
the simulator emitted is exact (no wall-clock waiting).
"""

from __future__ import annotations

import asyncio

from conftest import free_ports, promtool_check_metrics, value

from sigma_exporter.collect import exposition
from sigma_exporter.config import Config, TargetConfig
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import job_names, make_servers
from sigma_exporter.sim.progress import emitted_errors
from sigma_exporter.source.errorcodes import CLASSES_AND_UNKNOWN, classes_of

STEP = 10.0  # simulated seconds between polls; the server lists the last 5 lines
ROUNDS = 360  # one simulated hour


def test_error_counters_match_what_the_simulator_emitted() -> None:
    async def run() -> None:
        servers = make_servers(2, gpus=1, seed=7, jobs=4)
        epoch = servers[0].epoch
        now = [epoch]
        first = free_ports(2)
        sim = Simulator(servers, listen_host="127.0.0.1", first_port=first,
                        clock=lambda: now[0])
        async with sim:
            config = Config(tuple(TargetConfig(name=f"s{i}", url=sim.url(i), timeout=2.0)
                                  for i in range(2)))
            poller = Poller(config)
            try:
                restarts_seen = 0.0
                for n in range(ROUNDS):
                    # HTV7 of s0 fails for 5 minutes with an output error (its push
                    # refused), then with a config error, and is released.
                    if n == 100:
                        sim.set_job_state(0, "HTV7", "error", code="OUTPUT_TIMEOUT")
                    if n == 130:
                        sim.set_job_state(0, "HTV7", "error", code="INVALID_ARGUMENT")
                    if n == 140:
                        body = exposition.merge(
                            [poller.targets["s0"].published.rendered], False).decode()
                        assert value(body, "sigma_job_up", target="s0", job_name="HTV7") == 0
                        assert value(body, "sigma_job_state", target="s0", job_name="HTV7",
                                     state="error") == 1
                        sim.set_job_state(0, "HTV7", None)
                    await poller.poll_all_once()
                    now[0] += STEP
                now[0] -= STEP  # the clock of the last poll
                for i, server in enumerate(servers):
                    body = exposition.merge(
                        [poller.targets[f"s{i}"].published.rendered], False).decode()
                    total = 0.0
                    for job in job_names(server):
                        by_class = dict.fromkeys(CLASSES_AND_UNKNOWN, 0)
                        for code, count in emitted_errors(server, job, until=now[0]).items():
                            got = value(body, "sigma_job_errors_total", target=f"s{i}",
                                        job_name=job, code=code) or 0
                            assert got == count, (server.name, job, code, got, count)
                            total += got
                            for error_class in classes_of(code):
                                by_class[error_class] += count
                        # The same lines by class: a code in two classes counts in both.
                        for error_class, count in by_class.items():
                            in_class = value(body, "sigma_job_errors_by_class_total",
                                             target=f"s{i}", job_name=job,
                                             **{"class": error_class})
                            assert in_class == count, (server.name, job, error_class, count)
                        if (i, job) == (0, "HTV7"):
                            assert by_class["config"] == 10 and by_class["output"] > 30
                            assert value(body, "sigma_job_up", target="s0", job_name=job) == 1
                    assert total > 20, "the simulated hour must have produced errors"
                    # VTV1 restarts every 600 simulated seconds: 5 or 6 times an hour.
                    restarts_seen = value(body, "sigma_job_restarts_total", target=f"s{i}",
                                          job_name="VTV1") or 0
                    assert restarts_seen >= 5
                    # nginx restarts every 900 simulated seconds.
                    assert (value(body, "sigma_app_restarts_total", target=f"s{i}",
                                  app="nginx") or 0) >= 3
                    promtool_check_metrics(body)
            finally:
                await poller.stop()

    asyncio.run(run())


def test_dipped_job_shows_speed_below_real_time() -> None:
    async def run() -> None:
        servers = make_servers(1, seed=3)
        sim = Simulator(servers, listen_host="127.0.0.1", first_port=free_ports(1),
                        clock=lambda: servers[0].epoch + 30)
        async with sim:
            poller = Poller(Config((TargetConfig(name="s", url=sim.url(0), timeout=2.0),)))
            try:
                sim.set_job_speed(0, "VTV3", 0.62)
                await poller.poll_all_once()
                body = exposition.merge([poller.targets["s"].published.rendered],
                                        False).decode()
                assert value(body, "sigma_job_speed", target="s", job_name="VTV3") == 0.62
                assert value(body, "sigma_job_up", target="s", job_name="VTV3") == 1
                for job in job_names(servers[0]):
                    assert value(body, "sigma_job_input_bytes_per_second", target="s",
                                 job_name=job, input="0") is not None
                    assert value(body, "sigma_job_output_bytes_per_second", target="s",
                                 job_name=job) is not None
                # Credentials in the simulator's input URLs never reach a label.
                assert "secret" not in body and "p4ss" not in body and "token" not in body
            finally:
                await poller.stop()

    asyncio.run(run())
