"""The small findings of issue 15 ("Low"), one test or more each."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Proc, free_port, get, make_ca, make_cert, value, wait_until

from sigma_exporter.config import ConfigError, config_from_urls, load_config, parse_config
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.redact import redact_url
from sigma_exporter.web.exporter import Exporter
from sigma_exporter.web.server import WebThread
from sigma_exporter.web.webconfig import WebConfigWatcher, load_web_config

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


# --- files that are not regular files, or not UTF-8 ---------------------------------------


def _in_thread(call: Callable[[], object]) -> object:
    """`call()`'s result or exception, or `TimeoutError` if it blocks 10 s."""
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(call)), daemon=True)
    worker.start()
    worker.join(10)
    return outcome[0] if outcome else TimeoutError("blocked")


def _catch(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:
        return exc


def _unblock(fifo: Path) -> None:
    # A reader stuck in open() (0.1) is released by a writer opening the FIFO.
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("loader", [load_config, load_web_config])
def test_a_fifo_in_place_of_a_config_file_is_refused_without_blocking(
        tmp_path: Path, loader: Callable[[str], object]) -> None:
    fifo = tmp_path / "sigma.yml"
    os.mkfifo(fifo)
    try:
        result = _in_thread(lambda: loader(str(fifo)))
    finally:
        _unblock(fifo)
    assert isinstance(result, ConfigError), result
    assert "not a regular file" in str(result)


def test_a_fifo_or_non_utf8_password_file_is_a_config_error(tmp_path: Path) -> None:
    fifo, binary = tmp_path / "fifo", tmp_path / "pw"
    os.mkfifo(fifo)
    binary.write_bytes(b"\xff\xfe\x00secret")
    try:
        for path, problem in ((fifo, "not a regular file"), (binary, "not UTF-8")):
            doc = {"targets": [{"url": "http://a:1", "auth": {"username": "u",
                                                               "password_file": str(path)}}]}
            result = _in_thread(lambda doc=doc: parse_config(doc, "t.yml"))  # type: ignore[misc]
            assert isinstance(result, ConfigError), result
            assert problem in str(result) and "password_file" in str(result)
    finally:
        _unblock(fifo)


def test_reload_with_a_bad_password_file_or_a_fifo_reports_failure(
        procs: Callable[..., Proc], tmp_path: Path) -> None:
    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:1\n    timeout: 1s\n")
    port = free_port()
    exporter = procs("--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/-/healthy").status_code == 200, 30, "started")

    def reload_reported(successful: float) -> bool:
        return value(get(base + "/metrics").text,
                     "sigma_config_last_reload_successful") == successful

    password = tmp_path / "pw"
    password.write_bytes(b"\xff\xfe")
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:1\n    auth:\n"
                      f"      username: u\n      password_file: {password}\n")
    exporter.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reload_reported(0), 20, "failed reload reported")  # 0.1: stayed 1
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:1\n")
    exporter.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reload_reported(1), 20, "good reload")
    config.unlink()
    os.mkfifo(config)
    try:
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reload_reported(0), 20, "FIFO refused")  # 0.1: the poll loop hung
    finally:
        _unblock(config)
    assert exporter.proc.poll() is None


# --- header values, the open-file limit --------------------------------------------------


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b"])
def test_a_header_value_with_a_line_break_is_refused_at_load(bad: str) -> None:
    with pytest.raises(ConfigError, match="line break"):
        parse_config({"targets": [{"url": "http://a:1", "headers": {"X-Site": bad}}]}, "t.yml")


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
        procs: Callable[..., Proc]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"hard limit {hard} leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the child
    try:
        port = free_port()
        exporter = procs("--target", "http://127.0.0.1:9", "--web.listen-address",
                         f"127.0.0.1:{port}")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_until(lambda: get(f"http://127.0.0.1:{port}/-/healthy").status_code == 200, 30,
               "started")
    child_soft, child_hard = resource.prlimit(exporter.proc.pid, resource.RLIMIT_NOFILE)
    assert child_soft == child_hard == hard  # 0.1: 256


# --- malformed requests, redaction -------------------------------------------------------


def test_a_malformed_request_logs_one_line_not_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    server = WebThread(Exporter(Poller(config_from_urls(["http://127.0.0.1:9"]))),
                       f"127.0.0.1:{port}", None, max_requests=4, read_timeout=10.0)
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    server.start()
    try:
        for payload in (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2"
                        b"\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n", b"GARBAGE\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(payload)
                assert sock.recv(100).startswith(b"HTTP/1.0 400")
    finally:
        server.stop()
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 3
    for record in records:  # 0.1: ERROR and a traceback, each
        assert record.exc_info is None and record.levelno <= logging.INFO
        assert "\n" not in record.getMessage() and " 400 " in record.getMessage()


@pytest.mark.parametrize(("url", "expected"), [
    ("user:secret@host/live", "host/live"),  # no scheme: urlsplit read `user` as one
    ("rtmp:\\\\user:secret@host\\live\\chan", "rtmp://host/live/REDACTED"),
    ("rtmp://host/live2/abcd-secret-key", "rtmp://host/live2/REDACTED"),  # a stream key
    ("rtmps://u:secret@host:443/app", "rtmps://host:443/app"),
    ("http://host/hls/token=secret/index.m3u8", "http://host/hls/token=REDACTED/index.m3u8"),
    ("http://host/a;jsessionid=secret;x=1/", "http://host/a;jsessionid=REDACTED;x=1/"),
    ("udp://239.1.1.1:5000", "udp://239.1.1.1:5000"),
])
def test_job_input_urls_lose_every_kind_of_credential(url: str, expected: str) -> None:
    assert redact_url(url, drop_query=True) == expected
    assert "secret" not in redact_url(url)
