"""The status page at `/`: what it says and that it escapes Sigma, in-process.

These feed the real poll pipeline (simulator answers -> the sources ->
publish) and read the page render_page builds from what was published; the
browser tests are in tests/e2e/test_status_page.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import ROOT
from feed import Fed
from pages import externals, read, text_of

from sigma_exporter.agent.crosscheck import Result, crosscheck_samples
from sigma_exporter.agent.source import findings_of
from sigma_exporter.collect.source import Reading, Round, Source
from sigma_exporter.config import TargetConfig
from sigma_exporter.poll.summary import SLOW_SPEED, STALL_SPEED
from sigma_exporter.poll.target import TargetState
from sigma_exporter.sim.dump import render_dump
from sigma_exporter.sim.model import SimServer, job_names
from sigma_exporter.sim.progress import render_progress
from sigma_exporter.source.client import Answer, PollError
from sigma_exporter.source.jobstates import state_label
from sigma_exporter.web import status

EPOCH = 1_717_000_000.0
NOW = EPOCH + 3630.0  # not on a restart of VTV1 (every 600 s), which comes up first
HOSTILE = '"><script>alert(1)</script><img src=//evil.example/x onerror=alert(2)>'


# --- the pipeline, without processes -----------------------------------------------------


class Verdict(Source):
    """Agent mode's `nvml` source with a given cross-check verdict."""

    name = "nvml"
    up_metric = "sigma_nvml_up"

    def __init__(self, target: str, result: Result) -> None:
        self.target, self.result = target, result

    async def read(self, round: Round) -> Reading:
        return Reading(crosscheck_samples(self.target, self.result),
                       findings=findings_of(self.result))


def polled(name: str = "sigma-01", *, dump: Any = None, progress: Any = None,
           server: SimServer | None = None, crosscheck: Result | None = None) -> TargetState:
    """A target after one poll; answers default to the simulator's, errors are PollErrors.

    `crosscheck`: agent mode, its NVML source giving this verdict.
    """
    server = server or SimServer(index=0, epoch=EPOCH, gpus=2, jobs=4)
    fed = Fed(TargetConfig(name=name, url="http://127.0.0.1:9999/?api_key=s3cret"),
              extra=[Verdict(name, crosscheck)] if crosscheck is not None else [])
    if dump is None:
        dump = Answer(render_dump(server, NOW), NOW, 0.01)
    if progress is None:
        progress = Answer(render_progress(server, NOW), NOW, 0.01)
    fed.round(dump, progress)
    return fed.state


def page_of(*states: TargetState, now: float = NOW + 4) -> str:
    rows = [status.Row(s.name, s.config.url.replace("s3cret", "REDACTED"), s.config.interval,
                       s.published.status) for s in states]
    return status.render_page(rows, version="9.9", telemetry_path="/metrics", now=now)


def test_a_healthy_target_shows_channels_and_gpus() -> None:
    state = polled()
    s = state.published.status
    assert s is not None and s.up and s.progress_up
    assert (s.channels, s.channels_up, s.down, s.findings) == (4, 4, (), ())
    assert [g.index for g in s.gpus] == ["0", "1"]
    assert s.gpus[0].name == "NVIDIA L4" and 0 <= (s.gpus[0].encoder or -1) <= 1
    text = text_of(page_of(state))
    assert "1 target: 1 up · channels 4 / 4 up · 2 GPUs" in text
    assert "UP last success 4 s ago" in text and "polled every 15 s" in text
    gpu = s.gpus[0]
    assert (f"GPU 0 NVIDIA L4 core {gpu.core:.0%} enc {gpu.encoder:.0%} dec {gpu.decoder:.0%}"
            f" temp {gpu.temperature:g} °C") in text


def test_down_and_slow_channels_are_named_with_the_rule() -> None:
    server = SimServer(index=0, epoch=EPOCH, gpus=1, jobs=4)
    server.state_overrides["VTV3"] = "Stop"
    server.speed_overrides["HTV7"] = 0.5
    server.speed_overrides["VTV1"] = SLOW_SPEED  # at the threshold: not slow
    state = polled(server=server)
    s = state.published.status
    assert s is not None
    assert [c.name for c in s.down] == ["VTV3"] and [c.name for c in s.slow] == ["HTV7"]
    text = text_of(page_of(state))
    assert "3 / 4 up down: VTV3 (stop) slow: HTV7 (speed 0.5)" in text
    assert "channels 3 / 4 up, 1 down, 1 slow" in text
    assert f"below {SLOW_SPEED:g}\N{MULTIPLICATION SIGN} real time" in text


