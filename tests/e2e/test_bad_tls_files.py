"""A junk TLS file, as an operator meets it: through check-config, start, `once`,
POST /-/reload and SIGHUP, each time refused with the file, the key and the fix.

The messages are checked in-process by tests/unit/test_tlsfiles.py; these run the
exporter as a process, for what only a process shows: the exit codes (2, so systemd's
RestartPreventExitStatus=2 stops the restart loop), stderr without a traceback, and a
running exporter that keeps its config, says so in one log line and in
sigma_config_last_reload_successful.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
from conftest import (
    Proc,
    free_port,
    get,
    make_ca,
    make_cert,
    sigma_exporter_cmd,
    value,
    wait_until,
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sigma_exporter_cmd(*args), capture_output=True, text=True,
                          timeout=60, check=False)


def refused(result: subprocess.CompletedProcess[str], *wanted: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot serve" not in result.stderr
    for text in (*wanted, "Fix:"):
        assert text in result.stderr, result.stderr


def test_a_junk_ca_file_is_refused_at_every_door(tmp_path: Path) -> None:
    """What it proves that the unit tests do not: exit codes, stderr and the log of a
    running exporter whose reload (HTTP and signal) meets the junk file."""
    make_ca(tmp_path, "ca")
    junk = tmp_path / "junk-ca.pem"
    junk.write_text("<html>404 Not Found</html>\n")  # a download that went wrong
    good = f"targets:\n  - name: edge\n    url: https://127.0.0.1:9\n" \
           f"    tls:\n      ca_file: {tmp_path / 'ca.crt'}\n"
    bad = good.replace(str(tmp_path / "ca.crt"), str(junk)) \
        + "  - name: edge-2\n    url: http://127.0.0.1:9\n"
    config = tmp_path / "sigma.yml"
    config.write_text(bad)
    where = (str(config), "targets[0].tls.ca_file (target edge)", f"{junk} holds no PEM")

    refused(run("check-config", str(config)), *where)
    refused(run("check-config", "--config.file", str(config)), *where)
    refused(run("once", "--config.file", str(config), "--target", "edge"), *where)
    port = free_port()
    refused(run("--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}"),
            *where)

    config.write_text(good)
    exporter = Proc(sigma_exporter_cmd("--config.file", str(config), "--web.listen-address",
                                       f"127.0.0.1:{port}"), log=tmp_path / "exporter.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(base + "/-/ready").status_code == 200, 30, "the exporter ready")

        def reload_state() -> tuple[float | None, float | None]:
            body = get(base + "/metrics").text
            return (value(body, "sigma_config_last_reload_successful"),
                    value(body, "sigma_targets"))

        assert reload_state() == (1, 1)
        config.write_text(bad)
        answer = httpx.post(base + "/-/reload", timeout=10, trust_env=False)
        assert answer.status_code == 500
        assert "targets[0].tls.ca_file" in answer.text and "Fix:" in answer.text
        assert reload_state() == (0, 1), "refused: the old config (one target) runs on"

        config.write_text(good)
        assert httpx.post(base + "/-/reload", timeout=10, trust_env=False).status_code == 200
        assert reload_state() == (1, 1)

        config.write_text(bad)
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reload_state() == (0, 1), 20, "the SIGHUP reload refused")
    finally:
        code, _, log = exporter.stop()
    assert code == 0, log
    failures = [line for line in log.splitlines() if "reload failed" in line]
    assert len(failures) == 2, log  # one line per refused reload
    assert all("targets[0].tls.ca_file" in line for line in failures)
    for noise in ("Traceback", "Task exception was never retrieved", "Error handling request"):
        assert noise not in log, log


def test_a_web_config_with_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    """check-config and start both exit 2 naming the key file, not the listen address."""
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", server=True)
    make_cert(tmp_path, "other", "ca", server=True)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path}/server.crt\n"
                   f"  key_file: {tmp_path}/other.key\n")
    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: edge\n    url: http://127.0.0.1:9\n")
    where = (str(web), "tls_server_config.key_file", "does not belong to the certificate")
    refused(run("check-config", str(config), "--web.config.file", str(web)), *where)
    refused(run("--config.file", str(config), "--web.config.file", str(web),
                "--web.listen-address", f"127.0.0.1:{free_port()}"), *where)
