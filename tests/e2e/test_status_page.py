"""The status page at `/`: what it says, that it escapes Sigma, and that a browser shows it.

Unit tests feed the real poll pipeline (simulator answers -> ingest ->
publish) and read the page render_page builds from what was published. The
end-to-end tests run the simulator and the exporter as processes on loopback
and read the page as headless Chromium renders it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml
from conftest import (
    ROOT,
    Proc,
    free_port,
    make_ca,
    make_cert,
    sigma_exporter_cmd,
    value,
    wait_until,
)
from feed import Fed
from stack import Stack, start_stack

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


# --- reading a page back as text ----------------------------------------------------------


class _Page(HTMLParser):
    """The text a reader sees, and every tag and attribute (for the no-external check)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._in_style = tag == "style"
        if tag in ("br", "div", "p", "tr", "h1"):
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag in ("td", "th"):
            self.text.append(" | ")

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.text.append(data)


def read(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def text_of(page: str) -> str:
    return " ".join("".join(read(page).text).split())


def externals(page: str) -> list[str]:
    """Anything that would make a browser load or link outside this exporter."""
    found = []
    for tag, attrs in read(page).tags:
        if tag in ("script", "link", "img", "iframe", "object", "embed", "base", "form"):
            found.append(f"<{tag}>")
        for name, val in attrs:
            if name in ("src", "srcset", "action", "formaction", "style"):
                found.append(f"{tag} {name}={val}")
            if name.startswith("on"):
                found.append(f"{tag} {name}")
            if name == "href" and val is not None and (
                    val.startswith(("/", "\\")) or ":" in val.split("?")[0]):
                found.append(f"{tag} href={val}")  # absolute: breaks behind a path prefix
    style = page[page.find("<style>"):page.find("</style>")]
    found += [token for token in ("url(", "@import", "//") if token in style]
    return found


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

SCREENSHOT = ROOT / "docs" / "status-page.png"
NAMES = ("sigma-01", "sigma-02", "sigma-03")


def chromium(tmp_path: Path, url: str, *args: str) -> str:
    """Headless Chromium on `url`; its stdout. Every process it starts is ended."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    profile = tmp_path / "chromium-profile"  # fresh: no state shared between runs
    proc = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking",
         f"--user-data-dir={profile}", *args, url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
        start_new_session=True)  # its own process group: its helpers end with it
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        # Chromium's zygote and renderer may outlive the browser process; the
        # group is ours alone (a new session), so ending it ends nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The demo's shape (three servers, the third without GPU) with a fault on each:
    sigma-02 refuses connections, sigma-01's VTV3 is stopped, sigma-03's HTV7 is slow."""
    # Every server polled once and up: the simulator (and its control API) listens.
    # (Ready alone is not enough: the first round completes on refusals too.)
    stack = start_stack(tmp_path_factory.mktemp("status"), NAMES,
                        sim_args=("--gpus", "2", "--jobs", "6"))
    try:
        stack.set_fault(1, "refuse")
        stack.sim.post("/servers/0/jobs/VTV3", state="Stop")
        stack.sim.post("/servers/2/jobs/HTV7", speed="0.5")

        def faults_seen() -> bool:
            body = stack.metrics()
            return (value(body, "sigma_up", target="sigma-02") == 0
                    and value(body, "sigma_job_up", target="sigma-01", job_name="VTV3") == 0
                    and value(body, "sigma_job_speed", target="sigma-03",
                              job_name="HTV7") == 0.5)

        wait_until(faults_seen, 30, "the faults in /metrics")
        yield stack
    finally:
        stack.stop()


@pytest.mark.e2e
def test_the_browser_shows_the_fleet_a_down_target_and_a_down_channel(
        stack: Stack, tmp_path: Path) -> None:
    text = text_of(chromium(tmp_path, stack.base + "/", "--dump-dom"))
    # Slow: at least ours (the simulator dips now and then). GPUs: sigma-01 only
    # (sigma-02 is down, sigma-03 has none).
    assert re.search(r"3 targets: 2 up, 1 down \(sigma-02\) · channels 11 / 12 up, 1 down, "
                     r"\d+ slow · 2 GPUs", text), text[:400]
    down = text[text.index("sigma-02 http://"):]
    assert down.startswith("sigma-02 http://127.0.0.1:")
    assert "| DOWN last success" in down[:200] and "down connect:" in down[:400]
    assert "down: VTV3 (stop)" in text
    assert re.search(r"slow: [^|]*HTV7 \(speed 0\.5\)", text)
    assert "GPU 1 NVIDIA" in text and "temp " in text


@pytest.mark.e2e
def test_a_screenshot_reads_well(stack: Stack, tmp_path: Path, update_golden: bool) -> None:
    """A 1280x900 screenshot; `pytest --update` keeps it as docs/status-page.png."""
    shot = tmp_path / "status-page.png"
    chromium(tmp_path, stack.base + "/", f"--screenshot={shot}", "--window-size=1280,900",
             "--hide-scrollbars")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 900)
    if update_golden:
        shutil.copy(shot, SCREENSHOT)
    assert SCREENSHOT.exists(), "run: pytest tests/e2e/test_status_page.py --update"


