"""The HTTP client: every failure maps to exactly one reason."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from conftest import FIXTURES, free_ports

from sigma_exporter.config import AuthConfig, TargetConfig
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.source.client import (
    DUMP_REQUEST,
    PROGRESS_REQUEST,
    PollError,
    SigmaClient,
    SSLContexts,
)

EXPECTED_REASON = {
    "refuse": "connect",
    "slow": "timeout",
    "http-502-html": "http_status",
    "truncated": "invalid_json",
    "invalid-json": "invalid_json",
    "non-object": "invalid_schema",
    "huge": "too_large",
    "trickle": "timeout",
    "invalid-utf8": "invalid_json",
    "redirect": "http_status",
}


async def _fetch(url: str, payload: dict[str, str] = DUMP_REQUEST, method: str = "POST",
                 **overrides: object) -> object:
    target = replace(TargetConfig(name="t", url=url, timeout=1.0), **overrides)  # type: ignore[arg-type]
    client = SigmaClient(target, SSLContexts())
    try:
        return await client.fetch(payload, method)
    except PollError as error:
        return error
    finally:
        await client.aclose()


@pytest.mark.parametrize("fault", sorted(EXPECTED_REASON))
def test_fault_maps_to_reason(fault: str) -> None:
    async def run() -> object:
        first = free_ports(1)
        sim = Simulator(make_servers(1, fault=fault), listen_host="127.0.0.1", first_port=first)
        async with sim:
            return await _fetch(sim.url(0), max_body_bytes=8 * 1024 * 1024)

    result = asyncio.run(run())
    assert isinstance(result, PollError), result
    assert result.reason == EXPECTED_REASON[fault], result.message


def test_healthy_get_and_post_dump_and_progress() -> None:
    async def run() -> list[object]:
        sim = Simulator(make_servers(1), listen_host="127.0.0.1", first_port=free_ports(1))
        async with sim:
            return [await _fetch(sim.url(0), DUMP_REQUEST, "POST"),
                    await _fetch(sim.url(0), DUMP_REQUEST, "GET"),
                    await _fetch(sim.url(0), PROGRESS_REQUEST, "POST")]

    post, get, progress = asyncio.run(run())
    for answer in (post, get, progress):
        assert not isinstance(answer, PollError), answer
    assert "System" in post.body and "System" in get.body  # type: ignore[attr-defined]
    assert "result" in progress.body  # type: ignore[attr-defined]


async def _serve_once(handler: web.StreamResponse | web.Response, check: object = None,
                      **overrides: Any) -> tuple[object, list[web.Request]]:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        await request.read()
        return handler

    app = web.Application()
    app.router.add_route("*", "/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_ports(1)
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        result = await _fetch(f"http://127.0.0.1:{port}/", **overrides)
    finally:
        await runner.cleanup()
    return result, seen


def test_documented_progress_text_is_invalid_json() -> None:
    body = (FIXTURES / "progress-sample-as-documented.txt").read_bytes()
    result, _ = asyncio.run(_serve_once(web.Response(body=body)))
    assert isinstance(result, PollError) and result.reason == "invalid_json"


def test_declared_length_over_cap_is_refused_before_reading() -> None:
    response = web.Response(body=b"{" + b" " * 5000 + b"}")
    result, _ = asyncio.run(_serve_once(response, max_body_bytes=1000))
    assert isinstance(result, PollError) and result.reason == "too_large"


def test_compressed_answer_is_capped_after_inflating() -> None:
    # 5 kB of JSON gzipped to a few dozen bytes: under the cap on the wire.
    packed = gzip.compress(b'{"pad":"' + b"x" * 5000 + b'"}')
    response = web.Response(body=packed, headers={"Content-Encoding": "gzip",
                                                  "Content-Type": "application/json"})
    result, _ = asyncio.run(_serve_once(response, max_body_bytes=1000))
    assert isinstance(result, PollError) and result.reason == "too_large", result
    assert "inflates past 1000 bytes" in result.message
    small, _ = asyncio.run(_serve_once(
        web.Response(body=gzip.compress(b'{"a":1}'), headers={"Content-Encoding": "gzip"}),
        max_body_bytes=1000))
    assert not isinstance(small, PollError) and small.body == {"a": 1}  # type: ignore[attr-defined]


def test_other_http_status_is_http_status() -> None:
    result, _ = asyncio.run(_serve_once(web.Response(status=401, text="no")))
    assert isinstance(result, PollError) and result.reason == "http_status"
    assert "401" in result.message


def test_basic_auth_and_headers_are_sent() -> None:
    result, seen = asyncio.run(_serve_once(
        web.json_response({"name": "x"}),
        auth=AuthConfig(username="mon", password="s3cret"),
        headers=(("X-Site", "hanoi"),)))
    assert not isinstance(result, PollError)
    request = seen[0]
    assert request.headers["Authorization"].startswith("Basic ")
    assert request.headers["X-Site"] == "hanoi"
    assert request.method == "POST"


def test_bearer_token_is_sent() -> None:
    _, seen = asyncio.run(_serve_once(web.json_response({}),
                                      auth=AuthConfig(bearer_token="tok123")))
    assert seen[0].headers["Authorization"] == "Bearer tok123"


def test_https_against_plain_http_is_tls() -> None:
    async def run() -> object:
        sim = Simulator(make_servers(1), listen_host="127.0.0.1", first_port=free_ports(1))
        async with sim:
            return await _fetch(sim.url(0).replace("http://", "https://"))

    result = asyncio.run(run())
    assert isinstance(result, PollError) and result.reason == "tls", result
