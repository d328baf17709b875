"""Every source read one way: the one `execute()`, Sigma's `ec`, and a new source added.

The toy source below lives in this module alone, with its two rows of the
metric table: the Poller polls it, `execute()` times it, classifies and
counts its failures, and the status page shows it, with no other edit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import load_fixture, value
from feed import Fed

from sigma_exporter import metrics
from sigma_exporter.collect import exposition
from sigma_exporter.collect.samples import new_samples
from sigma_exporter.collect.sigma import refusal
from sigma_exporter.collect.source import Reading, Round, Source, SourceError
from sigma_exporter.config import Config, JobsConfig, TargetConfig
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.source.client import PollError
from sigma_exporter.source.snapshot import Dump
from sigma_exporter.web import status
from sigma_exporter.web.exporter import Exporter

DUMP = load_fixture("dump-sample.json")
PROGRESS = load_fixture("progress-sample.json")
LICENCE = "Y7KI4-HHQX5-0N9QN-X8TLN-VOPE7"  # the documented dump's key: a secret


# --- `ec`: Sigma refusing a call is a failed poll ------------------------------------------


@pytest.mark.parametrize(("body", "refused"), [
    ({"ec": 0}, False), ({"ec": "0"}, False), ({"ec": 0.0}, False), ({}, False),
    ({"ec": None}, False), ({"EC": 0}, False),
    ({"ec": 1}, True), ({"ec": "1"}, True), ({"ec": -3}, True), ({"ec": True}, True),
    ({"ec": "abc"}, True), ({"Ec": 2}, True),
])
def test_ec_present_and_not_zero_is_a_refusal(body: dict[str, Any], refused: bool) -> None:
    error = refusal(body)
    assert (error is not None) == refused
    if error is not None:
        assert error.reason == "api_error"


def test_a_refused_dump_is_up_0_with_sigmas_message() -> None:
    fed = Fed(jobs=JobsConfig(enabled=False))
    fed.round({"ec": 1, "msg": "license expired", "result": {}})
    body = fed.text()
    assert value(body, "sigma_up", target="sigma-01") == 0
    assert value(body, "sigma_poll_errors_total", target="sigma-01", source="dump",
                 reason="api_error") == 1
    assert "sigma_host_memory_total_bytes" not in body  # no data from a refusal
    error = fed.state.health.errors["dump"]
    assert error == "api_error: Sigma refused the call: ec 1: license expired"
    status_ = fed.state.published.status
    assert status_ is not None and status_.error("dump") == error


def test_a_refused_progress_keeps_the_dump() -> None:
    fed = Fed()
    fed.round(DUMP, {"ec": 4, "msg": "no such job", "result": {}})
    body = fed.text()
    assert value(body, "sigma_up", target="sigma-01") == 1
    assert value(body, "sigma_progress_up", target="sigma-01") == 0
    assert value(body, "sigma_poll_errors_total", target="sigma-01", source="progress",
                 reason="api_error") == 1
    assert "sigma_job_up" not in body


def test_sigmas_message_is_bounded_one_line_and_without_secrets() -> None:
    fed = Fed(jobs=JobsConfig(enabled=False))
    msg = f"bad key {LICENCE}\n<script>" + "x" * 5000 + "\x00"
    fed.round({"ec": 7, "msg": msg}, secrets=())
    error = fed.state.health.errors["dump"]
    assert LICENCE not in error and "REDACTED" in error
    assert "\n" not in error and "\x00" not in error
    assert len(error) <= 300


def test_a_good_answer_with_ec_0_is_a_good_poll() -> None:
    fed = Fed()
    fed.round(dict(DUMP, ec=0), dict(PROGRESS, ec=0))
    assert fed.state.health.errors == {}


# --- a toy source, added with no edit outside this module and the metric table ---------


TOY_UP = metrics.MetricDef("sigma_toy_up", "gauge", "1 if the toy answered.", ("target",),
                           "health")
TOY_ANSWER = metrics.MetricDef("sigma_toy_answer", "gauge", "The toy's answer.",
                               ("target", "gpu"), "self")


class Toy(Source):
    """Reads the dump's GPUs (a source that needs another), fails when told to."""

    name = "toy"
    reasons = ("toy_broken",)
    up_metric = "sigma_toy_up"

    def __init__(self, target: str) -> None:
        self.target = target
        self.mode = "ok"

    async def read(self, round: Round) -> Reading:
        await asyncio.sleep(0.01)  # its own time: it shows in its duration
        if self.mode == "broken":
            raise SourceError("toy_broken", "the toy is broken")
        if self.mode == "bug":
            raise ZeroDivisionError("a bug in the toy")
        dump = await round.value("dump")
        samples = new_samples()
        gpus = dump.gpus if isinstance(dump, Dump) else ()
        for gpu in gpus:
            samples["sigma_toy_answer"].append(((self.target, gpu.index), 42.0))
        return Reading(samples, findings=("the toy found something",) if not gpus else ())


