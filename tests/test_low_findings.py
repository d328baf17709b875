"""The small findings of issue 15 ("Low"), one test or more each."""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from conftest import free_port, make_ca, make_cert, wait_until

from sigma_exporter.cli import WebThread
from sigma_exporter.config import config_from_urls
from sigma_exporter.poller import Poller
from sigma_exporter.serve import Exporter, wants_gzip
from sigma_exporter.webconfig import WebConfigWatcher


def test_gzip_refused_with_q_0_is_not_sent() -> None:
    assert wants_gzip("gzip")
    assert wants_gzip("deflate, GZIP;q=0.5")
    assert not wants_gzip("gzip;q=0")  # 0.1: gzip anyway
    assert not wants_gzip("gzip; q=0.000, identity")
    assert not wants_gzip("identity")
    assert not wants_gzip("gzip;q=junk")


# --- finding 10 (medium): a second exporter on a TLS port is refused -------------------


def test_a_second_tls_exporter_on_the_same_port_is_refused(tmp_path: Path) -> None:
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", server=True)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path / 'server.crt'}\n"
                   f"  key_file: {tmp_path / 'server.key'}\n")
    port = free_port()

    def start() -> WebThread:
        server = WebThread(Exporter(Poller(config_from_urls(["http://127.0.0.1:9"]))),
                           f"127.0.0.1:{port}", WebConfigWatcher(str(web)), max_requests=4,
                           read_timeout=10.0)
        server.start()
        return server

    first = start()
    try:
        # 0.1: SO_REUSEPORT let this one bind too, and the kernel split scrapes.
        with pytest.raises(OSError) as refused:
            start()
        assert refused.value.errno == errno.EADDRINUSE
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        context.check_hostname = False
        answer = httpx.get(f"https://127.0.0.1:{port}/-/healthy", verify=context,
                           trust_env=False, timeout=10)
        assert answer.status_code == 200
    finally:
        first.stop()


def test_a_tls_change_still_replaces_the_listener_in_place(tmp_path: Path) -> None:
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", server=True)
    make_cert(tmp_path, "renewed", "ca", server=True)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path / 'server.crt'}\n"
                   f"  key_file: {tmp_path / 'server.key'}\n")
    port = free_port()
    watcher = WebConfigWatcher(str(web))
    server = WebThread(Exporter(Poller(config_from_urls(["http://127.0.0.1:9"]))),
                       f"127.0.0.1:{port}", watcher, max_requests=4, read_timeout=10.0)
    server.start()
    try:
        web.write_text(f"tls_server_config:\n  cert_file: {tmp_path / 'renewed.crt'}\n"
                       f"  key_file: {tmp_path / 'renewed.key'}\n")
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        context.check_hostname = False

        def renewed() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    context.wrap_socket(raw) as tls:
                cert = tls.getpeercert(binary_form=True) or b""
            return cert == ssl.PEM_cert_to_DER_cert((tmp_path / "renewed.crt").read_text())

        wait_until(renewed, 30, "the renewed certificate served")
    finally:
        server.stop()
