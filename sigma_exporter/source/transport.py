"""A lean HTTP/1.1 transport under httpx, for polling many Sigma servers.

httpx stays the client API (requests, responses, errors), but its stock
transport (httpcore on anyio, h11) spent more CPU per request than parsing
the answer did: a thousand servers polled twice every 15 s made that the
largest cost of a round. This transport implements httpx's documented
`AsyncBaseTransport` directly on an asyncio protocol with httptools (llhttp,
the parser Node.js uses). Per server it keeps a tiny keep-alive pool and
collects each answer inside the protocol, refusing it as soon as it grows
past the cap.

What it does not do, because the poller never asks for it: proxies, HTTP/2,
upgrades, `Expect: 100-continue`, streaming request bodies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, cast

import httptools
import httpx

# Most bytes of status line and headers we read before giving up on an answer.
# Go's client allows 10 MiB; Python keeps each header as objects several times
# its size, so the cap is lower: a Sigma answer's head is a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024


class BodyTooLarge(httpx.TransportError):
    """The answer is bigger than the cap; `declared` is its Content-Length if it said."""

    def __init__(self, message: str, declared: int | None) -> None:
        super().__init__(message)
        self.declared = declared


class MalformedAnswer(httpx.RemoteProtocolError):
    """The server answered, but not in valid HTTP/1.1 (or cut its answer short)."""


class _Exchange(asyncio.Protocol):
    """One connection: sends a request, collects one response at a time."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self.received = 0  # bytes of the current response so far
        # The parser holds this protocol's callbacks: a reference cycle. It
        # lives only while the connection does (connection_made to _lost), so
        # a dropped connection and what it buffered are freed at once, not
        # at the next full garbage collection.
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # bytes of the headers parsed so far
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: EOF before the end is an error

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport
        self._parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done() or self._parser is None:
            # Bytes nobody asked for: the connection is out of step; drop it.
            self.abort()
            return
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedAnswer("unexpected protocol upgrade"))
            return
        except httptools.HttpParserError as exc:
            if not self._waiter.done():  # not a callback's own failure
                self._fail(MalformedAnswer(f"malformed HTTP answer: {exc}"))
            return
        # The parser buffers a header until it ends: bound what it may hold
        # across reads (on_header bounds what one read completes).
        if not self._headers_done and self.received > MAX_HEAD_BYTES and not self._waiter.done():
            self._fail(BodyTooLarge(f"answer headers exceed {MAX_HEAD_BYTES} bytes", None))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None  # break the cycle (see __init__)
        self.transport = None
        if self._waiter is None or self._waiter.done():
            self._reset()
            return
        if self._headers_done and not self._framed:
            self._complete()  # a body delimited by the end of the connection
        elif self.received == 0:
            error = httpx.RemoteProtocolError("server closed the connection without answering")
            self._fail(error, exc)
        elif exc is None:  # a clean close in the middle of a framed answer
            self._fail(MalformedAnswer("answer truncated: connection closed before its end"))
        else:
            self._fail(httpx.ReadError("connection closed before the answer was complete"), exc)

    # --- httptools callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.closed = True  # an answer nobody asked for: never reuse this connection
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here too: headers that arrive in one read are parsed in one go.
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            self._fail(BodyTooLarge(f"answer headers exceed {MAX_HEAD_BYTES} bytes", None))
            raise httptools.HttpParserError("refused")
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            self._framed = True
        elif lowered == b"content-length":
            self._framed = True
            if value.strip().isdigit() and int(value) > self.max_body_bytes:
                self._fail(BodyTooLarge(
                    f"answer of {int(value)} bytes exceeds {self.max_body_bytes}", int(value)))
                raise httptools.HttpParserError("refused")  # stop parsing this answer

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._parser is not None:
            self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body_bytes:
            self._fail(BodyTooLarge(
                f"answer exceeds {self.max_body_bytes} bytes; stopped reading", None))
            raise httptools.HttpParserError("refused")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            return  # an interim answer; the real one follows on this connection
        if self._parser is None or not self._parser.should_keep_alive():
            self.closed = True  # the server said Connection: close
        self._complete()

    # --- used by the transport ---------------------------------------------------

    def _complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._status, self._headers, b"".join(self._body)))
        self._reset()  # an idle connection keeps nothing of its last answer

    def _fail(self, error: Exception, cause: BaseException | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self._reset()
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(self, payload: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if self.transport is None or self.closed:
            raise httpx.ReadError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.received = 0
        self.transport.write(payload)
        try:
            return await self._waiter
        finally:
            self._waiter = None


def _serialise(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path  # path and query, already percent-encoded
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class SigmaTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 to one Sigma server (any host, but pooled per origin).

    `max_connections` idle connections are kept for reuse, at most
    `keepalive_expiry` seconds. A request that finds its kept connection
    closed by the server before any answer byte is retried once on a new
    connection: the poll requests are read-only, so resending is safe.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None, max_body_bytes: int,
                 max_connections: int = 2, keepalive_expiry: float = 35.0) -> None:
        self._ssl_context = ssl_context
        self._max_body_bytes = max_body_bytes
        self._max_idle = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[bytes, bytes, int], list[_Exchange]] = {}
        self._open: set[_Exchange] = set()
        self._closed = False
        self._payloads: dict[int, tuple[httpx.Request, bytes]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("transport is closed", request=request)
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}",
                                            request=request)
        port = url.port or (443 if scheme == b"https" else 80)
        origin = (scheme, url.raw_host, port)
        payload = await self._payload(request)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        connection, reused = self._take_idle(origin)
        if connection is None:
            connection = await self._connect(request, origin, timeouts.get("connect"))
        try:
            status, headers, body = await self._exchange(request, connection, payload,
                                                         timeouts.get("read"))
        except httpx.RemoteProtocolError:
            if not (reused and connection.received == 0):
                raise
            # A kept connection the server had closed: once more, fresh.
            connection = await self._connect(request, origin, timeouts.get("connect"))
            status, headers, body = await self._exchange(request, connection, payload,
                                                         timeouts.get("read"))
        self._give_back(origin, connection)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body),
                              extensions={"http_version": b"HTTP/1.1"}, request=request)

    async def _payload(self, request: httpx.Request) -> bytes:
        # The poller sends the same few requests every round: serialise each once.
        cached = self._payloads.get(id(request))
        if cached is not None and cached[0] is request:
            return cached[1]
        payload = _serialise(request, await request.aread())
        if len(self._payloads) < 16:
            self._payloads[id(request)] = (request, payload)
        return payload

    def _take_idle(self, origin: tuple[bytes, bytes, int]) -> tuple[_Exchange | None, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive_expiry:
                return connection, True
            self._drop(connection)
        return None, False

    def _give_back(self, origin: tuple[bytes, bytes, int], connection: _Exchange) -> None:
        idle = self._idle.setdefault(origin, [])
        if connection.closed or self._closed or len(idle) >= self._max_idle:
            self._drop(connection)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _drop(self, connection: _Exchange) -> None:
        connection.abort()
        self._open.discard(connection)

    async def _connect(self, request: httpx.Request, origin: tuple[bytes, bytes, int],
                       timeout: float | None) -> _Exchange:
        scheme, _, port = origin
        host = request.url.host
        tls = self._ssl_context if scheme == b"https" else None
        if scheme == b"https" and tls is None:
            tls = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        max_body = self._max_body_bytes
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Exchange(max_body), host, port, ssl=tls,
                    server_hostname=host if tls is not None else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection within {timeout:g}s",
                                       request=request) from None
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS, handshake
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        except (UnicodeError, ValueError) as exc:  # a host name IDNA or the resolver refuses
            raise httpx.ConnectError(f"unusable host name: {exc}", request=request) from exc
        self._open.add(protocol)
        return protocol

    async def _exchange(self, request: httpx.Request, connection: _Exchange, payload: bytes,
                        timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        done = False
        try:
            async with asyncio.timeout(timeout):
                result = await connection.exchange(payload)
            done = True
            return result
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within {timeout:g}s",
                                    request=request) from None
        except httpx.TransportError as exc:
            exc.request = request
            raise
        finally:
            if not done:  # timed out, failed or cancelled mid-answer: unusable
                self._drop(connection)

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()
        self._payloads.clear()
