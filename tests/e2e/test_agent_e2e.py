"""Agent mode end to end: simulator -> HTTP -> Poller -> agent hook -> exposition.

The simulator (in-process, 127.0.0.1, ephemeral ports) reports the scenario
in Sigma's units; a FakeBackend plays the same scenario as NVML. Rounds step
by hand (ManualClock) after each poll, so nothing depends on the wall clock.
The exposition is checked by `promtool check metrics`: missing promtool fails.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from conftest import structured

from sigma_exporter.agent.source import nvml_source
from sigma_exporter.collect import exposition
from sigma_exporter.collect.samples import Samples
from sigma_exporter.config import Config, NvmlConfig, TargetConfig
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.sim.fake_nvml import FakeBackend
from sigma_exporter.sim.gpu_override import apply_to_simulator
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.sim.scenario import ManualClock, parse_scenario

PROMTOOL = "/usr/bin/promtool"
T = TypeVar("T")

ROUND: dict[str, Any] = {"used_mib": 4096, "gpu": 40, "mem": 12, "enc": 55, "dec": 20,
                         "temp": 50, "power_w": 90.5, "video_mhz": 1410, "sessions": 2,
                         "fps": 30, "latency_us": 1200}
BASE: dict[str, Any] = {
    "gpus": {"gpu0": {"name": "NVIDIA A10", "total_mib": 22731},
             "gpu1": {"name": "NVIDIA A10", "total_mib": 22731}},
    "rounds": [
        {"gpu0": ROUND, "gpu1": {**ROUND, "gpu": 70, "temp": 61}},
        {"gpu0": {"gpu": 44, "used_mib": 4200}, "gpu1": {"enc": 60}},
        {"gpu0": {"gpu": 38, "temp": 51}},
        {"gpu1": {"dec": 25, "used_mib": 5000}},
        {"gpu0": {"enc": 50}},
    ],
}
ROUNDS = 5  # >= the default window (4): windowed fields are judged too


def scenario(**extra: Any) -> dict[str, Any]:
    return {**BASE, **extra}


@dataclass
class Run:
    rounds: list[Samples] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    other: list[Samples] = field(default_factory=list)  # the second target, if any

    @property
    def last(self) -> Samples:
        return self.rounds[-1]


def values(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    return {labels: value for labels, value in samples.get(name, [])}


def flagged(samples: Samples, name: str) -> set[tuple[str, ...]]:
    return {labels[1:] for labels, value in samples.get(name, []) if value == 1.0}


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def wrap() -> T:
        return await coro_fn()

    return asyncio.run(wrap())


async def agent_run(doc: dict[str, Any], rounds: int = ROUNDS, servers: int = 1,
                    before_round: Callable[[int, Simulator], Awaitable[None]] | None = None,
                    ) -> Run:
    sc = parse_scenario(doc)
    clock = ManualClock()
    sims = make_servers(servers, gpus=1)
    apply_to_simulator(sims[:1], sc, clock)  # the local server only
    sim = Simulator(sims, listen_host="127.0.0.1", first_port=0)
    await sim.start()
    out = Run()
    try:
        targets = tuple(TargetConfig(name=f"sigma-{i}", url=sim.url(i)) for i in range(servers))
        config = Config(targets, NvmlConfig(enabled="true", target="sigma-0"))
        nvml = nvml_source(config, FakeBackend(sc, clock))
        assert nvml is not None
        poller = Poller(config, [nvml.factory])
        try:
            for r in range(rounds):
                if before_round is not None:
                    await before_round(r, sim)
                await poller.poll_all_once()
                state = poller.targets["sigma-0"]
                out.rounds.append(structured(state.published.rendered))
                out.bodies.append(exposition.merge(
                    [s.published.rendered for s in poller.targets.values()], openmetrics=False))
                if servers > 1:
                    out.other.append(structured(poller.targets["sigma-1"].published.rendered))
                clock.advance()
        finally:
            await poller.stop()
    finally:
        await sim.stop()
    return out


def promtool_check(body: bytes) -> None:
    assert os.path.exists(PROMTOOL), f"{PROMTOOL} is required (apt install prometheus)"
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert not result.stdout.strip() and not result.stderr.strip(), result.stderr.decode()


def test_agreement_end_to_end() -> None:
    result = run(lambda: agent_run(scenario()))
    last = result.last
    assert values(last, "sigma_up") == {("sigma-0",): 1.0}
    assert values(last, "sigma_nvml_up") == {("sigma-0",): 1.0}
    mismatch = values(last, "sigma_gpu_crosscheck_mismatch")
    assert len(mismatch) == 2 * 7 and set(mismatch.values()) == {0.0}
    missing = values(last, "sigma_gpu_crosscheck_gpu_missing")
    assert len(missing) == 2 * 2 and set(missing.values()) == {0.0}
    diffs = values(last, "sigma_gpu_crosscheck_difference")
    assert all(abs(v) < 1e-9 for v in diffs.values()), diffs
    # Both views are exported side by side, in base units.
    assert values(last, "sigma_gpu_memory_used_bytes")[("sigma-0", "0")] == 4200 * 1024**2
    assert values(last, "sigma_nvml_gpu_memory_used_bytes")[("sigma-0", "0")] == 4200 * 1024**2
    assert values(last, "sigma_nvml_gpu_power_watts")[("sigma-0", "1")] == 90.5
    info = values(last, "sigma_nvml_gpu_info")
    assert {labels[1] for labels in info} == {"0", "1"}
    # Windowed verdicts wait for a full window; the first round has none.
    first = {labels[2] for labels in values(result.rounds[0],
                                             "sigma_gpu_crosscheck_mismatch")}
    assert first == {"identity", "memory_total", "memory_used"}
    for body in result.bodies:
        promtool_check(body)


@pytest.mark.parametrize(("perturbation", "expected_mismatch", "expected_missing"), [
    ({"sigma": {"gpu1": {"name": "Tesla T4"}}}, {("1", "identity")}, set()),
    ({"sigma": {"gpu0": {"used_offset": 2048}}}, {("0", "memory_used")}, set()),
    ({"sigma": {"gpu0": {"total": 22733}}}, {("0", "memory_total")}, set()),  # 2 MiB
    ({"sigma": {"gpu1": {"enc_offset": 30}}}, {("1", "encoder")}, set()),
    ({"sigma": {"gpu0": {"gpu_offset": -20}}}, {("0", "utilization")}, set()),
    ({"sigma": {"gpu0": {"dec_offset": 16}}}, {("0", "decoder")}, set()),
    ({"sigma": {"gpu1": {"temp_offset": 8}}}, {("1", "temperature")}, set()),
    ({"sigma": {"gpu1": {"missing": True}}}, set(), {("1", "sigma")}),
    ({"gpus": {**BASE["gpus"], "gpu1": {"name": "NVIDIA A10", "nvml_missing": True}}},
     set(), {("1", "nvml")}),
    ({"sigma": {"gpu0": {"count": 9}}}, set(), set()),  # count: a difference only
])
def test_each_perturbation_gives_the_right_mismatch(
        perturbation: dict[str, Any], expected_mismatch: set[tuple[str, str]],
        expected_missing: set[tuple[str, str]]) -> None:
    result = run(lambda: agent_run(scenario(**perturbation)))
    last = result.last
    assert flagged(last, "sigma_gpu_crosscheck_mismatch") == expected_mismatch
    assert flagged(last, "sigma_gpu_crosscheck_gpu_missing") == expected_missing
    promtool_check(result.bodies[-1])


def test_count_difference_is_reported() -> None:
    result = run(lambda: agent_run(scenario(sigma={"gpu0": {"count": 9}}), rounds=1))
    diffs = values(result.last, "sigma_gpu_crosscheck_difference")
    assert diffs[("sigma-0", "0", "count")] == 7.0  # Sigma 9, NVML 2 encoder sessions
    assert diffs[("sigma-0", "1", "count")] == 0.0


def test_nvml_failing_mid_run_keeps_sigma_metrics() -> None:
    result = run(lambda: agent_run(scenario(nvml_fail_rounds=[2]), rounds=4))
    failed = result.rounds[2]
    assert values(failed, "sigma_nvml_up") == {("sigma-0",): 0.0}
    assert values(failed, "sigma_up") == {("sigma-0",): 1.0}
    assert values(failed, "sigma_gpu_utilization_ratio")  # Sigma's own GPU figures stay
    assert not any(name.startswith(("sigma_nvml_gpu_", "sigma_gpu_crosscheck_"))
                   for name, entries in failed.items() if entries)
    assert values(failed, "sigma_poll_errors_total")[("sigma-0", "nvml", "nvml_error")] == 1
    recovered = result.rounds[3]
    assert values(recovered, "sigma_nvml_up") == {("sigma-0",): 1.0}
    assert values(recovered, "sigma_gpu_crosscheck_mismatch")
    promtool_check(result.bodies[2])


def test_failed_dump_keeps_nvml_but_drops_the_crosscheck() -> None:
    async def refuse_at_2(r: int, sim: Simulator) -> None:
        if r == 2:
            await sim.set_fault(0, "refuse")

    result = run(lambda: agent_run(scenario(), rounds=3, before_round=refuse_at_2))
    failed = result.last
    assert values(failed, "sigma_up") == {("sigma-0",): 0.0}
    assert values(failed, "sigma_nvml_up") == {("sigma-0",): 1.0}
    assert values(failed, "sigma_nvml_gpu_utilization_ratio")
    assert not any(name.startswith("sigma_gpu_crosscheck_")
                   for name, entries in failed.items() if entries)
    promtool_check(result.bodies[-1])


def test_only_the_local_target_gets_nvml_samples() -> None:
    result = run(lambda: agent_run(scenario(), rounds=2, servers=2))
    other = result.other[-1]
    assert values(other, "sigma_up") == {("sigma-1",): 1.0}
    assert not any(name.startswith(("sigma_nvml_", "sigma_gpu_crosscheck_"))
                   for name, entries in other.items() if entries)
    assert values(result.last, "sigma_nvml_up") == {("sigma-0",): 1.0}
    promtool_check(result.bodies[-1])
