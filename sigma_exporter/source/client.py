"""Fetching one answer from a Sigma server: request to decoded JSON in one pass.

One deadline (the target's timeout) bounds the whole fetch: connect, send,
receive, inflate and decode. A failure is a `PollError` with one reason of
`errors.REASONS`, decided where it happens (the transport: connect, tls,
protocol, too_large; here: timeout, http_status, the encoding, the JSON);
an exception nobody foresaw is the caller's `internal`. Redirects are never
followed (a redirect is `http_status`): the exporter only talks to URLs it
was configured with. The body is capped while it streams in, and a
compressed body again while it is inflated.
"""

from __future__ import annotations

import asyncio
import base64
import math
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from sigma_exporter import __version__
from sigma_exporter.config import TargetConfig, TLSConfig
from sigma_exporter.source.errors import REASONS as REASONS
from sigma_exporter.source.errors import PollError as PollError
from sigma_exporter.source.transport import Prepared, SigmaTransport

DUMP_REQUEST = {"type": "dump"}
PROGRESS_REQUEST = {"type": "progress", "name": "*"}


@dataclass(frozen=True, slots=True)
class Answer:
    body: dict[str, Any]
    received_at: float  # exporter wall clock when the answer was complete
    duration: float
    size: int = 0  # bytes of the answer, inflated
    decode_seconds: float = 0.0  # of which decoding its JSON
    deadline: float = math.inf  # time.monotonic() by which the whole read must be done


class ReadCost:
    """What reading an answer costs here, per byte: decoding, parsing and turning it
    into samples, learned from the reads of large answers (every target's).

    A read must end within the target's timeout, parse included. An answer
    whose read would not fit in the time its fetch left is refused before it
    is decoded (`timeout`); `collect/sigma.py` refuses one whose read overran
    anyway. Seeded with a cost measured on a loaded 2-core machine (about 370
    ns per byte of a 500-job progress answer), an exponential average of the
    reads of answers of LEARN_FROM bytes or more follows the machine's own.
    """

    SEED = 400e-9
    LEARN_FROM = 64 * 1024

    def __init__(self, seconds_per_byte: float = SEED) -> None:
        self.seconds_per_byte = seconds_per_byte

    def projected(self, size: int) -> float:
        return size * self.seconds_per_byte

    def observe(self, size: int, seconds: float) -> None:
        if size >= self.LEARN_FROM and seconds > 0:
            self.seconds_per_byte += 0.2 * (seconds / size - self.seconds_per_byte)


# The process's one estimate: the poll loop alone reads and updates it.
READ_COST = ReadCost()


# zlib window bits per Content-Encoding we ask for (Accept-Encoding: gzip, deflate).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_INFLATE_STEP = 64 * 1024  # most bytes one zlib call may produce


def _zlib_header(body: bytes) -> bool:
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