def test_dump_and_progress_errors_are_shown_separately() -> None:
    state = polled(dump=PollError("connect", "connection refused"),
                   progress=PollError("timeout", "no answer in 5s"))
    s = state.published.status
    assert s is not None and s.up is False and s.progress_up is False
    assert s.error("dump") == "connect: connection refused"
    assert s.error("progress") == "timeout: no answer in 5s"
    text = text_of(page_of(state))
    assert "DOWN last success never" in text
    assert ("| dump down connect: connection refused progress down timeout: no answer in 5s |"
            in text)
    assert "unknown: progress is down" in text
    assert "1 target: 0 up, 1 down (sigma-01)" in text


def test_progress_down_keeps_the_dump_side_up() -> None:
    state = polled(progress=PollError("invalid_json", "truncated"))
    text = text_of(page_of(state))
    assert "| dump ok progress down invalid_json: truncated |" in text


def test_a_target_not_yet_polled_is_pending() -> None:
    state = Fed(TargetConfig(name="new", url="http://127.0.0.1:1")).state
    text = text_of(page_of(state))
    assert "PENDING last success never" in text and "1 target: 0 up, 1 pending" in text


def test_problems_come_first_and_the_summary_counts_the_fleet() -> None:
    fine = polled("a-fine")
    down = polled("b-down", dump=PollError("connect", "refused"))
    text = text_of(page_of(fine, down))
    assert text.index("b-down http://") < text.index("a-fine http://")
    # Its progress side still answers: its channels count.
    assert "2 targets: 1 up, 1 down (b-down) · channels 8 / 8 up · 2 GPUs" in text


def test_long_lists_are_cut() -> None:
    server = SimServer(index=0, epoch=EPOCH, gpus=0, jobs=status.MAX_NAMED + 5)
    server.state_overrides.update(dict.fromkeys(job_names(server), "Stop"))
    downs = [polled(f"t{i:02d}", dump=PollError("connect", "refused"))
             for i in range(status.MAX_NAMED + 2)]
    text = text_of(page_of(polled(server=server), *downs))
    assert "22 down (t00, t01, t02, " in text and "t19, and 2 more)" in text
    assert "and 5 more" in text


def test_cross_check_mismatches_are_listed() -> None:
    state = polled(crosscheck=Result(
        mismatches=(("0", "memory_total", True), ("0", "temperature", False)),
        missing=(("1", "sigma", True), ("0", "nvml", False))))
    agreeing = polled("sigma-02", crosscheck=Result(mismatches=(("0", "memory_total", False),)))
    text = text_of(page_of(state, agreeing))
    assert "GPU 0: memory_total differs from NVML" in text
    assert "GPU 1: missing on the sigma side" in text and "temperature differs" not in text
    assert "· 2 findings" in text and "cross-check with NVML: 2 mismatches" in text
    assert text.count("cross-check with NVML: agrees") == 1
    assert "nvml ok GPU 0: memory_total differs from NVML" in text  # under its source


def test_everything_from_sigma_is_escaped_and_nothing_is_external() -> None:
    server = SimServer(index=0, epoch=EPOCH, gpus=1, jobs=2)
    dump = render_dump(server, NOW)
    dump["System"]["gpu"][0]["name"] = HOSTILE
    progress = render_progress(server, NOW)
    jobs = progress["result"]
    jobs[HOSTILE] = {**jobs.pop("VTV1"), "state": HOSTILE}
    state = polled(HOSTILE, dump=Answer(dump, NOW, 0.01), progress=Answer(progress, NOW, 0.01))
    error = polled("err", dump=PollError("http_status", HOSTILE))
    page = page_of(state, error)
    assert "<script" not in page and "<img" not in page
    assert externals(page) == []
    text = text_of(page)
    assert text.count(HOSTILE) >= 4  # target, channel, GPU name, the error
    assert f"({state_label(HOSTILE)})" in text  # a state is bounded to a plain word
    assert 'href="probe?target=%22%3E%3Cscript%3E' in page  # the name is a query value


