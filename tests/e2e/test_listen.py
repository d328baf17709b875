"""Listeners as the exporter-toolkit offers them, and HTTP caching conventions.

`--web.listen-address` repeats; `--web.systemd-socket` serves on the sockets
systemd hands over (tested with systemd's own `systemd-socket-activate`);
/metrics and /probe say what their body varies on.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest
from conftest import Proc, free_port, get, require_tool, sigma_exporter_cmd, value, wait_until

pytestmark = pytest.mark.e2e

TARGET = "http://127.0.0.1:9"  # nothing listens there: sigma_up 0 is enough here


def test_every_listen_address_serves() -> None:
    ports = [free_port(), free_port()]
    exporter = Proc(sigma_exporter_cmd("--target", TARGET, *[
        f"--web.listen-address=127.0.0.1:{port}" for port in ports]))
    try:
        for port in ports:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: get(base + "/-/ready").status_code == 200, 30, base)  # noqa: B023
            body = get(base + "/metrics").text
            assert value(body, "sigma_up") == 0
    finally:
        code, _, err = exporter.stop()
    assert code == 0, err
    assert ", ".join(f"127.0.0.1:{port}" for port in ports) in err


def test_a_repeated_or_bad_listen_address_exits_2() -> None:
    port = free_port()
    for args in ([f"--web.listen-address=127.0.0.1:{port}"] * 2,
                 [f"--web.listen-address=127.0.0.1:{port}", "--web.listen-address=nope"]):
        result = subprocess.run(sigma_exporter_cmd("--target", TARGET, *args),
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, result.stderr
        assert "--web.listen-address" in result.stderr


def test_systemd_socket_activation() -> None:
    """systemd-socket-activate binds the port and starts the exporter with it as fd 3."""
    activate = require_tool("systemd-socket-activate")
    port = free_port()
    proc = Proc([activate, "--listen", f"127.0.0.1:{port}",
                 *sigma_exporter_cmd("--target", TARGET, "--web.systemd-socket",
                                     # Ignored with socket activation, as in the toolkit.
                                     f"--web.listen-address=127.0.0.1:{free_port()}")])
    try:
        # The first connection starts the exporter, which then accepts it.
        response = wait_until(lambda: get(f"http://127.0.0.1:{port}/metrics"), 30,
                              "socket-activated exporter")
        assert response.status_code == 200 and value(response.text, "sigma_up") in (0, None)
        wait_until(lambda: get(f"http://127.0.0.1:{port}/-/ready").status_code == 200, 30,
                   "ready")
    finally:
        code, _, err = proc.stop()
    assert code == 0, err
    assert f"systemd:127.0.0.1:{port}" in err


def test_systemd_socket_without_sockets_exits_2() -> None:
    result = subprocess.run(sigma_exporter_cmd("--target", TARGET, "--web.systemd-socket"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "no socket activation file descriptors found" in result.stderr


def test_metrics_and_probe_vary_on_what_they_negotiate() -> None:
    port = free_port()
    exporter = Proc(sigma_exporter_cmd("--target", TARGET,
                                       f"--web.listen-address=127.0.0.1:{port}"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(base + "/-/ready").status_code == 200, 30, "ready")
        for headers in ({}, {"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"}):
            response = httpx.get(base + "/metrics", headers=headers, timeout=5, trust_env=False)
            assert response.headers["Vary"] == "Accept, Accept-Encoding"
        probe = get(base + "/probe", params={"target": "127.0.0.1:9"})
        assert probe.status_code == 200 and probe.headers["Vary"] == "Accept"
    finally:
        exporter.stop()
