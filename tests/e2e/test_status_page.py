"""The status page in a browser: the simulator and the exporter run as processes on
loopback, and headless Chromium renders the page (what it says, in-process:
tests/unit/web/test_status_page.py)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
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
from pages import externals, text_of
from stack import Stack, start_stack

EPOCH = 1_717_000_000.0
NOW = EPOCH + 3630.0  # not on a restart of VTV1 (every 600 s), which comes up first
HOSTILE = '"><script>alert(1)</script><img src=//evil.example/x onerror=alert(2)>'


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


