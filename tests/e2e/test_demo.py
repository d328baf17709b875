"""`sigma-exporter demo` and the flags' environment fallback, as a user runs them."""

from __future__ import annotations

import re
import signal
import time

from conftest import Proc, free_port, get, sigma_exporter_cmd, value, wait_until


def test_demo_serves_three_simulated_servers_and_stops_on_ctrl_c() -> None:
    port = free_port()
    demo = Proc(sigma_exporter_cmd("demo", "--web.listen-address", f"127.0.0.1:{port}",
                                   "--interval", "1s"))
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

        # Outputs with no extra step: every channel's HLS, read and fresh.
        def outputs_read() -> str | None:
            text = get(base + "/metrics").text
            fresh = re.findall(r'^sigma_output_stale\{target="sigma-01",job_name="VTV1",'
                               r'output="0",rendition="[^"]+"\} 0$', text, re.MULTILINE)
            return text if len(fresh) >= 2 else None

        wait_until(outputs_read, 30, "the demo's outputs read and fresh")
    finally:
        demo.proc.send_signal(signal.SIGINT)
        code, out, err = demo.stop_after_exit()
    assert code == 0, err
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
