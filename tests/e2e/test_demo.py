"""`sigma-exporter demo` and the flags' environment fallback, as a user runs them."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
from conftest import Proc, free_port, get, sigma_exporter_cmd, value, wait_until


def test_demo_serves_three_simulated_servers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    demo = Proc(sigma_exporter_cmd("demo", "--web.listen-address", f"127.0.0.1:{port}",
                                   "--interval", "1s"), log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        def all_up() -> str | None:
            text = get(base + "/metrics").text
            ups = re.findall(r'^sigma_up\{target="[^"]+"\} (\S+)$', text, re.MULTILINE)
            return text if ups == ["1", "1", "1"] else None

        body = wait_until(all_up, 30, "three simulated servers up")
        targets = set(re.findall(r'sigma_up\{target="([^"]+)"\}', body))
        assert len(targets) == 3
        gpus = {t for t in targets if value(body, "sigma_gpu_info", target=t) == 1}
        assert len(gpus) == 2, "the third simulated server has no GPU"
        assert value(body, "sigma_license_status", target="sigma-02", status="VALID") == 1
        # The printed control calls make the incidents the alerts are for.
        calls = wait_until(lambda: re.findall(r"curl -X POST '([^']+)'", log.read_text()),
                           30, "the demo's control calls printed")
        assert len(calls) == 3
        for call in calls:
            assert httpx.post(call, timeout=5, trust_env=False).status_code == 200, call

        def incident_seen() -> bool:
            text = get(base + "/metrics").text
            return (value(text, "sigma_license_status", target="sigma-02",
                          status="EXPIRED") == 1
                    and value(text, "sigma_control_plane_connected", target="sigma-02") == 0
                    and value(text, "sigma_job_up", target="sigma-02", job_name="VTV3") == 0
                    and value(text, "sigma_license_status", target="sigma-01",
                              status="VALID") == 1)

        wait_until(incident_seen, 30, "sigma-02's licence, link and channel in the metrics")

        # Outputs with no extra step: every channel's HLS, read and fresh.
        def outputs_read() -> str | None:
            text = get(base + "/metrics").text
            fresh = re.findall(r'^sigma_output_stale\{target="sigma-01",job_name="VTV1",'
                               r'output="0",rendition="[^"]+"\} 0$', text, re.MULTILINE)
            return text if len(fresh) >= 2 else None

        wait_until(outputs_read, 30, "the demo's outputs read and fresh")
    finally:
        demo.proc.send_signal(signal.SIGINT)
        code, _, out = demo.stop_after_exit()
    assert code == 0, out
    assert f"{base}/metrics" in out
    assert "Press Ctrl-C to stop." in out


def test_flags_fall_back_to_environment(tmp_path: object) -> None:
    port = free_port()
    started = time.monotonic()
    exporter = Proc(sigma_exporter_cmd(), env={
        "SIGMA_EXPORTER_TARGETS": f"http://127.0.0.1:{free_port()}",
        "SIGMA_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "SIGMA_EXPORTER_WEB_TELEMETRY_PATH": "/sigma-metrics",
        "SIGMA_EXPORTER_LOG_FORMAT": "json",
    })
    try:
        body = wait_until(lambda: get(f"http://127.0.0.1:{port}/sigma-metrics").text, 30,
                          "exporter on the env address and path")
        assert value(body, "sigma_targets") == 1
    finally:
        code, _, err = exporter.stop()
    assert code == 0
    assert err.lstrip().startswith("{"), "json logs from SIGMA_EXPORTER_LOG_FORMAT"
    assert time.monotonic() - started < 60
