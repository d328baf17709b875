"""Where a simulated server's GPU figures come from: a scenario, or this host's NVML.

Both set each server's `gpu_override` hook (and its GPU count), which the
`dump` renderer calls for every `System.gpu[]` entry. `apply_to_simulator`
plays a scenario's Sigma side (`scenario.Scenario.sigma_override`);
`apply_mirror_to_simulator` reports what the local driver reads now, in
Sigma's units, so `scripts/gpu-check` can cross-check a real GPU against a
simulated Sigma.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sigma_exporter.agent.nvml import MIB, GpuReading, NvmlBackend, NvmlFailure
from sigma_exporter.sim.model import SimServer
from sigma_exporter.sim.scenario import (
    MAX_SIM_GPUS,
    GpuOverride,
    Perturbation,
    RoundClock,
    Scenario,
    ScenarioError,
    TimeClock,
)


def apply_to_simulator(servers: Sequence[SimServer], scenario: Scenario,
                       clock: RoundClock | None = None) -> RoundClock:
    """Make each server report the scenario's GPUs; returns the clock they follow
    (default: a new round every `round_seconds` from now)."""
    clock = clock if clock is not None else TimeClock(time.time(), scenario.round_seconds)
    override = scenario.sigma_override(clock)
    for server in servers:
        server.gpus = len(scenario.sigma_indices())
        server.gpu_override = override
    return clock


def sigma_entry_from_reading(reading: GpuReading) -> dict[str, Any]:
    """What Sigma would report for this GPU, in Sigma's units (only known fields)."""
    entry: dict[str, Any] = {"index": reading.index}
    if reading.name is not None:
        entry["name"] = reading.name
    pairs: tuple[tuple[str, float | None, float], ...] = (
        ("total", reading.memory_total_bytes, 1.0 / MIB),
        ("used", reading.memory_used_bytes, 1.0 / MIB),
        ("gpu", reading.utilization_ratio, 100.0),
        ("enc", reading.encoder_utilization_ratio, 100.0),
        ("dec", reading.decoder_utilization_ratio, 100.0),
        ("temp", reading.temperature_celsius, 1.0),
        ("count", reading.encoder_sessions, 1.0),
    )
    for key, value, factor in pairs:
        if value is not None:
            entry[key] = round(value * factor)
    return entry


def mirror_override(backend: NvmlBackend, perturbation: Mapping[int, Perturbation] | None = None,
                    visible: Sequence[int] | None = None, ttl: float = 0.5) -> GpuOverride:
    """A gpu_override that reports the local driver's figures as Sigma would.

    `visible` maps the simulator's list position to a GPU index (default: the
    same). A perturbation for an index the driver does not have adds a GPU
    only Sigma lists. Readings are cached for `ttl` seconds: the simulator asks
    once per GPU per dump, and NVML is read synchronously here (a few ms).
    """
    perturb = dict(perturbation or {})
    cache: dict[str, Any] = {"at": -math.inf, "readings": ()}

    def readings(now: float) -> dict[int, GpuReading]:
        if now - cache["at"] > ttl:
            try:
                cache["readings"] = backend.read()
            except NvmlFailure:
                cache["readings"] = ()
            cache["at"] = now
        return {r.index: r for r in cache["readings"]}

    def override(position: int, now: float) -> dict[str, Any] | None:
        index = visible[position] if visible is not None and position < len(visible) \
            else position
        reading = readings(now).get(index)
        entry = sigma_entry_from_reading(reading) if reading is not None else {"index": index}
        p = perturb.get(index)
        return p.apply(entry) if p is not None else entry

    return override


def apply_mirror_to_simulator(servers: Sequence[SimServer], backend: NvmlBackend,
                              perturbation: Mapping[int, Perturbation] | None = None) -> None:
    """Make each server report the local GPUs (as NVML reads them now), perturbed.

    Sigma's GPU list: the driver's GPUs, less those perturbed `missing`, plus
    any perturbed index the driver does not have (a GPU only Sigma lists).
    """
    perturb = dict(perturbation or {})
    present = {r.index for r in backend.read()}
    indices = sorted(present | set(perturb))
    visible = [i for i in indices if not (i in perturb and perturb[i].missing)]
    if len(visible) > MAX_SIM_GPUS:
        raise ScenarioError(f"the simulator serves at most {MAX_SIM_GPUS} GPUs, "
                            f"not {len(visible)}")
    override = mirror_override(backend, perturb, visible)
    for server in servers:
        server.gpus = len(visible)
        server.gpu_override = override
