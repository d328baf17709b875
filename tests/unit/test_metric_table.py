"""sigma_exporter/metrics.py is the whole list: every name the exporter emits is in
it, and every entry of it is emitted somewhere.

Read from the outside, from real exposition: the golden files (the renderer on
the documented answers and the simulator), and the full /metrics body of an
in-process exporter in agent mode (fake NVML, Sigma's GPU figures perturbed)
polling a simulated server with jobs, a second one that sends an unreadable
field, and a target that refuses connections.
A static scan of the `"sigma_..."` literals in the package is a second check.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import re

from conftest import GOLDEN, ROOT, free_port
from prometheus_client.parser import text_string_to_metric_families

from sigma_exporter.agent.source import nvml_source
from sigma_exporter.config import Config, NvmlConfig, TargetConfig
from sigma_exporter.metrics import BY_NAME, DEFINITIONS
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.sim.fake_nvml import FakeBackend
from sigma_exporter.sim.gpu_override import apply_to_simulator
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.sim.scenario import ManualClock, parse_scenario
from sigma_exporter.web.exporter import Exporter

# Sigma and the driver disagree on gpu0 from the second round, Sigma does not list
# gpu1, and NVML fails in one round: the cross-check's mismatch and missing series
# and NVML's error counts exist.
GPU = {"used_mib": 4096, "gpu": 40, "mem": 12, "enc": 55, "dec": 20, "temp": 50,
       "sessions": 4, "power_w": 61, "power_limit_w": 150, "xid": 0, "last_xid": 0,
       "ecc_uncorrected": 0, "remap_pending": 0, "remap_failure": 0, "throttle": 1,
       "video_mhz": 1410, "fps": 30, "latency_us": 1200}
SCENARIO = {
    "gpus": {"gpu0": {"name": "NVIDIA A10", "total_mib": 22731},
             "gpu1": {"name": "NVIDIA A10", "total_mib": 22731}},
    "rounds": [{"gpu0": GPU, "gpu1": GPU}],
    "nvml_fail_rounds": [3],
    "sigma": {"gpu0": {"used_offset": 2048, "from_round": 1}, "gpu1": {"missing": True}},
}
METRIC_NAME = re.compile(r"sigma_[a-z0-9_]*")  # not logger names (sigma_exporter.poll...)
ROUNDS = 5  # past the cross-check's window, so windowed fields are judged


def names_in(body: str) -> set[str]:
    """The sample names of a text exposition that are ours (not process_*)."""
    return {sample.name for family in text_string_to_metric_families(body)
            for sample in family.samples if sample.name.startswith("sigma_")}


async def _exporter_body() -> str:
    scenario = parse_scenario(SCENARIO)
    clock = ManualClock()
    servers = make_servers(2, gpus=1)
    apply_to_simulator(servers[:1], scenario, clock)
    # The remote server sends one field the parser cannot read: a parse error.
    servers[1].gpu_override = lambda position, now: {"temp": "hot"}
    sim = Simulator(servers, listen_host="127.0.0.1", first_port=0)
    await sim.start()
    try:
        config = Config((TargetConfig(name="local", url=sim.url(0)),
                         TargetConfig(name="remote", url=sim.url(1)),
                         TargetConfig(name="refused", url=f"http://127.0.0.1:{free_port()}",
                                      timeout=1.0)),
                        NvmlConfig(enabled="true", target="local"))
        nvml = nvml_source(config, FakeBackend(scenario, clock))
        assert nvml is not None
        poller = Poller(config, [nvml.factory])
        try:
            exporter = Exporter(poller)
            for _ in range(ROUNDS):
                await poller.poll_all_once()
                clock.advance()
            return exporter.metrics_body(openmetrics=False, gzip=False).decode()
        finally:
            await poller.stop()
    finally:
        await sim.stop()


@functools.cache
def emitted() -> frozenset[str]:
    found = names_in(asyncio.run(_exporter_body()))
    for golden in GOLDEN.glob("*.prom"):
        found |= names_in(golden.read_text())
    return frozenset(found)


def test_every_emitted_name_is_in_the_table() -> None:
    assert emitted() - set(BY_NAME) == set()


def test_every_table_entry_is_emitted() -> None:
    assert {d.name for d in DEFINITIONS} - emitted() == set()


def _string_literals() -> set[str]:
    found = set()
    for path in (ROOT / "sigma_exporter").rglob("*.py"):
        if path.name == "metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and METRIC_NAME.fullmatch(node.value):
                found.add(node.value)
    return found


def test_every_metric_literal_in_the_code_is_in_the_table() -> None:
    """A literal that is not a table name must be a prefix the code builds names
    from (`sigma_process` + `_cpu_ratio`), or the logger's name."""
    names = set(BY_NAME)
    stray = {literal for literal in _string_literals() if literal not in names
             and not any(name.startswith(literal) and name != literal for name in names)}
    assert not stray, sorted(stray)