def test_a_new_source_is_polled_timed_failed_counted_and_shown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "DEFINITIONS", (*metrics.DEFINITIONS, TOY_UP, TOY_ANSWER))
    monkeypatch.setitem(metrics.BY_NAME, TOY_UP.name, TOY_UP)
    monkeypatch.setitem(metrics.BY_NAME, TOY_ANSWER.name, TOY_ANSWER)
    toys: dict[str, Toy] = {}

    def toy_sources(config: TargetConfig) -> list[Source]:
        toys[config.name] = Toy(config.name)
        return [toys[config.name]]

    async def run() -> list[str]:
        servers = make_servers(1, gpus=2, jobs=2, seed=4)
        async with Simulator(servers, listen_host="127.0.0.1", first_port=0) as sim:
            poller = Poller(Config((TargetConfig(name="s0", url=sim.url(0)),)), [toy_sources])
            exporter = Exporter(poller)
            bodies, pages = [], []
            try:
                for mode in ("ok", "broken", "bug", "ok"):
                    toys["s0"].mode = mode
                    await poller.poll_all_once()
                    body = exporter.probe_body("s0", openmetrics=False)
                    assert body is not None
                    bodies.append(body.decode())
                    view = poller.view.targets["s0"]
                    pages.append(status.render_page(
                        [status.Row("s0", view.url, view.interval, view.status)],
                        version="t", telemetry_path="/metrics", now=0))
            finally:
                await poller.stop()
            return bodies + pages

    ok, broken, bug, again, page_ok, page_broken, page_bug, _ = asyncio.run(run())
    t = {"target": "s0"}
    assert value(ok, "sigma_toy_up", **t) == 1
    assert value(ok, "sigma_toy_answer", **t, gpu="1") == 42
    assert (value(ok, "sigma_poll_duration_seconds", **t, source="toy") or 0) >= 0.01
    assert value(ok, "sigma_polls_total", **t, source="toy") == 1
    for reason in ("toy_broken", "series_limit", "internal"):  # all exist at 0
        assert value(ok, "sigma_poll_errors_total", **t, source="toy", reason=reason) == 0
    assert value(broken, "sigma_toy_up", **t) == 0
    assert value(broken, "sigma_toy_answer", **t, gpu="1") is None  # no old data
    assert value(broken, "sigma_poll_errors_total", **t, source="toy", reason="toy_broken") == 1
    assert value(bug, "sigma_poll_errors_total", **t, source="toy", reason="internal") == 1
    assert value(bug, "sigma_up", **t) == 1  # the other sources are untouched
    assert value(again, "sigma_toy_up", **t) == 1
    assert value(again, "sigma_polls_total", **t, source="toy") == 4
    assert "<b>toy</b> <span class=\"ok\">ok</span>" in page_ok
    assert "toy_broken: the toy is broken" in page_broken
    assert "internal: ZeroDivisionError: a bug in the toy" in page_bug


def test_a_source_naming_a_reason_it_did_not_declare_is_a_bug() -> None:
    class Liar(Source):
        name = "liar"

        async def read(self, round: Round) -> Reading:
            raise SourceError("timeout", "not one of mine")

    fed = Fed(jobs=JobsConfig(enabled=False), extra=[Liar()])
    fed.round(DUMP)
    liar = fed.state.health.sources["liar"]
    assert liar.failures["internal"] == 1 and "timeout" not in liar.failures


def test_waiting_for_another_source_is_not_counted_as_the_waiters_time() -> None:
    class Patient(Source):
        name = "patient"

        async def read(self, round: Round) -> Reading:
            await round.value("dump")
            return Reading(new_samples())

    fed = Fed(jobs=JobsConfig(enabled=False), extra=[Patient()])
    fed.round(PollError("timeout", "slow"))
    patient = fed.state.health.sources["patient"]
    assert patient.up is True and patient.duration == 0.0


def test_health_series_of_a_source_survive_its_failure() -> None:
    fed = Fed()
    fed.round(DUMP, PROGRESS)
    fed.round(PollError("connect", "refused"), PollError("connect", "refused"))
    samples = exposition.read_back(fed.state.published.rendered)
    assert samples["sigma_up"] == [(("sigma-01",), 0.0)]
    assert samples["sigma_server_restarts_total"] == [(("sigma-01",), 0.0)]
    assert "sigma_host_cpu_cores" not in samples
