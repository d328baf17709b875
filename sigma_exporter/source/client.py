"""Fetching one answer from a Sigma server (httpx, async).

Every failure becomes a `PollError` with exactly one `reason`:
timeout, connect, tls, http_status, too_large, protocol, invalid_json,
invalid_schema (and `internal`, for a bug of ours: the poller records it for
its own, `fetch` for an exception nobody foresaw). `fetch` raises nothing else.
Redirects are never followed (a redirect is `http_status`): the exporter only
talks to URLs it was configured with. The body is capped while it streams in,
and a compressed body again while it is inflated.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from sigma_exporter import __version__
from sigma_exporter.config import TargetConfig, TLSConfig
from sigma_exporter.logsetup import fields
from sigma_exporter.redact import redact_url
from sigma_exporter.source.transport import BodyTooLarge, MalformedAnswer, SigmaTransport

log = logging.getLogger("sigma_exporter.source.client")

REASONS = (
    "timeout",
    "connect",
    "tls",
    "http_status",
    "too_large",
    "protocol",  # not valid HTTP: bad framing, a truncated or undecodable body
    "invalid_json",
    "invalid_schema",
    "series_limit",  # more series than the target's max_series: its data is dropped
    # A bug of ours, never the server's doing: while ingesting or rendering a
    # good answer (poller.TargetState records it; the target then reads up 0),
    # or an exception of a fetch nobody foresaw.
    "internal",
)

DUMP_REQUEST = {"type": "dump"}
PROGRESS_REQUEST = {"type": "progress", "name": "*"}


class PollError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown poll error reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Answer:
    body: dict[str, Any]
    received_at: float  # exporter wall clock when the answer was complete
    duration: float


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


def _is_tls_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return True
        current = current.__cause__ or current.__context__
    text = str(exc)
    return "SSL" in text or "CERTIFICATE" in text.upper()


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
        # Plain httpx.Request objects, not an AsyncClient: a client would build
        # (and keep) an SSL context of its own for every target.
        extensions = {"timeout": httpx.Timeout(target.timeout).as_dict()}
        json_headers = httpx.Headers(headers)
        json_headers["Content-Type"] = "application/json"
        self._requests: dict[tuple[str, str], httpx.Request] = {
            (payload["type"], "POST"): httpx.Request(
                "POST", target.url, headers=json_headers, content=orjson.dumps(payload),
                extensions=extensions)
            for payload in (DUMP_REQUEST, PROGRESS_REQUEST)
        }
        self._requests[("dump", "GET")] = httpx.Request("GET", target.url, headers=headers,
                                                        extensions=extensions)
        self._safe_url = redact_url(target.url)
        self._internal_logged = False

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def fetch(self, payload: dict[str, str], method: str = "POST") -> Answer:
        """Send one request; the whole exchange is bounded by the target timeout.

        Raises PollError and nothing else (cancellation aside): whatever the
        server does, the poll of this target fails with a reason.
        """
        try:
            return await self._fetch(payload, method)
        except PollError:
            raise
        except MemoryError:
            raise PollError("too_large", "out of memory reading the answer") from None
        except Exception as exc:  # a bug of ours: counted, with its traceback logged once
            if not self._internal_logged:
                self._internal_logged = True
                log.exception("unexpected error polling", extra=fields(url=self._safe_url))
            raise PollError("internal", f"{type(exc).__name__} polling {self._safe_url}") \
                from None

    async def _fetch(self, payload: dict[str, str], method: str) -> Answer:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.target.timeout):
                body = await self._request(payload, method)
        except TimeoutError:
            raise PollError(
                "timeout", f"no complete answer from {self._safe_url} "
                f"within {self.target.timeout:g}s"
            ) from None
        received_at = time.time()
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PollError("invalid_json", f"answer is not valid JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise PollError(
                "invalid_schema", f"answer is JSON {type(decoded).__name__}, not an object"
            )
        return Answer(decoded, received_at, time.perf_counter() - started)

    async def _request(self, payload: dict[str, str], method: str) -> bytes:
        request = self._requests.get((payload["type"], method))
        if request is None:
            raise ValueError(f"no {method} request for {payload['type']}")
        try:
            response = await self._transport.handle_async_request(request)
            try:
                if not 200 <= response.status_code < 300:
                    raise PollError(
                        "http_status", f"HTTP {response.status_code} from {self._safe_url}"
                    )
                # The transport already refused a raw answer over the cap (declared
                # or streamed); the encoding is undone here, under the same cap.
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except BodyTooLarge as exc:
            raise PollError("too_large", str(exc)) from None
        except httpx.TimeoutException:
            raise PollError("timeout", f"timed out talking to {self._safe_url}") from None
        except MalformedAnswer as exc:
            raise PollError("protocol", f"malformed answer from {self._safe_url}: {exc}") \
                from None
        except httpx.ConnectError as exc:
            reason = "tls" if _is_tls_error(exc) else "connect"
            raise PollError(reason, f"cannot connect to {self._safe_url}: {exc}") from None
        except httpx.TransportError as exc:
            # Reset or closed mid-answer; a TLS failure can surface here too.
            reason = "tls" if _is_tls_error(exc) else "connect"
            raise PollError(reason, f"connection to {self._safe_url} failed: {exc}") from None
        encoding = response.headers.get("Content-Encoding", "")
        return inflate(raw, encoding, self.target.max_body_bytes) if encoding else raw
