"""A scripted NVML driver: `FakeBackend` replays a scenario as NVML readings.

It stands in for `agent.nvml.PynvmlBackend` wherever no GPU is at hand
(tests, the dashboards stack, benchmarks, `scripts/gpu-check --fake-scenario`),
so that the agent hook and the cross-check run exactly as on a GPU host.
"""

from __future__ import annotations

import time

from sigma_exporter.agent.nvml import DriverInfo, NvmlFailure, Readings
from sigma_exporter.sim.scenario import RoundClock, Scenario


class FakeBackend:
    """Replays a scenario: the readings of the round its clock says it is.

    `init_error` makes `init()` fail as a machine without the library does.
    """

    def __init__(self, scenario: Scenario, clock: RoundClock,
                 init_error: str | None = None,
                 driver_version: str = "550.54.15") -> None:
        self.scenario = scenario
        self.clock = clock
        self.init_error = init_error
        self.driver_version = driver_version
        self.reads = 0
        self.closed = False

    def init(self) -> DriverInfo:
        if self.init_error is not None:
            raise NvmlFailure(self.init_error)
        return DriverInfo(self.driver_version, len(self.scenario.gpus))

    def read(self) -> Readings:
        self.init()
        self.reads += 1
        return self.scenario.nvml_readings(self.clock.round_at(time.time()))

    def close(self) -> None:
        self.closed = True
