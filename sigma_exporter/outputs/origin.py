"""Central mode: an output's folder fetched from its root's origin URL over HTTP.

The same checks as on disk (`folder.read_output`), over our lean HTTP/1.1
client (`source/transport.py`): the target's TLS and auth options, no
redirects (a 3xx is an `http` error, never followed), every answer capped at
`outputs.max_playlist_bytes`, every request bounded by the target's timeout,
`Cache-Control: no-cache` so that a cache in front of the origin does not
serve an old copy. Only paths inside the output's folder are ever asked for
(`hls.safe_relative`), always on the root's own origin.

A folder cannot be listed over HTTP, so the names of `outputs.playlist_names`
are tried in order; a playlist is fetched whole and judged by its content
(`Last-Modified` is not trusted), and only the newest segment is touched,
with one ranged read of its first byte.
"""

from __future__ import annotations

import asyncio
import base64
import re
from urllib.parse import quote

import httpx

from sigma_exporter import __version__
from sigma_exporter.config import TargetConfig
from sigma_exporter.outputs.folder import Fetched, FolderError, Seen, newest_bytes
from sigma_exporter.outputs.hls import MediaPlaylist, read_head_tail, safe_relative
from sigma_exporter.source.client import SSLContexts
from sigma_exporter.source.errors import PollError
from sigma_exporter.source.transport import Prepared, RawAnswer, SigmaTransport

_CONTENT_RANGE = re.compile(r"^bytes \d+-\d+/(\d+)$")


class Origin:
    """One root's origin: a small keep-alive pool and the target's credentials."""

    def __init__(self, target: TargetConfig, contexts: SSLContexts, max_bytes: int,
                 connections: int = 8) -> None:
        self.timeout = target.timeout
        headers = {
            "User-Agent": f"sigma-exporter/{__version__}",
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "Cache-Control": "no-cache",
        }
        if target.auth.bearer_token is not None:
            headers["Authorization"] = f"Bearer {target.auth.bearer_token}"
        elif target.auth.username is not None:
            pair = f"{target.auth.username}:{target.auth.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self.headers = httpx.Headers(headers)
        self.transport = SigmaTransport(contexts.get(target.tls), max_body_bytes=max_bytes,
                                        max_connections=connections,
                                        keepalive_expiry=target.interval * 2 + 5)
        self.limit = asyncio.Semaphore(connections)

    async def get(self, url: str, byte_range: str | None = None) -> RawAnswer:
        headers = self.headers if byte_range is None else httpx.Headers(
            {**self.headers, "Range": byte_range})
        request = httpx.Request("GET", url, headers=headers)
        async with self.limit:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self.transport.exchange(Prepared.of(request))
            except TimeoutError:
                raise FolderError("timeout", f"no answer within {self.timeout:g}s") from None
            except PollError as exc:
                reason = "too_large" if exc.reason == "too_large" else "http"
                raise FolderError(reason, exc.message) from None

    async def aclose(self) -> None:
        await self.transport.aclose()


def _status(answer: RawAnswer, path: str) -> None:
    status = answer.status
    if 200 <= status < 300:
        return
    if status in (404, 410):
        raise FolderError("missing", f"{path}: HTTP {status}")
    if status in (401, 403):
        raise FolderError("permission", f"{path}: HTTP {status}")
    if 300 <= status < 400:
        raise FolderError("http", f"{path}: HTTP {status}, a redirect (never followed)")
    raise FolderError("http", f"{path}: HTTP {status}")


class OriginFolder:
    """An output folder on the origin: `base` is the root's URL plus the folder."""

    def __init__(self, origin: Origin, base: str) -> None:
        self.origin = origin
        self.base = base if base.endswith("/") else base + "/"

    def _url(self, path: str) -> str:
        return self.base + quote(path, safe="/")

    async def names(self) -> list[str] | None:
        return None  # an origin lists no folder: the configured names are tried

    async def read(self, path: str, stamp: object, changing: bool = False) -> Fetched | None:
        answer = await self.origin.get(self._url(path))
        _status(answer, path)
        body = answer.body
        (start, length), tail_at = read_head_tail(len(body))
        tail = None if tail_at is None else body[tail_at[0]:tail_at[0] + tail_at[1]]
        return Fetched(None, None, body[start:start + length], tail)

    async def segments(self, seen: Seen, playlist_path: str, before: Seen | None) -> None:
        """The newest segment alone: its size, or that it is missing."""
        content = seen.content
        if not isinstance(content, MediaPlaylist) or not content.uris:
            return
        relative = safe_relative(content.uris[-1])
        if relative is None:
            seen.unsafe = 1
            return
        base = playlist_path.rpartition("/")[0]
        size = await self.size(f"{base}/{relative}" if base else relative)
        if size is None:
            seen.missing = 1
        elif size >= 0:
            seen.newest_size = newest_bytes(content, size)

    async def size(self, path: str) -> int | None:
        try:
            answer = await self.origin.get(self._url(path), "bytes=0-0")
        except FolderError as exc:
            if exc.reason == "too_large":  # Range ignored, a big segment: there, size unknown
                return -1
            raise
        if answer.status in (404, 410):
            return None
        _status(answer, path)
        if answer.status == 206:
            match = _CONTENT_RANGE.match(answer.header(b"content-range").strip())
            return int(match.group(1)) if match else -1
        return len(answer.body)
