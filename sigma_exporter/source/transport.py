"""A lean HTTP/1.1 transport under httpx, for polling many Sigma servers.

httpx stays the client API (the requests are `httpx.Request` objects, and
`handle_async_request` makes this a documented httpx `AsyncBaseTransport`),
but its stock transport (httpcore on anyio, h11) spent more CPU per request
than parsing the answer did: a thousand servers polled twice every 15 s made
that the largest cost of a round. This transport speaks HTTP/1.1 on an
asyncio protocol with httptools (llhttp, the parser Node.js uses). Per server
it keeps a tiny keep-alive pool and collects each answer inside the protocol,
refusing it as soon as it grows past the cap.

The poll path calls `exchange`: request to answer in one pass. The body is
joined once, in the protocol; there is no timeout here (the caller's one
deadline bounds the whole exchange, connect included); and a failure is a
`PollError` with its reason decided where it happens, never translated again.

What it does not do, because the poller never asks for it: proxies, HTTP/2,
upgrades, `Expect: 100-continue`, streaming request bodies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import cast

import httptools
import httpx

from sigma_exporter.source.errors import PollError

# Most bytes of status line and headers we read before giving up on an answer.
# Go's client allows 10 MiB; Python keeps each header as objects several times
# its size, so the cap is lower: a Sigma answer's head is a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """One complete HTTP answer: status, headers as received, the body joined once."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> str:
        """The last value of header `name` (lower case), or ""."""
        found = b""
        for key, value in self.headers:
            if key.lower() == name:
                found = value
        return found.decode("latin-1")


class _NoAnswer(PollError):
    """The server closed the connection before sending a byte of an answer.

    On a kept connection that is the server's idle close racing our request:
    the transport retries once on a new connection (see `exchange`).
    """

    def __init__(self) -> None:
        super().__init__("connect", "server closed the connection without answering")