@pytest.mark.e2e
def test_the_demos_incident_replay_shows_on_the_status_page_in_a_browser(
        tmp_path: Path) -> None:
    """`sigma-exporter demo --incident server-down --incident channel-stalled`, as an
    operator runs it, and its page as Chromium shows it: the down server first, then the
    server with the stalled channel, named, then the rest. Slow (about 40 s): a stall
    shows only once the page has STALL_WINDOW seconds of polls; nothing faster runs the
    demo's replay through the simulator, the poll pipeline and a browser together."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    demo = Proc(sigma_exporter_cmd("demo", "--web.listen-address", f"127.0.0.1:{port}",
                                   "--interval", "1s", "--incident", "server-down",
                                   "--incident", "channel-stalled", "--incident-after", "0s"),
                log=tmp_path / "demo.log")
    try:
        def both_seen() -> bool:
            assert demo.alive(), demo.tail()
            page = httpx.get(base, timeout=5, trust_env=False).text
            return "stalled: VTV1" in page and "1 down (sigma-02)" in page

        wait_until(both_seen, 90, "the replayed incidents on the page")
        text = text_of(chromium(tmp_path, base, "--dump-dom"))
    finally:
        demo.proc.send_signal(signal.SIGINT)
        code, _, out = demo.stop_after_exit()
    assert code == 0, out
    assert "3 targets: 2 up, 1 down (sigma-02) · channels 8 / 8 up, 1 stalled" in text
    rows = [text.index(f"{name} http://") for name in ("sigma-02", "sigma-01", "sigma-03")]
    assert rows == sorted(rows), "the down server, then the stalled channel's, then the rest"
    sigma_01 = text[rows[1]:rows[2]]
    assert "stalled: VTV1 (media time not advancing)" in sigma_01
    assert "Problems first: servers down, then channels down or stalled" in text
    assert "Incident server-down started: sigma-02 stops answering" in out
    assert "Incident channel-stalled started: channel VTV1 on sigma-01" in out


USER, PASSWORD = "operator", "correct horse battery"


@pytest.mark.e2e
def test_behind_basic_auth_and_tls_the_page_is_served_and_self_contained(
        tmp_path: Path) -> None:
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", server=True)
    web = tmp_path / "web.yml"
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path}/server.crt\n"
                   f"  key_file: {tmp_path}/server.key\n"
                   f"basic_auth_users:\n  {USER}: '{password_hash}'\n")
    port = free_port()
    exporter = Proc(sigma_exporter_cmd("--target", "http://127.0.0.1:9",
                                       "--web.listen-address", f"127.0.0.1:{port}",
                                       "--web.config.file", str(web)))
    base = f"https://127.0.0.1:{port}/"
    client = httpx.Client(verify=ssl_context(tmp_path), trust_env=False, timeout=5)
    try:
        with client:
            wait_until(lambda: "DOWN" in client.get(base, auth=(USER, PASSWORD)).text, 30,
                       "the target polled")
            assert client.get(base).status_code == 401
            page = client.get(base, auth=(USER, PASSWORD)).text
        assert externals(page) == []
        assert "1 target: 0 up, 1 down (127.0.0.1:9)" in text_of(page)
        # The browser too, with the credentials in the URL (the test CA is not trusted).
        seen = chromium(tmp_path, f"https://{USER}:{PASSWORD.replace(' ', '%20')}"
                        f"@127.0.0.1:{port}/", "--dump-dom", "--ignore-certificate-errors")
        assert "1 target: 0 up, 1 down (127.0.0.1:9)" in text_of(seen)
    finally:
        exporter.stop()


def ssl_context(certs: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs / "ca.crt"))


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