def inflate(body: bytes, content_encoding: str, cap: int) -> bytes:
    """The body with its Content-Encoding undone, never more than `cap` bytes.

    Inflating in one call lets a 2 KB answer become gigabytes before any cap
    is checked; here zlib hands out at most `_INFLATE_STEP` bytes at a time.
    Stacked encodings (`gzip, gzip`) multiply the ratio and no server needs
    them: refused as too large. Bad or truncated data is `protocol`.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return body
    if len(codings) > 1:
        raise PollError("too_large", f"stacked Content-Encoding {content_encoding!r} refused "
                        "(a compression bomb's shape)")
    wbits = _WBITS.get(codings[0])
    if wbits is None:
        raise PollError("protocol", f"Content-Encoding {codings[0]!r} was not asked for")
    if wbits == zlib.MAX_WBITS and not _zlib_header(body):
        wbits = -zlib.MAX_WBITS  # "deflate" sent raw, without the zlib header
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while True:
            decoder = zlib.decompressobj(wbits)
            while True:
                chunk = decoder.decompress(data, _INFLATE_STEP)
                size += len(chunk)
                if size > cap:
                    raise PollError("too_large",
                                    f"answer inflates past {cap} bytes; stopped inflating")
                out.append(chunk)
                data = decoder.unconsumed_tail
                if decoder.eof or (not chunk and not data):
                    break
            if not decoder.eof:
                raise PollError("protocol", f"{codings[0]} body is truncated")
            data = decoder.unused_data
            if not data or wbits != _WBITS["gzip"]:
                break  # a gzip body may hold several members; deflate is one stream
    except zlib.error as exc:
        raise PollError("protocol", f"body is not valid {codings[0]}: {exc}") from None
    return b"".join(out)


class SSLContexts:
    """One SSL context per distinct TLS setting, shared by all targets using it.

    Building a context loads the CA bundle (milliseconds and ~100 KiB each);
    a thousand targets with the same settings must not build a thousand.
    """

    def __init__(self) -> None:
        self._contexts: dict[TLSConfig, ssl.SSLContext] = {}

    def get(self, tls: TLSConfig) -> ssl.SSLContext:
        context = self._contexts.get(tls)
        if context is None:
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.insecure_skip_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if tls.cert_file:
                context.load_cert_chain(tls.cert_file, tls.key_file)
            self._contexts[tls] = context
        return context


class SigmaClient:
    """The HTTP side of one target: its own small connection pool.

    One pool per target keeps connection selection O(1) (httpx's shared
    pool scans every connection on each request, upstream issue 3215).
    The two requests a poll sends never change, so they are built once with
    httpx and handed straight to the transport: no redirect, cookie or auth
    machinery runs per poll (redirects are refused anyway, auth is a fixed
    header). The transport is our lean `SigmaTransport` (see transport.py).
    """

    def __init__(self, target: TargetConfig, contexts: SSLContexts) -> None:
        self.target = target
        headers = httpx.Headers({
            "User-Agent": f"sigma-exporter/{__version__}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        })
        headers.update(target.headers)  # configured headers win, whatever their case
        if target.auth.bearer_token is not None:
            headers["Authorization"] = f"Bearer {target.auth.bearer_token}"
        elif target.auth.username is not None:
            pair = f"{target.auth.username}:{target.auth.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        # The SSL context is shared by every target with the same TLS settings.
        # Connections are kept across polls (the server may still close them).
        self._transport = SigmaTransport(
            contexts.get(target.tls), max_body_bytes=target.max_body_bytes,
            max_connections=2, keepalive_expiry=target.interval * 2 + 5)
        # httpx builds each request (headers, URL) once, when first sent; the
        # target keeps it serialised, not an AsyncClient (which would build and
        # keep an SSL context of its own for every target).
        self._headers = headers
        self._requests: dict[tuple[str, str], Prepared] = {}

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _prepare(self, payload: dict[str, str], method: str) -> Prepared:
        if method == "GET":
            return Prepared.of(httpx.Request("GET", self.target.url, headers=self._headers))
        headers = httpx.Headers(self._headers)
        headers["Content-Type"] = "application/json"
        return Prepared.of(httpx.Request("POST", self.target.url, headers=headers,
                                         content=orjson.dumps(payload)))

    async def fetch(self, payload: dict[str, str], method: str = "POST") -> Answer:
        """One request, bounded as a whole by the target's timeout; raises PollError.

        Any other exception is a bug of ours, left to the source's `execute()`
        (reason `internal`, its traceback logged once).
        """
        request = self._requests.get((payload["type"], method))
        if request is None:
            request = self._requests[(payload["type"], method)] = self._prepare(payload, method)
        started = time.perf_counter()
        deadline = time.monotonic() + self.target.timeout
        try:
            async with asyncio.timeout(self.target.timeout):
                answer = await self._transport.exchange(request)
        except TimeoutError:
            raise PollError("timeout", f"no complete answer within {self.target.timeout:g}s "
                            "(the target's timeout)") from None
        received_at = time.time()
        if not 200 <= answer.status < 300:
            raise PollError("http_status", f"HTTP {answer.status}")
        encoding = answer.header(b"content-encoding")
        body = inflate(answer.body, encoding, self.target.max_body_bytes) if encoding \
            else answer.body
        left = deadline - time.monotonic()
        if READ_COST.projected(len(body)) > left:
            raise PollError("timeout", f"answer of {len(body)} bytes arrived with {left:.2f}s of "
                            f"the {self.target.timeout:g}s timeout left; reading it takes about "
                            f"{READ_COST.projected(len(body)):.2f}s here: refused unread")
        decoding = time.perf_counter()
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PollError("invalid_json", f"answer is not valid JSON: {exc}") from None
        except MemoryError:
            raise PollError("too_large", "out of memory decoding the answer") from None
        if not isinstance(decoded, dict):
            raise PollError(
                "invalid_schema", f"answer is JSON {type(decoded).__name__}, not an object")
        done = time.perf_counter()
        return Answer(decoded, received_at, done - started, len(body), done - decoding, deadline)
