"""OpenMetrics as the ecosystem reads it: `# UNIT`, the `info` type, poll counts.

The body is checked by prometheus_client's strict OpenMetrics parser and
ingested by a real Prometheus (tests/promstack.py), whose metadata API must
show the types and units; the text format still passes `promtool check
metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from conftest import get, load_fixture, promtool_check_metrics, samples
from feed import Fed
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from promstack import Prometheus, poll
from stack import Stack, start_stack

from sigma_exporter.collect import exposition
from sigma_exporter.config import TargetConfig
from sigma_exporter.metrics import BY_NAME, DEFINITIONS
from sigma_exporter.source.client import Answer, PollError


def openmetrics_families(body: str) -> list[Metric]:
    """prometheus_client's strict OpenMetrics parser (it raises on any violation)."""
    return list(text_string_to_metric_families(body))  # type: ignore[no-untyped-call]


def test_info_families_and_units_in_the_definitions() -> None:
    infos = {d.name for d in DEFINITIONS if d.type == "info"}
    assert infos == {d.name for d in DEFINITIONS if d.name.endswith("_info")}
    assert "sigma_exporter_build_info" in infos and len(infos) >= 8
    assert BY_NAME["sigma_poll_duration_seconds"].unit == "seconds"
    assert BY_NAME["sigma_host_memory_total_bytes"].unit == "bytes"
    assert BY_NAME["sigma_job_input_bytes_per_second"].unit == "bytes_per_second"
    assert BY_NAME["sigma_gpu_utilization_ratio"].unit == "ratio"
    assert BY_NAME["sigma_nvml_gpu_power_watts"].unit == "watts"
    assert BY_NAME["sigma_jobs"].unit == "" and BY_NAME["sigma_poll_errors_total"].unit == ""
    for d in DEFINITIONS:
        # OpenMetrics: a family's name ends in its unit.
        assert not d.unit or d.family.endswith("_" + d.unit), d.name


# --- one target's exposition, both formats ------------------------------------------


def _state() -> Fed:
    return Fed(TargetConfig(name="t1", url="http://127.0.0.1:9"))


def _round(fed: Fed, dump: Answer | PollError, progress: Answer | PollError | None) -> None:
    fed.round(dump, progress)


@pytest.fixture
def rendered() -> exposition.Rendered:
    fed = _state()
    _round(fed, Answer(load_fixture("dump-sample.json"), 1709398433.0, 0.01),
           Answer(load_fixture("progress-sample.json"), 1709398433.0, 0.01))
    return fed.state.published.rendered


def test_openmetrics_body_passes_the_strict_parser(rendered: exposition.Rendered) -> None:
    body = exposition.merge([rendered], openmetrics=True).decode()
    families = {f.name: f for f in openmetrics_families(body)}
    assert families["sigma_server"].type == "info"
    (sample,) = families["sigma_server"].samples
    assert sample.name == "sigma_server_info" and sample.value == 1
    assert families["sigma_gpu"].type == "info"
    assert families["sigma_poll_duration_seconds"].unit == "seconds"
    assert families["sigma_host_memory_total_bytes"].unit == "bytes"
    assert families["sigma_job_input_bytes_per_second"].unit == "bytes_per_second"
    assert families["sigma_polls"].type == "counter"
    for family in families.values():
        d = next(d for d in DEFINITIONS if d.family == family.name)
        assert family.type == d.type and family.unit == d.unit, family.name
    assert "# UNIT" in body


def test_text_body_has_no_openmetrics_only_metadata(rendered: exposition.Rendered) -> None:
    body = exposition.merge([rendered], openmetrics=False).decode()
    assert "# UNIT" not in body and " info\n" not in body
    assert "# TYPE sigma_server_info gauge\n" in body
    promtool_check_metrics(body)


