"""Dashboards end to end: every panel and variable query against real data.

Real processes on 127.0.0.1: the simulator (three servers; the third has no
GPU), the exporter polling them every 1 s, and Prometheus 2.42 scraping it
every 1 s with Prometheus' default labels (the per-channel label is
`job_name`, `job` the scrape job). Once every target has 10 samples, each variable query
(`label_values`, as Grafana asks it: /api/v1/label/<label>/values?match[]=)
must list real values, and each panel query of grafana/generate.py, with the
variables substituted by `expand()`, must return series, except the queries
the generator marks `empty_when_healthy`, which must still be valid PromQL
(status success). Each query runs twice: with one real value per variable
(target: a server with GPUs and NVML; job: one of its channels) and, where
the variable offers "All", with its all value.

NVML panels (`needs_nvml`) get real data too: the exporter runs in agent mode
with a scripted NVML driver. The exporter CLI has no switch for a fake
driver, so the exporter process is started through `sigma_exporter.app.serve`
with `nvml_source(config, FakeBackend(...))` playing
the scenario SCENARIO (one A10) for sim-1: the same poll loop, agent
hook, cross-check and HTTP server as `sigma-exporter --config.file`, only
the driver is scripted.

$__rate_interval is 10s (10 scrapes at 1 s, so rate() has points), $__range
1h (increase() over everything stored) and $__interval 1s.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, Proc, free_port, get, value
from promstack import Prometheus, poll, prometheus_binary
from stack import Simulator

pytestmark = pytest.mark.e2e

NAMES = ("sim-1", "sim-2", "sim-3")
NVML_TARGET = "sim-1"
# One A10 with every field NVML can report (tests/fixtures/scenarios/one-a10.yml
# leaves power, clocks and encoder stats out, and their panels would be empty).
SCENARIO = """\
round_seconds: 15
repeat: true
gpus:
  gpu0: {name: NVIDIA A10, total_mib: 22731}
rounds:
  - gpu0: {used_mib: 4096, gpu: 40, mem: 12, enc: 55, dec: 20, temp: 50, power_w: 90.5,
           video_mhz: 1410, sessions: 4, fps: 30, latency_us: 1200}
  - gpu0: {used_mib: 4200, gpu: 44, enc: 58, temp: 51, power_w: 95, fps: 29.5}
"""
SAMPLES = 10
RATE_INTERVAL, RANGE, INTERVAL = "10s", "1h", "1s"
RANGE_WINDOW_S = 30  # query_range over the last 30 s, one point a second

# The exporter, with a scripted NVML driver in place of libnvidia-ml.
FAKE_NVML_EXPORTER = """
import asyncio, sys, time
from sigma_exporter import logsetup
from sigma_exporter.agent.source import nvml_source
from sigma_exporter.app import Settings, serve
from sigma_exporter.config import load_config
from sigma_exporter.sim.fake_nvml import FakeBackend
from sigma_exporter.sim.scenario import TimeClock, load_scenario

config_file, scenario_file, listen = sys.argv[1:4]
logsetup.setup("info", "logfmt")
config = load_config(config_file)
scenario = load_scenario(scenario_file)
nvml = nvml_source(config, FakeBackend(scenario, TimeClock(time.time(),
                                                           scenario.round_seconds)))
