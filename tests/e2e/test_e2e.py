"""End to end: the simulator and the exporter as processes on loopback.

One simulator process (three servers and a control API) and one exporter
process serve the whole module: what the exporter serves, how it negotiates,
/probe, the one-shot and reload commands. Every fault mode of the simulator
is in tests/e2e/test_faults.py.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port, get, promtool_check_metrics, sigma_exporter_cmd, value, wait_until
from stack import Exporter, Stack, start_stack

from sigma_exporter.collect.exposition import OPENMETRICS_CONTENT_TYPE

pytestmark = pytest.mark.e2e

NAMES = ("sim-1", "sim-2", "sim-3")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("e2e"), NAMES)
    try:
        yield stack
    finally:
        stack.stop()


def test_metrics_show_every_target_with_data(stack: Stack) -> None:
    body = stack.metrics()
    for name in NAMES:
        assert value(body, "sigma_up", target=name) == 1
        assert value(body, "sigma_progress_up", target=name) == 1
        assert (value(body, "sigma_host_memory_total_bytes", target=name) or 0) > 2**30
        assert value(body, "sigma_job_up", target=name) == 1
    # The third simulated server has no GPU: no GPU series, but host series.
    assert value(body, "sigma_gpu_info", target="sim-1") == 1
    assert value(body, "sigma_gpu_info", target="sim-3") is None
    assert 0 <= (value(body, "sigma_gpu_encoder_utilization_ratio", target="sim-1") or -1) <= 1
    assert value(body, "sigma_targets") == 3
    promtool_check_metrics(body)


def test_each_family_appears_once(stack: Stack) -> None:
    body = stack.metrics()
    types = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))


def test_openmetrics_and_gzip_by_negotiation(stack: Stack) -> None:
    response = get(stack.base + "/metrics",
                   headers={"Accept": "application/openmetrics-text; version=1.0.0",
                            "Accept-Encoding": "gzip"})
    assert response.headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
    assert response.headers["Content-Encoding"] == "gzip"
    text = response.text  # httpx inflated it
    assert text.endswith("# EOF\n")
    assert "# TYPE sigma_poll_errors counter" in text or "sigma_poll_errors_total{" not in text
    assert "# TYPE sigma_polls counter" in text and "# TYPE sigma_exporter_build info" in text
    raw = httpx.get(stack.base + "/metrics", headers={"Accept-Encoding": "gzip"},
                    trust_env=False, timeout=5)
    assert raw.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    with httpx.stream("GET", stack.base + "/metrics", headers={"Accept-Encoding": "gzip"},
                      trust_env=False, timeout=5) as stream:
        compressed = b"".join(stream.iter_raw())
    assert gzip.decompress(compressed).decode().startswith("# HELP")
    # q=0 is "not acceptable" (RFC 9110 §12.5.3): the plain body, however it is spelled.
    for refusing in ("gzip;q=0", "gzip; q=0.0, identity", "*;q=0, identity;q=1"):
        plain = httpx.get(stack.base + "/metrics", headers={"Accept-Encoding": refusing},
                          trust_env=False, timeout=5)
        assert "Content-Encoding" not in plain.headers, refusing
        assert plain.content.startswith(b"# HELP"), refusing


def test_probe_serves_one_configured_target(stack: Stack) -> None:
    response = get(stack.base + "/probe", params={"target": "sim-1"})
    assert response.status_code == 200
    assert value(response.text, "sigma_up", target="sim-1") == 1
    assert 'target="sim-2"' not in response.text
    promtool_check_metrics(response.text)


@pytest.mark.parametrize("target", [
    "nope", "http://127.0.0.1:1", "169.254.169.254", "http://169.254.169.254/latest/meta-data/",
    "sim-1%00", "../sim-1", "sim-1 ", "SIM-1",
])
def test_probe_refuses_anything_but_a_configured_name(stack: Stack, target: str) -> None:
    response = get(stack.base + "/probe", params={"target": target})
    assert response.status_code == 404


def test_probe_without_target_is_400(stack: Stack) -> None:
    assert get(stack.base + "/probe").status_code == 400


def test_landing_health_and_ready(stack: Stack) -> None:
    page = get(stack.base + "/")
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    for name in NAMES:
        assert name in page.text
    assert get(stack.base + "/-/healthy").status_code == 200
    assert get(stack.base + "/-/ready").status_code == 200


def test_once_prints_exposition_and_exit_code(stack: Stack) -> None:
    url = stack.sim.urls[0]
    ok = subprocess.run(sigma_exporter_cmd("once", "--target", url), capture_output=True,
                        text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert value(ok.stdout, "sigma_up") == 1
    assert value(ok.stdout, "sigma_job_speed") is not None  # job metrics too
    promtool_check_metrics(ok.stdout)
    down = subprocess.run(sigma_exporter_cmd("once", "--target", f"http://127.0.0.1:{free_port()}",
                                             "--timeout", "1s"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 1
    assert value(down.stdout, "sigma_up") == 0
    assert "connect" in down.stderr


def test_sighup_reload_good_and_bad(tmp_path: Path) -> None:
    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:1\n    timeout: 1s\n")
    exporter = Exporter(config, tmp_path)
    base = exporter.base
    try:
        wait_until(lambda: get(base + "/-/healthy").status_code == 200, 30, "started")
        config.write_text(textwrap.dedent("""\
            targets:
              - name: a
                url: http://127.0.0.1:1
                timeout: 1s
              - name: b
                url: http://127.0.0.1:2
                timeout: 1s
            """))
        exporter.proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: value(get(base + "/metrics").text, "sigma_targets") == 2, 20,
                   "reload to two targets")
        config.write_text("targets: [oops\n")
        exporter.proc.proc.send_signal(signal.SIGHUP)
        def failed_reload() -> str | None:
            text = get(base + "/metrics").text
            return text if value(text, "sigma_config_last_reload_successful") == 0 else None

        body = wait_until(failed_reload, 20, "failed reload reported")
        assert value(body, "sigma_targets") == 2  # the old config keeps running
        assert exporter.proc.alive()
    finally:
        code, _, err = exporter.stop()
    assert code == 0, err
    assert "reload failed" in err


def test_job_series_and_a_dipped_job(stack: Stack) -> None:
    body = stack.metrics()
    assert value(body, "sigma_job_up", target="sim-1", job_name="VTV3") == 1
    stack.sim.post("/servers/0/jobs/VTV3", speed="0.5")
    try:
        wait_until(lambda: value(stack.metrics(), "sigma_job_speed", target="sim-1",
                                 job_name="VTV3") == 0.5, 20, "dipped job below real time")
    finally:
        stack.sim.post("/servers/0/jobs/VTV3", speed="clear")