def test_polls_total_is_the_denominator_of_poll_errors() -> None:
    state = _state()

    def exposed() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return samples(state.text())

    def polls(source: str) -> float | None:
        return exposed().get(("sigma_polls_total",
                              frozenset({"target": "t1", "source": source}.items())))

    # Jobs are polled (the default): both sources are polled every round.
    assert polls("dump") is None  # nothing published before the first round
    _round(state, PollError("connect", "refused"), PollError("connect", "refused"))
    assert polls("dump") == 1 and polls("progress") == 1
    _round(state, Answer(load_fixture("dump-sample.json"), 1709398433.0, 0.01),
           PollError("invalid_json", "nope"))
    _round(state, Answer(load_fixture("dump-sample.json"), 1709398433.0, 0.01),
           Answer(load_fixture("progress-sample.json"), 1709398433.0, 0.01))
    assert polls("dump") == 3 and polls("progress") == 3
    errors = exposed()
    def errors_of(source: str) -> float:
        return sum(v for (n, ls), v in errors.items()
                   if n == "sigma_poll_errors_total" and ("source", source) in ls)

    # 1 failed dump poll of 3, 2 failed progress polls of 3: each ratio is one division.
    assert errors_of("dump") == 1 and errors_of("progress") == 2


# --- a real Prometheus scrapes it -----------------------------------------------------


@dataclass
class Scraped:
    prom: Prometheus
    base: str  # the exporter
    control: str  # the simulator's control API


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    work = tmp_path_factory.mktemp("om")
    stack: Stack = start_stack(work, ("s0", "s1"), timeout="900ms", wait_up=False)
    prom: Prometheus | None = None
    try:
        stack.exporter.wait_ready()
        prom = Prometheus(work / "prom", scrape_targets=[stack.exporter.address])
        yield Scraped(prom, stack.base, stack.control)
    finally:
        if prom is not None:
            prom.stop()
        stack.stop()


def test_prometheus_ingests_units_and_info_types(scraped: Scraped) -> None:
    prom = scraped.prom
    (target,) = prom.wait_targets_up(1)
    assert target["lastError"] == ""
    # What Prometheus is served is OpenMetrics (it asks for it first).
    body = get(scraped.base + "/metrics", headers={"Accept": prom_accept()}).text
    assert body.endswith("# EOF\n") and "# UNIT sigma_poll_duration_seconds seconds" in body
    assert {f.name for f in openmetrics_families(body)} >= {"sigma_exporter_build", "sigma_up"}

    def metadata(metric: str) -> list[dict[str, str]] | None:
        found: dict[str, list[dict[str, str]]] = prom.api("metadata", {"metric": metric})
        return found.get(metric)

    duration = poll(lambda: metadata("sigma_poll_duration_seconds"), 20, "metadata",
                    prom.logs)
    assert duration[0]["type"] == "gauge" and duration[0]["unit"] == "seconds"
    build = poll(lambda: metadata("sigma_exporter_build"), 20, "info metadata", prom.logs)
    assert build[0]["type"] == "info"
    assert prom.value("sigma_exporter_build_info") == 1
    memory = poll(lambda: metadata("sigma_host_memory_total_bytes"), 20, "bytes", prom.logs)
    assert memory[0]["unit"] == "bytes"


def test_prometheus_divides_poll_errors_by_polls(scraped: Scraped) -> None:
    prom = scraped.prom
    prom.wait_targets_up(1)
    # Every dump poll of s1 fails from now on; s0 stays healthy.
    httpx.post(f"{scraped.control}/servers/1/fault", params={"mode": "http-502-html"},
               timeout=5, trust_env=False).raise_for_status()
    ratio = ('sum by (target) (rate(sigma_poll_errors_total{source="dump"}[5s]))'
             ' / sum by (target) (rate(sigma_polls_total{source="dump"}[5s]))')

    def s1_failing() -> dict[str, float] | None:
        found = {r["metric"]["target"]: float(r["value"][1]) for r in prom.query(ratio)}
        return found if found.get("s1") == 1 else None

    found = poll(s1_failing, 30, "s1's error ratio at 1", prom.logs)
    assert found["s0"] == 0  # errors exist at 0, so the healthy target has a ratio too
    assert (prom.value('sigma_polls_total{target="s0",source="dump"}') or 0) >= 3


def prom_accept() -> str:
    """The Accept header Prometheus 2.42 scrapes with (OpenMetrics first)."""
    return ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def test_sample_lines_are_shared_by_both_formats(rendered: exposition.Rendered) -> None:
    om = exposition.merge([rendered], openmetrics=True).decode().splitlines()
    text = exposition.merge([rendered], openmetrics=False).decode().splitlines()
    assert [x for x in om if not x.startswith("#")] == [x for x in text if not x.startswith("#")]