def test_the_page_keeps_the_old_landing_page_content() -> None:
    page = page_of(polled())
    links = [dict(attrs).get("href") for tag, attrs in read(page).tags if tag == "a"]
    assert links == ["metrics", "-/healthy", "-/ready", "probe?target=sigma-01"]
    text = text_of(page)
    assert "Version 9.9" in text and "http://127.0.0.1:9999/?api_key=REDACTED" in text
    assert "last success 4 s ago 2024-05-29 17:27:10 UTC" in text
    assert '<meta http-equiv="refresh" content="15">' in page


@pytest.mark.parametrize(("intervals", "refresh"), [((1.0,), 5), ((15.0, 30.0), 15),
                                                    ((300.0,), 60), ((), 60)])
def test_refresh_follows_the_fastest_poll_within_bounds(intervals: tuple[float, ...],
                                                       refresh: int) -> None:
    rows = [status.Row(f"t{i}", "", interval, None) for i, interval in enumerate(intervals)]
    assert status.refresh_seconds(rows) == refresh


@pytest.mark.parametrize(("seconds", "shown"), [(0.2, "just now"), (4.9, "4 s ago"),
                                                (125, "2 min ago"), (7300, "2 h ago"),
                                                (3 * 86400, "3 d ago")])
def test_age(seconds: float, shown: str) -> None:
    assert status.age(seconds) == shown


def test_thresholds_are_the_alerts_thresholds() -> None:
    thresholds = yaml.safe_load((ROOT / "alerts" / "thresholds.yml").read_text())
    assert thresholds["job_speed_ratio"] == SLOW_SPEED
    assert thresholds["job_stalled_speed_ratio"] == STALL_SPEED
    assert thresholds["gpu_encoder_utilization_ratio"] == status.GPU_LOAD_HIGH
    assert thresholds["gpu_decoder_utilization_ratio"] == status.GPU_LOAD_HIGH
    assert thresholds["gpu_temperature_celsius"] == status.GPU_TEMPERATURE_HIGH


# --- in a real browser, against the simulator and the exporter as processes ----------------



def test_licence_link_channels_coming_up_and_error_classes_are_shown() -> None:
    """Issue 22's signals on the page: a licence not VALID ranks the target with the
    down ones, a dropped control-plane link, a channel coming up (not down), and the
    error lines Sigma lists now, by class."""
    server = SimServer(index=0, epoch=EPOCH, gpus=1, jobs=4)
    dump = render_dump(server, NOW)
    dump["licenseStatus"] = "EXPIRED"
    dump["nats"]["connected"] = 0
    progress = render_progress(server, NOW)
    jobs = progress["result"]
    first, second = list(jobs)[:2]
    for job in jobs.values():
        job["error"] = []
    jobs[first]["state"] = "preparing"
    jobs[second]["error"] = ["[05-26 02:32:55] Input timeout (code: INPUT_TIMEOUT)",
                             "[05-26 02:33:01] Broken pipe (code: BROKEN_PIPE)",
                             "[05-26 02:33:02] Output timeout (code: OUTPUT_TIMEOUT)"]
    lapsed = polled("lapsed", dump=Answer(dump, NOW, 0.01), progress=Answer(progress, NOW, 0.01))
    fine = polled("a-fine")
    s = lapsed.published.status
    assert s is not None and s.license_bad and s.control_plane_connected is False
    assert [c.name for c in s.coming_up] == [first] and first not in {c.name for c in s.down}
    # BROKEN_PIPE is input and output: it counts in both.
    assert dict(s.errors_by_class) == {"input": 2, "output": 2}
    text = text_of(page_of(fine, lapsed))
    assert text.index("lapsed http://") < text.index("a-fine http://")
    assert "licence EXPIRED" in text and "control plane: link down" in text
    assert f"coming up: {first} (preparing)" in text
    assert "error lines listed, by class: input 2, output 2" in text
    assert "1 licence not valid" in text and "1 off the control plane" in text
