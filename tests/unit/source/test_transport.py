"""The lean HTTP/1.1 transport (`exchange`, and httpx's interface over it), against
scripted loopback servers.

Each server here answers with exact bytes, so the framing cases a real Sigma
server (or a proxy in front of it) may produce are covered one by one:
keep-alive, chunked, read-until-close, interim answers, caps, resets.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from conftest import make_ca, make_cert

from sigma_exporter.source.errors import PollError
from sigma_exporter.source.transport import Prepared, RawAnswer, SigmaTransport

# What a scripted server does with one request on one connection: it gets the
# request head and body, and writes to the stream; returning False closes.
Script = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


def ok(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json",
            b"Content-Length: " + str(len(body)).encode(), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Scripted:
    """A loopback HTTP server that follows a script; counts connections and requests."""

    def __init__(self, script: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                 ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._handlers:  # Python 3.11 has no Server.close_clients()
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                keep = await self.script(len(self.requests), request, writer)
                await writer.drain()
                if not keep:
                    return
        # A cancelled handler must end normally: Python 3.11 logs one that does not.
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


def answering(*answers: bytes, keep: bool = True) -> Script:
    async def script(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answers[min(n, len(answers)) - 1])
        return keep
    return script


async def post(transport: SigmaTransport, url: str, body: bytes = b'{"type":"dump"}',
               timeout: float = 5.0) -> RawAnswer:
    """One exchange under one deadline, as the client makes it."""
    async with asyncio.timeout(timeout):
        return await transport.exchange(Prepared.of(httpx.Request("POST", url, content=body)))


def run(coro: Awaitable[object]) -> object:
    async def main() -> object:
        return await coro
    return asyncio.run(main())


# --- the normal case -------------------------------------------------------------


def test_request_bytes_and_keep_alive_reuse() -> None:
    async def main() -> None:
        async with Scripted(answering(ok(b'{"a":1}'), ok(b'{"b":2}'))) as server:
            transport = SigmaTransport(None, max_body_bytes=1024)
            first = await post(transport, server.url("/api?x=1"))
            second = await post(transport, server.url("/api?x=1"))
            await transport.aclose()
        assert (first.status, first.body) == (200, b'{"a":1}')
        assert first.header(b"content-type") == "application/json"
        assert second.body == b'{"b":2}'
        assert server.connections == 1  # the second request reused the connection
        head, body = server.requests[0].split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /api?x=1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}".encode() in lines
        assert b"Content-Length: 15" in lines
        assert body == b'{"type":"dump"}'
    run(main())


def test_works_as_an_httpx_client_transport() -> None:
    async def main() -> None:
        async with Scripted(answering(ok(b'{"up":true}'))) as server, httpx.AsyncClient(
                transport=SigmaTransport(None, max_body_bytes=1024)) as client:
            response = await client.get(server.url("/x"), headers={"X-Probe": "1"})
        assert response.json() == {"up": True}
        assert response.http_version == "HTTP/1.1"
        assert b"X-Probe: 1" in server.requests[0]
        assert server.requests[0].startswith(b"GET /x HTTP/1.1\r\n")
    run(main())


def test_chunked_answer_is_reassembled() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
    async def main() -> None:
        async with Scripted(answering(chunked, ok(b"{}"))) as server:
            transport = SigmaTransport(None, max_body_bytes=1024)
            first = await post(transport, server.url())
            second = await post(transport, server.url())
            await transport.aclose()
        assert first.body == b'{"a":1}'
        assert second.body == b"{}"
        assert server.connections == 1
    run(main())


def test_body_delimited_by_close_and_connection_close_is_not_reused() -> None:
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"whole\":1}"
    async def main() -> None:
        async with Scripted(answering(until_close, keep=False)) as server:
            transport = SigmaTransport(None, max_body_bytes=1024)
            first = await post(transport, server.url())
            second = await post(transport, server.url())
            await transport.aclose()
        assert first.body == second.body == b'{"whole":1}'
        assert server.connections == 2
    run(main())


def test_interim_answer_is_skipped() -> None:
    async def main() -> None:
        async with Scripted(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"{}"))) as server:
            transport = SigmaTransport(None, max_body_bytes=1024)
            response = await post(transport, server.url())
            await transport.aclose()
        assert (response.status, response.body) == (200, b"{}")
    run(main())


def test_error_status_is_an_answer_not_an_exception() -> None:
    answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
    async def main() -> None:
        async with Scripted(answering(answer)) as server:
            transport = SigmaTransport(None, max_body_bytes=1024)
            response = await post(transport, server.url())
            await transport.aclose()
        assert (response.status, response.body) == (503, b"busy")
    run(main())


# --- caps and broken answers ---------------------------------------------------------


def test_declared_length_over_cap_is_refused_without_reading() -> None:
    async def main() -> None:
        huge = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"  # body never sent
        async with Scripted(answering(huge)) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            with pytest.raises(PollError) as caught:
                await post(transport, server.url())
            await transport.aclose()
        assert caught.value.reason == "too_large"
        assert "5000 bytes exceeds 1000" in caught.value.message
    run(main())


def test_streamed_body_over_cap_is_refused() -> None:
    chunk = b"x" * 600
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + (b"258\r\n" + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
    async def main() -> None:
        async with Scripted(answering(chunked)) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            with pytest.raises(PollError) as caught:
                await post(transport, server.url())
            assert not transport._open  # the connection was dropped, not kept
            await transport.aclose()
        assert caught.value.reason == "too_large" and "stopped reading" in caught.value.message
    run(main())


def test_malformed_answer_is_a_protocol_error() -> None:
    async def main() -> None:
        async with Scripted(answering(b"SIGMA/9 what\r\n\r\n")) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            with pytest.raises(PollError) as caught:
                await post(transport, server.url())
            await transport.aclose()
        assert caught.value.reason == "protocol"
    run(main())


def test_clean_close_mid_body_is_a_malformed_answer() -> None:
    async def main() -> None:
        truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut"
        async with Scripted(answering(truncated, keep=False)) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            with pytest.raises(PollError, match="truncated") as caught:
                await post(transport, server.url())
            assert caught.value.reason == "protocol"
            await transport.aclose()
    run(main())


def test_close_without_answer_on_a_new_connection_is_not_retried() -> None:
    async def silent(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        return False
    async def main() -> None:
        async with Scripted(silent) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            with pytest.raises(PollError, match="without answering") as caught:
                await post(transport, server.url())
            await transport.aclose()
        assert caught.value.reason == "connect"
        assert len(server.requests) == 1
    run(main())


def test_kept_connection_closed_by_server_is_replaced_once() -> None:
    # The first answer keeps the connection, then the server drops it without
    # a word when the next request comes in (an idle timeout racing the poll).
    async def script(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            return False
        writer.write(ok(b'{"n":%d}' % n))
        return True
    async def main() -> None:
        async with Scripted(script) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            await post(transport, server.url())
            again = await post(transport, server.url())
            await transport.aclose()
        assert again.body == b'{"n":3}'
        assert server.connections == 2
    run(main())


def test_bytes_on_an_idle_connection_make_it_unusable() -> None:
    async def script(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"{}") + b"HTTP/1.1 200 OK\r\n")  # one answer and a stray start
        return True
    async def main() -> None:
        async with Scripted(script) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            await post(transport, server.url())
            for _ in range(20):  # let the loop deliver the stray bytes
                await asyncio.sleep(0)
            await post(transport, server.url())
            await transport.aclose()
        assert server.connections == 2
    run(main())


# --- connecting, timeouts, cancellation -----------------------------------------------


def test_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        async with Scripted(answering(ok(b"{}"))) as server:
            url = server.url()
        transport = SigmaTransport(None, max_body_bytes=1000)
        with pytest.raises(PollError, match="cannot connect") as caught:
            await post(transport, url)
        await transport.aclose()
        assert caught.value.reason == "connect"
    run(main())


def test_a_missed_deadline_drops_the_connection() -> None:
    release = asyncio.Event()
    async def hang(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            await release.wait()
            return False
        writer.write(ok(b"{}"))
        return True
    async def main() -> None:
        async with Scripted(hang) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            with pytest.raises(TimeoutError):
                await post(transport, server.url(), timeout=0.05)
            assert not transport._open
            release.set()
            response = await post(transport, server.url())
            await transport.aclose()
        assert response.body == b"{}"
        assert server.connections == 2
    run(main())


def test_cancelled_exchange_leaves_no_connection_behind() -> None:
    async def hang(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.Event().wait()
        return False
    async def main() -> None:
        async with Scripted(hang) as server:
            transport = SigmaTransport(None, max_body_bytes=1000)
            task = asyncio.create_task(post(transport, server.url(), timeout=60))
            while not server.requests:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not transport._open
            assert not any(transport._idle.values())
            await transport.aclose()
    run(main())


def test_closed_transport_refuses_requests() -> None:
    async def main() -> None:
        transport = SigmaTransport(None, max_body_bytes=1000)
        await transport.aclose()
        with pytest.raises(PollError, match="closed"):
            await post(transport, "http://127.0.0.1:9/")
    run(main())


def test_other_schemes_are_refused() -> None:
    async def main() -> None:
        transport = SigmaTransport(None, max_body_bytes=1000)
        with pytest.raises(PollError, match="unsupported scheme"):
            await post(transport, "ftp://127.0.0.1/")
        await transport.aclose()
    run(main())


# --- TLS ---------------------------------------------------------------------------------


def test_tls_verified_against_the_configured_ca(tmp_path: Path) -> None:
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", server=True)
    make_ca(tmp_path, "other-ca")
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    stranger = ssl.create_default_context(cafile=str(tmp_path / "other-ca.crt"))

    async def main() -> None:
        async with Scripted(answering(ok(b'{"tls":1}')), ssl_context=server_side) as server:
            url = server.url(scheme="https")
            transport = SigmaTransport(trusting, max_body_bytes=1000)
            first = await post(transport, url)
            second = await post(transport, url)
            await transport.aclose()
            untrusted = SigmaTransport(stranger, max_body_bytes=1000)
            with pytest.raises(PollError) as caught:
                await post(untrusted, url)
            await untrusted.aclose()
        assert first.body == second.body == b'{"tls":1}'
        assert server.connections <= 2  # reused (a failed handshake may count too)
        assert caught.value.reason == "tls", caught.value.message
    run(main())


# --- memory -------------------------------------------------------------------------------


def test_dropped_connections_are_freed_without_the_cycle_collector() -> None:
    """The parser references its protocol; that cycle must not outlive the connection,
    or every dropped connection (and the answer it buffered) waits for a full GC."""
    import gc
    import weakref

    huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"3e8\r\n" + b"x" * 1000

    async def main() -> None:
        async with Scripted(answering(ok(b'{"a":1}'), huge)) as server:
            transport = SigmaTransport(None, max_body_bytes=500)
            await post(transport, server.url("/"), body=b"{}")
            kept = next(iter(transport._open))
            assert kept._body == [] and kept._headers == []  # idle: holds no old answer
            ref = weakref.ref(kept)
            del kept
            with pytest.raises(PollError):  # too large: the kept connection is reused, dropped
                await post(transport, server.url("/"), body=b"{}")
            for _ in range(5):  # let connection_lost run
                await asyncio.sleep(0)
            assert ref() is None
            await transport.aclose()

    gc.collect()
    gc.disable()
    try:
        run(main())
    finally:
        gc.enable()
