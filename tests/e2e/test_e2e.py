"""End to end: the simulator and the exporter as processes on loopback.

One simulator process (three servers and a control API) and one exporter
process serve the whole module; each fault test breaks one server through
the control API, watches the exporter report it, and clears it again.
"""

from __future__ import annotations

import gzip
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Proc, free_port, free_ports, get, promtool_check_metrics, value, wait_until

from sigma_exporter.collect.exposition import OPENMETRICS_CONTENT_TYPE

pytestmark = pytest.mark.e2e

NAMES = ("sim-1", "sim-2", "sim-3")
FAULTY = "sim-2"

EXPECTED = {
    "refuse": ("dump", "connect"),
    "slow": ("dump", "timeout"),
    "http-502-html": ("dump", "http_status"),
    "truncated": ("dump", "invalid_json"),
    "invalid-json": ("dump", "invalid_json"),
    "non-object": ("dump", "invalid_schema"),
    "huge": ("dump", "too_large"),
    "flap": ("dump", "http_status"),
    "trickle": ("dump", "timeout"),
    "invalid-utf8": ("dump", "invalid_json"),
    "redirect": ("dump", "http_status"),
    "progress-invalid": ("progress", "invalid_json"),
}


class Stack:
    def __init__(self, sim: Proc, exporter: Proc, sim_port: int, control: str,
                 base: str) -> None:
        self.sim, self.exporter = sim, exporter
        self.sim_port, self.control, self.base = sim_port, control, base

    def metrics(self) -> str:
        response = get(self.base + "/metrics")
        response.raise_for_status()
        return response.text

    def set_fault(self, index: int, mode: str) -> None:
        response = httpx.post(f"{self.control}/servers/{index}/fault", params={"mode": mode},
                              timeout=5, trust_env=False)
        response.raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from conftest import sigma_exporter_cmd

    first = free_ports(3)
    control_port = free_port()
    sim = Proc(sigma_exporter_cmd("simulate", "--listen", f"127.0.0.1:{first}",
                                  "--servers", "3", "--control", f"127.0.0.1:{control_port}"))
    config = tmp_path_factory.mktemp("e2e") / "sigma.yml"
    config.write_text("defaults:\n  interval: 1s\n  timeout: 800ms\ntargets:\n" + "".join(
        f"  - name: {name}\n    url: http://127.0.0.1:{first + i}\n"
        for i, name in enumerate(NAMES)))
    port = free_port()
    exporter = Proc(sigma_exporter_cmd("--config.file", str(config),
                                       "--web.listen-address", f"127.0.0.1:{port}"))
    stack = Stack(sim, exporter, first, f"http://127.0.0.1:{control_port}",
                  f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: get(stack.base + "/-/ready").status_code == 200, 30, "ready")
        wait_until(lambda: all(value(stack.metrics(), "sigma_up", target=n) == 1
                               for n in NAMES), 30, "all targets up")
        yield stack
    finally:
        exporter.stop()
        sim.stop()


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


def _healthy_are_fresh(stack: Stack, since: dict[str, float]) -> Callable[[], bool]:
    def check() -> bool:
        body = stack.metrics()
        return all(
            value(body, "sigma_up", target=n) == 1
            and (value(body, "sigma_last_poll_success_timestamp_seconds", target=n) or 0)
            > since[n]
            and value(body, "sigma_host_memory_used_bytes", target=n) is not None
            for n in NAMES if n != FAULTY)
    return check


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_fault_takes_one_target_down_and_it_recovers(stack: Stack, fault: str) -> None:
    source, reason = EXPECTED[fault]
    body = stack.metrics()
    errors_before = value(body, "sigma_poll_errors_total", target=FAULTY, source=source,
                          reason=reason) or 0
    since = {n: value(body, "sigma_last_poll_success_timestamp_seconds", target=n) or 0
             for n in NAMES}
    stack.set_fault(1, fault)
    try:
        def reported() -> str | None:
            current = stack.metrics()
            errors = value(current, "sigma_poll_errors_total", target=FAULTY, source=source,
                           reason=reason) or 0
            return current if errors > errors_before else None

        body = wait_until(reported, 30, f"{fault} reported as {reason}")
        if source == "dump":
            if fault != "flap":  # flap alternates; its error count is the evidence
                assert value(body, "sigma_up", target=FAULTY) == 0
                # Its data series are gone; its health series stay.
                assert value(body, "sigma_host_memory_used_bytes", target=FAULTY) is None
            assert value(body, "sigma_poll_interval_seconds", target=FAULTY) == 1
        else:
            assert value(body, "sigma_progress_up", target=FAULTY) == 0
            assert value(body, "sigma_up", target=FAULTY) == 1
            assert value(body, "sigma_host_memory_used_bytes", target=FAULTY) is not None
        # The healthy targets kept polling and kept their data meanwhile.
        wait_until(_healthy_are_fresh(stack, since), 10, "healthy targets fresh")
        promtool_check_metrics(body)
    finally:
        stack.set_fault(1, "none")
    wait_until(lambda: value(stack.metrics(), "sigma_up", target=FAULTY) == 1
               and value(stack.metrics(), "sigma_progress_up", target=FAULTY) == 1,
               30, "recovery")
    assert stack.exporter.proc.poll() is None, "the exporter must not crash"


def test_once_prints_exposition_and_exit_code(stack: Stack) -> None:
    import subprocess

    from conftest import sigma_exporter_cmd

    url = f"http://127.0.0.1:{stack.sim_port}"
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
    import signal

    from conftest import sigma_exporter_cmd

    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:1\n    timeout: 1s\n")
    port = free_port()
    exporter = Proc(sigma_exporter_cmd("--config.file", str(config),
                                       "--web.listen-address", f"127.0.0.1:{port}"))
    base = f"http://127.0.0.1:{port}"
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
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: value(get(base + "/metrics").text, "sigma_targets") == 2, 20,
                   "reload to two targets")
        config.write_text("targets: [oops\n")
        exporter.proc.send_signal(signal.SIGHUP)
        def failed_reload() -> str | None:
            text = get(base + "/metrics").text
            return text if value(text, "sigma_config_last_reload_successful") == 0 else None

        body = wait_until(failed_reload, 20, "failed reload reported")
        assert value(body, "sigma_targets") == 2  # the old config keeps running
        assert exporter.proc.poll() is None
    finally:
        code, _, err = exporter.stop()
    assert code == 0, err
    assert "reload failed" in err


def test_job_series_and_a_dipped_job(stack: Stack) -> None:
    body = stack.metrics()
    assert value(body, "sigma_job_up", target="sim-1", job_name="VTV3") == 1
    httpx.post(f"{stack.control}/servers/0/jobs/VTV3", params={"speed": "0.5"}, timeout=5,
               trust_env=False).raise_for_status()
    try:
        wait_until(lambda: value(stack.metrics(), "sigma_job_speed", target="sim-1",
                                 job_name="VTV3") == 0.5, 20, "dipped job below real time")
    finally:
        httpx.post(f"{stack.control}/servers/0/jobs/VTV3", params={"speed": "clear"},
                   timeout=5, trust_env=False).raise_for_status()
