"""The ways a simulated server misbehaves (`FAULT_MODES`), and how each one answers.

Each mode reproduces what real servers, or the proxies in front of them, do:
refuse connections, answer late or byte by byte, send nginx's HTML 502, cut
the body short, send invalid JSON or UTF-8, redirect to a cloud metadata
address, or stream far more than any answer should be. `answer_with_fault`
turns the healthy answer into the faulty one; the HTTP side (`http_server`)
decides when to call it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from aiohttp import web

FAULT_MODES: Final[tuple[str, ...]] = (
    "none",
    "refuse",
    "slow",
    "http-502-html",
    "truncated",
    "invalid-json",
    "non-object",
    "huge",
    "flap",
    "progress-invalid",
    "trickle",
    "invalid-utf8",
    "redirect",
)

SLOW_DELAY_S: Final = 30.0
TRICKLE_INTERVAL_S: Final = 0.5
HUGE_BYTES: Final = 20 * 1024 * 1024
REDIRECT_TARGET: Final = "http://169.254.169.254/latest/meta-data/"

# The documented progress answer, byte for byte: a comma is missing between the
# two `profile` objects, so it is not valid JSON (fault mode `progress-invalid`).
PROGRESS_AS_DOCUMENTED: Final = """{
  "total": 1,
  "ec": 0,
  "result": {
    "$job_name": {
      "speed": 1.0,
      "created": "2020-08-13 11:23:39",
      "startup": "2020-08-13 11:50:05",
      "state": "started",
      "Life": "1h41m18s",
      "PTS": "1h41m19s",
      "error": [
        "[08-13 11:48:24] Input timeout (code: INPUT_TIMEOUT)"
      ],
      "input": [
        {
          "URL": "udp://234.5.6.7:8888",
          "profile": [
            "aac stereo@48000 137Kbps lc",
            "H264 1280x720p@25 VBR Yuv420P High 3.1"
          ],
          "bitrate": 2390646
        }
      ],
      "profile": [
        {
          "ID": "128K",
          "bitrate": 128760
        }
        {
          "id": "480",
          "bitrate": 962192
        }
      ],
      "target": [
        {
          "format": "hls",
          "url": "/mnt/ramdisk/origin04/source/",
          "select": [
            "128k",
            "480"
          ],
          "bitrate": 5211223
        }
      ],
      "weight": 1,
      "_id": ""
    }
  },
  "Tel": 2
}"""

NGINX_502_HTML: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class _UnframedResponse(web.StreamResponse):
    # No Content-Length and no chunking: the body ends when the connection
    # closes, so a cut body reaches the client as short but "complete" JSON.
    _length_check = False


def json_ok(body: bytes) -> web.Response:
    """The answer of a healthy server: 200 with a JSON body."""
    return web.Response(body=body, content_type="application/json")


async def answer_with_fault(
    request: web.BaseRequest, fault: str, kind: str, kind_count: int, body: bytes
) -> web.StreamResponse:
    """How a server in `fault` answers a request of `kind` ("dump" or "progress")
    whose healthy answer is `body`. `kind_count` is how many requests of this
    kind the server has had since its fault was set, this one included: `flap`
    fails every second one of each kind, so an exporter asking for both each
    round sees both fail every other round."""
    if fault == "progress-invalid" and kind != "progress":
        return json_ok(body)
    if fault == "refuse":  # a request raced the close: drop the connection
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)
    if fault == "slow":
        await asyncio.sleep(SLOW_DELAY_S)
        return json_ok(body)
    flapped = fault == "flap" and kind_count % 2 == 0
    if fault == "http-502-html" or flapped:
        return web.Response(
            status=502,
            body=NGINX_502_HTML,
            content_type="text/html",
            headers={"Server": "nginx/1.24.0"},
        )
    if fault == "flap":
        return json_ok(body)
    if fault == "invalid-json":
        return json_ok(b"Sigma Media Server: internal error, try again later\n")
    if fault == "non-object":
        return json_ok(b"[" + body + b"]")
    if fault == "progress-invalid":
        return json_ok(PROGRESS_AS_DOCUMENTED.encode())
    if fault == "invalid-utf8":
        # Valid JSON structure, but a string holds bytes that are not UTF-8.
        return json_ok(b'{"note":"bad \xff\xfe\xc3( bytes",' + body[1:])
    if fault == "redirect":
        return web.Response(status=302, headers={"Location": REDIRECT_TARGET})
    if fault == "truncated":
        resp = _UnframedResponse(status=200, headers={"Content-Type": "application/json"})
        resp.force_close()
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        await resp.write_eof()
        return resp
    if fault == "huge":
        return await _huge(request)
    if fault == "trickle":
        return await _trickle(request, body)
    raise AssertionError(f"unhandled fault {fault}")


async def _huge(request: web.BaseRequest) -> web.StreamResponse:
    # A valid JSON object of exactly HUGE_BYTES, chunked: only a size cap stops it.
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    head, tail = b'{"name":"huge","pad":"', b'"}'
    chunk = 64 * 1024
    pad = HUGE_BYTES - len(head) - len(tail)
    with contextlib.suppress(ConnectionError):
        await resp.write(head)
        block = b"x" * chunk
        while pad > 0:
            await resp.write(block[: min(chunk, pad)])
            pad -= chunk
        await resp.write(tail)
        await resp.write_eof()
    return resp


async def _trickle(request: web.BaseRequest, body: bytes) -> web.StreamResponse:
    # Headers at once, then one byte per interval: each read is quick, so
    # only a total deadline (not a per-read timeout) stops the client.
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.content_length = len(body)
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError):
        for i in range(len(body)):
            await resp.write(body[i : i + 1])
            await asyncio.sleep(TRICKLE_INTERVAL_S)
        await resp.write_eof()
    return resp
