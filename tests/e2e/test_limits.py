"""Limits: slow clients, too many requests at once, concurrent polls.

`Stub`, the tiny Sigma server on loopback these tests answer from, is in
tests/sigma_stub.py (the SSRF, secrets, starvation and first-hour tests use it too).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from conftest import Proc, free_port, get, value, wait_until
from sigma_stub import Stub, sigma_answer
from sigma_stub import stubs as stubs  # the fixture, used by name

pytestmark = pytest.mark.e2e

@pytest.fixture
def exporter(procs: Callable[..., Proc]) -> Callable[..., str]:
    """Start an exporter with the given flags; returns its base URL once healthy."""

    def start(*args: str) -> str:
        port = free_port()
        procs(*args, "--web.listen-address", f"127.0.0.1:{port}")
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(base + "/-/healthy").status_code in (200, 401), 30, "started")
        return base

    return start


# --- slow clients ---------------------------------------------------------------


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except (BlockingIOError, TimeoutError):
        return False
    except ConnectionError:
        return True


def test_slowloris_is_cut_off_and_does_not_block_scrapes(exporter: Callable[..., str]) -> None:
    """Clients that send a byte well within the read timeout, never the end of the
    headers, are cut when the timeout runs out: it bounds the whole request, not the
    silence between bytes (an idle timeout would keep them for ever)."""
    read_timeout = 3.0
    base = exporter("--target", "http://127.0.0.1:9", "--web.read-timeout",
                    f"{read_timeout:g}s")
    port = int(base.rsplit(":", 1)[1])
    trickling = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    silent = socket.create_connection(("127.0.0.1", port))
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    try:
        for sock in (*trickling, silent):
            sock.settimeout(0.05)
        started = time.monotonic()
        sent_at = [started]

        def all_cut() -> bool:
            for sock in trickling:  # one more byte each, never the blank line
                with contextlib.suppress(OSError):
                    sock.send(head[len(sent_at) % len(head):][:1])
            sent_at.append(time.monotonic())
            # Scrapes are answered while the slow clients hang on.
            assert get(base + "/metrics").status_code == 200
            return all(_closed_by_peer(s) for s in (*trickling, silent))

        wait_until(all_cut, 15, "slow connections closed")
        assert time.monotonic() - started < 10
        # They really were trickling when cut: a byte at least every half timeout.
        gaps = [b - a for a, b in itertools.pairwise(sent_at)]
        assert len(gaps) >= 2 and max(gaps) < read_timeout / 2, gaps
    finally:
        for sock in (*trickling, silent):
            sock.close()
    assert get(base + "/-/healthy").status_code == 200


def test_keep_alive_scrapes_still_work_with_a_short_read_timeout(
        exporter: Callable[..., str]) -> None:
    base = exporter("--target", "http://127.0.0.1:9", "--web.read-timeout", "1s")
    with httpx.Client(trust_env=False, timeout=5) as client:
        for _ in range(20):
            assert client.get(base + "/metrics").status_code == 200


def test_bad_limit_flags_exit_2(procs: Callable[..., Proc]) -> None:
    for flag, bad in (("--web.read-timeout", "0s"), ("--web.read-timeout", "soon"),
                      ("--web.max-requests", "-1"), ("--web.max-requests", "many")):
        proc = procs("--target", "http://127.0.0.1:9", flag, bad)
        proc.proc.wait(timeout=30)
        code, _, err = proc.stop()
        assert code == 2, (flag, bad, err)
        assert flag in err


# --- too many requests ----------------------------------------------------------------


def _exporter_for_tests() -> Any:
    from sigma_exporter.config import config_from_urls
    from sigma_exporter.poll.scheduler import Poller
    from sigma_exporter.web.exporter import Exporter

    return Exporter(Poller(config_from_urls(["http://127.0.0.1:9"])))


def test_requests_beyond_max_requests_get_503() -> None:
    import asyncio

    from aiohttp import web

    from sigma_exporter.web.routes import build_app

    async def main() -> list[int]:
        release = asyncio.Event()
        app = build_app(_exporter_for_tests(), None, max_requests=2)

        async def slow(request: web.Request) -> web.Response:
            await release.wait()
            return web.Response(text="done")

        app.router.add_get("/slow", slow)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
                url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
                held = [asyncio.create_task(client.get(url + "/slow")) for _ in range(2)]
                while app[IN_FLIGHT].current < 2:
                    await asyncio.sleep(0.01)
                third = (await client.get(url + "/-/healthy")).status_code
                release.set()
                codes = [(await task).status_code for task in held]
                after = (await client.get(url + "/-/healthy")).status_code
            return [*codes, third, after]
        finally:
            await runner.cleanup()

    from sigma_exporter.web.routes import IN_FLIGHT

    assert asyncio.run(main()) == [200, 200, 503, 200]


def test_clients_without_credentials_cannot_starve_prometheus(tmp_path: Path) -> None:
    """Sixteen clients guessing passwords as fast as they can, against
    --web.max-requests 4: every scrape with the right credentials is answered
    (0.1: bad clients held the slots while bcrypt ran, most scrapes got 503)."""
    from sigma_exporter.web.server import WebThread
    from sigma_exporter.web.webconfig import WebConfigWatcher

    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(10)).decode()
    web.write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    port = free_port()
    server = WebThread(_exporter_for_tests(), f"127.0.0.1:{port}", WebConfigWatcher(str(web)),
                       max_requests=4, read_timeout=10.0)
    server.start()
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    bad_codes: list[int] = []

    def guess(worker: int) -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            attempt = 0
            while not stop.is_set():
                attempt += 1
                bad_codes.append(client.get(base + "/metrics",
                                            auth=("prom", f"guess-{worker}-{attempt}")).status_code)

    try:
        with httpx.Client(trust_env=False, timeout=30) as prometheus, \
                ThreadPoolExecutor(16) as pool:
            assert prometheus.get(base + "/metrics", auth=("prom", "right")).status_code == 200
            attackers = [pool.submit(guess, i) for i in range(16)]
            wait_until(lambda: len(bad_codes) >= 16, 30, "the guessing under way")
            codes = [prometheus.get(base + "/metrics", auth=("prom", "right")).status_code
                     for _ in range(30)]
            stop.set()
            for attacker in attackers:
                attacker.result()
    finally:
        stop.set()
        server.stop()
    assert codes == [200] * 30, codes
    assert set(bad_codes) <= {401, 503}, set(bad_codes)


# --- concurrent polls ----------------------------------------------------------------


def test_poll_max_concurrent_bounds_simultaneous_polls(
        exporter: Callable[..., str], stubs: Callable[..., Stub], tmp_path: Path) -> None:
    release = threading.Event()

    def slow(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str],
                                                                    bytes]:
        release.wait(0.3)  # hold each request a while so that polls overlap
        return sigma_answer(handler, body)

    stub = stubs(slow)
    config = tmp_path / "sigma.yml"
    config.write_text(
        "poll:\n  max_concurrent: 2\ndefaults:\n  interval: 2s\n  timeout: 1500ms\n"
        "  jobs:\n    enabled: false\ntargets:\n"
        + "".join(f"  - name: t{i}\n    url: {stub.url}\n" for i in range(10)))
    base = exporter("--config.file", str(config))
    wait_until(lambda: all(value(get(base + "/metrics").text, "sigma_up", target=f"t{i}") == 1
                           for i in range(10)), 30, "every target polled")
    release.set()
    assert len(stub.requests) >= 10
    assert stub.peak == 2, stub.peak  # reached the cap, never more


def test_header_deadline_works_without_aiohttps_own_timer() -> None:
    """Our deadline alone (aiohttp's keep-alive timer set to an hour) cuts a slowloris."""
    import asyncio

    from aiohttp import web

    from sigma_exporter.web.server import ExporterSite

    async def main() -> tuple[bytes, bytes]:
        app = web.Application()

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_get("/", ok)
        runner = web.AppRunner(app, keepalive_timeout=3600)
        await runner.setup()
        site = ExporterSite(runner, "127.0.0.1", 0, ssl_context=None, read_timeout=0.5)
        await site.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            got = b""
            async with asyncio.timeout(10):
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000:
                    writer.write(bytes([byte]))
                    try:
                        got = await asyncio.wait_for(reader.read(1), 0.05)
                    except TimeoutError:
                        continue
                    if got == b"":
                        break
            writer.close()
            # A complete request on a fresh connection is answered.
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return got, answer
        finally:
            await runner.cleanup()

    got, answer = asyncio.run(main())
    assert got == b""
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