def _is_tls_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        current = current.__cause__ or current.__context__
    return False


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
        self._waiter: asyncio.Future[RawAnswer] | None = None
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
            self._fail(PollError("protocol", "malformed answer: unexpected protocol upgrade"))
            return
        except httptools.HttpParserError as exc:
            if not self._waiter.done():  # not a callback's own failure
                self._fail(PollError("protocol", f"malformed HTTP answer: {exc}"))
            return
        # The parser buffers a header until it ends: bound what it may hold
        # across reads (on_header bounds what one read completes).
        if not self._headers_done and self.received > MAX_HEAD_BYTES and not self._waiter.done():
            self._fail(PollError("too_large", f"answer headers exceed {MAX_HEAD_BYTES} bytes"))

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
            self._fail(_NoAnswer(), exc)
        elif exc is None:  # a clean close in the middle of a framed answer
            self._fail(PollError("protocol", "answer truncated: connection closed before its end"))
        else:  # reset mid-answer; a TLS failure can surface here too
            reason = "tls" if _is_tls_error(exc) else "connect"
            self._fail(PollError(reason, f"connection closed before the answer was complete: "
                                 f"{exc}"), exc)

    # --- httptools callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.closed = True  # an answer nobody asked for: never reuse this connection
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here too: headers that arrive in one read are parsed in one go.
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            self._fail(PollError("too_large", f"answer headers exceed {MAX_HEAD_BYTES} bytes"))
            raise httptools.HttpParserError("refused")
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            self._framed = True
        elif lowered == b"content-length":
            self._framed = True
            if value.strip().isdigit() and int(value) > self.max_body_bytes:
                self._fail(PollError(
                    "too_large", f"answer of {int(value)} bytes exceeds {self.max_body_bytes}"))
                raise httptools.HttpParserError("refused")  # stop parsing this answer

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._parser is not None:
            self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body_bytes:
            self._fail(PollError(
                "too_large", f"answer exceeds {self.max_body_bytes} bytes; stopped reading"))
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
            self._waiter.set_result(RawAnswer(self._status, self._headers, b"".join(self._body)))
        self._reset()  # an idle connection keeps nothing of its last answer

    def _fail(self, error: PollError, cause: BaseException | None = None) -> None:
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

    async def exchange(self, payload: bytes) -> RawAnswer:
        if self.transport is None or self.closed:
            raise _NoAnswer()
        self._waiter = asyncio.get_running_loop().create_future()
        self.received = 0
        self.transport.write(payload)
        try:
            return await self._waiter
        finally:
            self._waiter = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request serialised once: where it goes and its bytes on the wire.

    The poller sends the same few requests every round; each target keeps
    them as a few hundred bytes, not as httpx.Request objects (about 4 KB each).
    """

    scheme: bytes  # b"http" or b"https"
    host: str
    port: int
    payload: bytes

    @property
    def origin(self) -> tuple[bytes, str, int]:
        return self.scheme, self.host, self.port

    @staticmethod
    def of(request: httpx.Request) -> Prepared:
        """From an httpx.Request whose body is read (`content=` bytes, or after aread)."""
        url = request.url
        if url.raw_scheme not in (b"http", b"https"):
            raise PollError("connect", f"unsupported scheme {url.scheme!r}")
        lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        lines.append(request.content)
        port = url.port or (443 if url.raw_scheme == b"https" else 80)
        return Prepared(url.raw_scheme, url.host, port, b"".join(lines))


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
        self._idle: dict[tuple[bytes, str, int], list[_Exchange]] = {}
        self._open: set[_Exchange] = set()
        self._closed = False

    async def exchange(self, request: Prepared) -> RawAnswer:
        """Send `request`, return its complete answer, or raise PollError.

        No deadline of its own: the caller bounds the whole call (a
        cancelled exchange leaves no connection behind).
        """
        if self._closed:
            raise PollError("connect", "transport is closed")
        origin = request.origin
        connection, reused = self._take_idle(origin)
        if connection is None:
            connection = await self._connect(origin)
        try:
            answer = await self._exchange(connection, request.payload)
        except _NoAnswer:
            if not reused:
                raise
            # A kept connection the server had closed: once more, fresh.
            connection = await self._connect(origin)
            answer = await self._exchange(connection, request.payload)
        self._give_back(origin, connection)
        return answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport interface over `exchange`, for use under `httpx.AsyncClient`.

        The poll path does not come through here. httpx users get httpx's
        own error types; the timeout is the request's `read` timeout.
        """
        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            await request.aread()
            async with asyncio.timeout(timeout):
                answer = await self.exchange(Prepared.of(request))
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within {timeout:g}s",
                                    request=request) from None
        except PollError as exc:
            error: type[httpx.TransportError] = (
                httpx.RemoteProtocolError if exc.reason == "protocol"
                else httpx.ConnectError if exc.reason in ("connect", "tls")
                else httpx.TransportError)
            raise error(exc.message, request=request) from exc
        return httpx.Response(answer.status, headers=answer.headers,
                              stream=httpx.ByteStream(answer.body),
                              extensions={"http_version": b"HTTP/1.1"}, request=request)

    def _take_idle(self, origin: tuple[bytes, str, int]) -> tuple[_Exchange | None, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive_expiry:
                return connection, True
            self._drop(connection)
        return None, False

    def _give_back(self, origin: tuple[bytes, str, int], connection: _Exchange) -> None:
        idle = self._idle.setdefault(origin, [])
        if connection.closed or self._closed or len(idle) >= self._max_idle:
            self._drop(connection)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _drop(self, connection: _Exchange) -> None:
        connection.abort()
        self._open.discard(connection)

    async def _connect(self, origin: tuple[bytes, str, int]) -> _Exchange:
        scheme, host, port = origin
        tls = self._ssl_context if scheme == b"https" else None
        if scheme == b"https" and tls is None:
            tls = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        max_body = self._max_body_bytes
        try:
            _, protocol = await loop.create_connection(
                lambda: _Exchange(max_body), host, port, ssl=tls,
                server_hostname=host if tls is not None else None)
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS, handshake
            reason = "tls" if _is_tls_error(exc) else "connect"
            raise PollError(reason, f"cannot connect: {exc or type(exc).__name__}") from None
        except (UnicodeError, ValueError) as exc:  # a host name IDNA or the resolver refuses
            raise PollError("connect", f"cannot connect: unusable host name: {exc}") from None
        self._open.add(protocol)
        return protocol

    async def _exchange(self, connection: _Exchange, payload: bytes) -> RawAnswer:
        done = False
        try:
            answer = await connection.exchange(payload)
            done = True
            return answer
        finally:
            if not done:  # failed or cancelled (the deadline) mid-answer: unusable
                self._drop(connection)

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()