assert nvml is not None, "agent mode is off"
asyncio.run(serve(Settings(config, (listen,), config_file=config_file), [nvml.factory]))
"""


def _load_generator() -> ModuleType:
    name = "sigma_grafana_generate"  # the name tests/ops/test_dashboards.py uses
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "grafana" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
DASHBOARDS = gen.build()


@dataclass
class Stack:
    prom: Prometheus
    procs: list[Proc]
    target: str = ""  # a real target with GPUs and NVML
    job: str = ""  # a real channel of it
    gpu: str = ""  # a real GPU of it

    def diagnose(self) -> str:
        return "\n".join([*(p.tail(15) for p in self.procs), self.prom.logs(15)])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards-e2e")
    port = free_port()
    scenario = tmp / "gpu-scenario.yml"
    scenario.write_text(SCENARIO)
    procs: list[Proc] = []
    prom: Prometheus | None = None
    try:
        # The channels write real HLS (the simulator's sigma-server-NN/<job>/ folders),
        # read as agent mode reads them: the outputs panels get real data too.
        outputs = tmp / "outputs"
        sim = Simulator(tmp, len(NAMES), "--outputs", str(outputs))
        procs.append(sim.proc)
        config = tmp / "sigma.yml"
        config.write_text(
            "defaults:\n  interval: 1s\n  timeout: 800ms\n"
            f"nvml:\n  enabled: true\n  target: {NVML_TARGET}\n"
            "targets:\n" + "".join(f"  - name: {name}\n    url: {url}\n"
                                   for name, url in zip(NAMES, sim.urls, strict=True))
            + "outputs:\n  roots:\n" + "".join(
                f"    - path: {outputs / f'sigma-server-{i + 1:02d}'}\n      target: {name}\n"
                for i, name in enumerate(NAMES)))
        # The exporter with a fake NVML backend: a script, not the CLI.
        procs.append(Proc([sys.executable, "-c", FAKE_NVML_EXPORTER, str(config),
                           str(scenario), f"127.0.0.1:{port}"], log=tmp / "exporter.log"))
        metrics = f"http://127.0.0.1:{port}/metrics"

        def exporter_ready() -> bool:
            body = get(metrics).text
            return (all(value(body, "sigma_up", target=n) == 1 for n in NAMES)
                    and value(body, "sigma_nvml_up", target=NVML_TARGET) == 1)

        poll(exporter_ready, 30, "the exporter: every target up, NVML up",
             lambda: "\n".join(p.tail(20) for p in procs))
        prom = Prometheus(tmp / "prom", scrape_targets=[f"127.0.0.1:{port}"])
        stack = Stack(prom, procs)
        prom.wait_targets_up(1)
        prom.wait_samples("sigma_up", SAMPLES)
        yield stack
    finally:
        if prom is not None:
            prom.stop()
        for proc in reversed(procs):
            proc.stop()


def test_prometheus_is_installed() -> None:
    # A missing binary fails the suite (never skips); this names it plainly.
    assert prometheus_binary()


# --------------------------------------------------------------------------
# Variables
# --------------------------------------------------------------------------


def _variable_values(stack: Stack, var: Any, values: Mapping[str, str | list[str]]
                     ) -> list[str]:
    match = gen.expand(var.match, values, rate_interval=RATE_INTERVAL, range_=RANGE,
                       interval=INTERVAL)
    found: list[str] = stack.prom.label_values(var.label, match)
    return found


@pytest.fixture(scope="module")
def chosen(stack: Stack) -> Stack:
    """Pick the variable values the way a user would: from the variable queries."""
    targets = {v.dashboard_uid: _variable_values(stack, v, {})
               for d in DASHBOARDS for v in d.variables if v.name == "target"}
    assert set(targets) == {d.uid for d in DASHBOARDS if any(
        v.name == "target" for v in d.variables)}
    for uid, found in targets.items():
        assert sorted(found) == sorted(NAMES), (uid, found)
    with_gpus = set(stack.prom.label_values("target", "sigma_gpu_info"))
    with_nvml = set(stack.prom.label_values("target", "sigma_nvml_up"))
    candidates = sorted(t for t in targets["sigma-server"] if t in with_gpus & with_nvml)
    assert candidates == [NVML_TARGET], (with_gpus, with_nvml)
    stack.target = candidates[0]
    job_vars = [v for d in DASHBOARDS for v in d.variables if v.name == "job"]
    assert job_vars, "no dashboard offers the channel variable"
    jobs = _variable_values(stack, job_vars[0], {"target": [stack.target]})
    assert jobs, "no channel listed for " + stack.target
    stack.job = sorted(jobs)[0]
    gpu_vars = [v for d in DASHBOARDS for v in d.variables if v.name == "gpu"]
    assert gpu_vars, "no dashboard offers the GPU variable"
    gpus = _variable_values(stack, gpu_vars[0], {"target": stack.target})
    assert gpus, "no GPU listed for " + stack.target
    stack.gpu = sorted(gpus)[0]
    return stack


@pytest.mark.parametrize("var", [v for d in DASHBOARDS for v in d.variables],
                         ids=lambda v: f"{v.dashboard_uid}:{v.name}")
def test_variable_lists_real_values(chosen: Stack, var: Any) -> None:
    for values in _settings(var.dashboard_uid, chosen):
        found = _variable_values(chosen, var, values)
        assert found, f"{var.query} with {values}: no values"
        if var.name == "target":
            assert set(found) == set(NAMES)
        if var.name == "job":
            # Sigma channel names (job_name), not the scrape job.
            assert "sigma" not in found and chosen.job in found, found
        if var.name == "gpu":
            assert chosen.gpu in found, found


# --------------------------------------------------------------------------
# Panels
# --------------------------------------------------------------------------


def _settings(uid: str, stack: Stack) -> list[dict[str, str | list[str]]]:
    """Variable values to try on dashboard `uid`: one real value each, then "All".

    Variables with a fixed list (the channels dashboard's `worst`) keep the
    value the dashboard opens on.
    """
    dashboard = next(d for d in DASHBOARDS if d.uid == uid)
    variables = dashboard.variables
    real = {"target": stack.target, "job": stack.job, "gpu": stack.gpu}
    one: dict[str, str | list[str]] = {
        v.name: [real[v.name]] if v.multi else real[v.name] for v in variables}
    one.update(dashboard.defaults)
    out = [one]
    if any(v.include_all for v in variables):
        out.append({**one, **{v.name: v.all_value for v in variables if v.include_all}})
    return out


def _run(stack: Stack, query: Any, expr: str, now: float) -> dict[str, Any]:
    if query.instant:
        return stack.prom.raw("query", {"query": expr, "time": now})
    return stack.prom.raw("query_range", {"query": expr, "start": now - RANGE_WINDOW_S,
                                          "end": now, "step": INTERVAL})


def _has_data(doc: dict[str, Any]) -> bool:
    data = doc["data"]
    if data["resultType"] in ("scalar", "string"):
        return True
    if data["resultType"] == "matrix":
        return any(series["values"] for series in data["result"])
    return bool(data["result"])


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_every_panel_query_runs_on_real_data(chosen: Stack, dashboard: Any) -> None:
    now = time.time()
    problems: list[str] = []
    checked = 0
    for values in _settings(dashboard.uid, chosen):
        for q in dashboard.queries:
            expr = gen.expand(q.expr, values, rate_interval=RATE_INTERVAL, range_=RANGE,
                              interval=INTERVAL)
            where = f"panel {q.panel_id} {q.panel_title!r} {q.ref_id} with {values}: {expr}"
            doc = _run(chosen, q, expr, now)
            if doc.get("status") != "success":
                problems.append(f"{where}: {doc.get('errorType')}: {doc.get('error')}")
            elif not (q.empty_when_healthy or q.needs_dash) and not _has_data(doc):
                problems.append(f"{where}: no data")
            checked += 1
    assert not problems, f"{len(problems)} of {checked} queries failed:\n" + "\n".join(problems)
    assert checked == len(dashboard.queries) * len(_settings(dashboard.uid, chosen))


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_every_annotation_query_runs_on_real_data(chosen: Stack, dashboard: Any) -> None:
    """Restart annotations are valid over a range; they mark nothing while nothing
    restarts (tests/ops/test_dashboards.py replays a restart)."""
    now = time.time()
    for values in _settings(dashboard.uid, chosen):
        for a in dashboard.annotations:
            expr = gen.expand(a.expr, values, rate_interval=RATE_INTERVAL, range_=RANGE,
                              interval=INTERVAL)
            doc = chosen.prom.raw("query_range", {"query": expr, "start": now - RANGE_WINDOW_S,
                                                  "end": now, "step": INTERVAL})
            assert doc.get("status") == "success", (a.name, expr, doc)


def test_nvml_queries_had_real_data(chosen: Stack) -> None:
    """The agent-mode panels were not just valid: the fake driver fed them."""
    nvml = [q for q in gen.panel_queries() if q.needs_nvml]
    assert nvml, "the generator marks no query needs_nvml"
    assert chosen.prom.value(f'sigma_nvml_up{{target="{chosen.target}"}}') == 1
    for q in nvml:
        if q.empty_when_healthy:
            continue
        expr = gen.expand(q.expr, {"target": chosen.target})
        assert chosen.prom.query(expr), expr
