"""Tests of the simulated Sigma Media Server (sigma_exporter.sim).

Rendering is checked as pure functions of (server, time). HTTP checks run a
real aiohttp simulator on 127.0.0.1 ephemeral ports and always stop it.
Pass/fail never depends on a wall-clock sleep; the slow faults are checked by
a client timeout tripping.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from sigma_exporter.sim.dump import render_dump
from sigma_exporter.sim.faults import HUGE_BYTES, PROGRESS_AS_DOCUMENTED, REDIRECT_TARGET
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import SimServer, job_names, make_servers
from sigma_exporter.sim.progress import (
    ERROR_CODES,
    emitted_errors,
    error_lines,
    error_message,
    job_speed,
    render_progress,
    set_job_state,
)
from sigma_exporter.sim.simulator import main_simulate
from sigma_exporter.source.errorcodes import BY_CODE

T = TypeVar("T")
EPOCH = 1_717_000_000.0  # fixed, so every rendering below is reproducible
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LOCAL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
LIFE = re.compile(r"^(?:(\d+)D)?(?:(\d+)h)?(?:(\d+)m)?(\d+)s$")
CODE = re.compile(r"\(code: ([A-Z_]+)\)$")
REPO = Path(__file__).resolve().parents[3]


def run(coro: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await coro

    return asyncio.run(wrap())


def life_seconds(text: str) -> int:
    m = LIFE.match(text)
    assert m, text
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def walk(doc: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield k, v
            yield from walk(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from walk(v)


def server(index: int = 0, **kw: Any) -> SimServer:
    kw.setdefault("epoch", EPOCH)
    return SimServer(index=index, **kw)


# ---------------------------------------------------------------------------
# Rendering


def test_render_is_deterministic_and_moves_with_time() -> None:
    a, b = server(gpus=2, seed=7), server(gpus=2, seed=7)
    t = EPOCH + 1234.5
    assert render_dump(a, t) == render_dump(b, t)
    assert render_progress(a, t) == render_progress(b, t)
    later = render_dump(a, t + 600)
    assert later["System"]["gpu"] != render_dump(a, t)["System"]["gpu"]
    assert render_dump(server(gpus=2, seed=8), t)["System"] != render_dump(a, t)["System"]


def test_dump_shape_and_formats() -> None:
    s = server(gpus=1)
    t = EPOCH + 99.25
    d = render_dump(s, t)
    for key in (
        "name",
        "version",
        "branch",
        "speed",
        "build",
        "start",
        "local",
        "timezone",
        "hostname",
        "port",
        "queue",
        "total",
        "task",
        "supported",
        "System",
        "APPS",
    ):
        assert key in d
    assert d["name"] == "sigma-server-01"
    assert d["local"] == "2024-05-29T16:28:19.250Z"
    assert d["timezone"] == "Asia/Ho_Chi_Minh"
    for key in ("build", "start", "local"):
        assert ISO_MS_Z.match(d[key])
    assert ISO_MS_Z.match(d["System"]["updateTime"])
    assert d["task"]["started"] == s.jobs
    assert {a["name"] for a in d["APPS"]} >= {"portal-local", "nginx", "origin", "victoria-metrics"}
    for app in d["APPS"]:
        assert LIFE.match(app["Life"]) and app["state"] == "running"
        assert re.match(r"^\d+MB$", app["process"]["ram"])
    proc = d["System"]["process"]
    assert re.match(r"^\d+\.\d%$", proc["CPU"]) and re.match(r"^\d+MB$", proc["ram"])
    assert [tz for tz in (server(i).timezone for i in range(3))] == [
        "Asia/Ho_Chi_Minh",
        "UTC",
        "Europe/Berlin",
    ]


def test_values_stay_in_range() -> None:
    for gpus in (0, 1, 3, 8):
        for idx in (0, 1, 5):
            s = server(idx, gpus=gpus, jobs=8, seed=idx + gpus)
            for k in range(60):
                d = render_dump(s, EPOCH + k * 97.3)
                sysd = d["System"]
                assert 0 <= sysd["cpu"] <= 100
                assert 0 <= sysd["ramUsed"] <= sysd["ramTotal"]
                assert 0 <= sysd["swapUsed"] <= max(sysd["swapTotal"], 0)
                assert len(sysd["gpu"]) == gpus
                for g in sysd["gpu"]:
                    for f in ("gpu", "soft", "enc", "dec", "percent"):
                        assert 0 <= g[f] <= 100, (f, g)
                    assert 0 <= g["used"] <= g["total"]
                    assert 25 <= g["temp"] <= 90
                for app in d["APPS"]:
                    cpu = app["process"].get("cpu", app["process"].get("CPU"))
                    assert 0 <= float(cpu.rstrip("%")) <= 100


def test_temperature_follows_load() -> None:
    s = server(gpus=1)
    pts = [render_dump(s, EPOCH + k * 61.0)["System"]["gpu"][0] for k in range(200)]
    lo = min(pts, key=lambda g: g["enc"])
    hi = max(pts, key=lambda g: g["enc"])
    assert hi["enc"] - lo["enc"] > 20
    assert hi["temp"] > lo["temp"]


def test_mixed_key_case_and_string_numbers() -> None:
    keys: set[str] = set()
    strings_as_numbers = []
    for idx in (0, 1):
        s = server(idx, gpus=2, jobs=4)
        for k, v in walk(render_dump(s, EPOCH + 5)):
            keys.add(k)
            if k in ("thread", "count") and isinstance(v, str):
                strings_as_numbers.append(v)
        for k, _ in walk(render_progress(s, EPOCH + 5)):
            keys.add(k)
    assert {
        "CPU",
        "cpu",
        "Child",
        "child",
        "Encoder",
        "decoder",
        "System",
        "Storage",
        "APPS",
        "ID",
        "id",
        "URL",
        "url",
    } <= keys
    assert strings_as_numbers and all(x.isdigit() for x in strings_as_numbers)


def test_gpu_less_server_and_make_servers_rule() -> None:
    d = render_dump(server(gpus=0), EPOCH + 1)
    assert d["System"]["gpu"] == [] and d["supported"] == []
    sims = make_servers(6, gpus=4, epoch=EPOCH)
    assert [s.gpus for s in sims] == [4, 4, 0, 4, 4, 0]
    assert [s.gpus for s in make_servers(2, gpus=4, epoch=EPOCH)] == [4, 4]
    with pytest.raises(ValueError):
        SimServer(index=0, gpus=9)


def test_supported_lists_each_model_once() -> None:
    d = render_dump(server(1, gpus=4), EPOCH)
    names = [g["name"] for g in d["System"]["gpu"]]
    assert sorted({*names}) == sorted(e["name"] for e in d["supported"])
    for e in d["supported"]:
        assert all("@" in c for c in e["Encoder"] + e["decoder"])


def test_gpu_override_hook() -> None:
    s = server(gpus=2, gpu_override=lambda i, now: {"used": 900, "enc": 55} if i == 1 else None)
    gpus = render_dump(s, EPOCH + 3)["System"]["gpu"]
    assert gpus[1]["used"] == 900 and gpus[1]["enc"] == 55
    assert gpus[0]["used"] != 900 or gpus[0]["enc"] != 55


def test_progress_has_documented_fields() -> None:
    s = server(jobs=5)
    p = render_progress(s, EPOCH + 4000)
    assert p["ec"] == 0 and p["total"] == 5 and "Tel" in p
    assert list(p["result"]) == job_names(s) == ["VTV1", "VTV3", "HTV7", "SPORT-HD", "VTV2"]
    for job in p["result"].values():
        for key in (
            "speed",
            "created",
            "startup",
            "state",
            "Life",
            "PTS",
            "error",
            "input",
            "profile",
            "target",
            "weight",
        ):
            assert key in job
        assert LOCAL.match(job["created"]) and LOCAL.match(job["startup"])
        assert job["state"] == "started" and LIFE.match(job["Life"]) and LIFE.match(job["PTS"])
        assert len(job["error"]) <= 5
        for inp in job["input"]:
            assert ("URL" in inp) != ("url" in inp) and isinstance(inp["bitrate"], int)
            assert all(isinstance(x, str) for x in inp["profile"])
        for prof in job["profile"]:
            assert ("ID" in prof) != ("id" in prof) and prof["bitrate"] > 0
        for tgt in job["target"]:
            assert {"format", "url", "select", "bitrate"} <= tgt.keys()
    urls = [i.get("URL", i.get("url")) for j in p["result"].values() for i in j["input"]]
    assert any(re.match(r"^\w+://[^/@]+:[^/@]+@", u) for u in urls)  # credentials in a URL
    one = render_progress(s, EPOCH + 4000, "HTV7")
    assert list(one["result"]) == ["HTV7"] and one["total"] == 1
    assert render_progress(s, EPOCH + 4000, "NOPE")["ec"] == 1
    assert render_progress(server(jobs=0), EPOCH)["result"] == {}


def test_startup_is_utc_or_server_local_time() -> None:
    t = EPOCH + 10_000
    utc = render_progress(server(1, jobs=1), t)["result"]["VTV1"]["startup"]
    assert render_progress(server(0, jobs=1), t)["result"]["VTV1"]["startup"] == utc
    hcm = render_progress(server(0, jobs=1, wall_clock_zone="server"), t)["result"]["VTV1"]
    # Same epoch and period: both restarted at the same instant, 7 h apart on the wall.
    assert int(hcm["startup"][11:13]) == (int(utc[11:13]) + 7) % 24


def test_job_and_app_restart() -> None:
    s = server(jobs=3, job_restart_period=600, app_restart_period=900)
    before = render_progress(s, EPOCH + 1199)["result"]
    after = render_progress(s, EPOCH + 1201)["result"]
    assert life_seconds(before["VTV1"]["Life"]) > 500
    assert life_seconds(after["VTV1"]["Life"]) == 1
    assert after["VTV1"]["startup"] != before["VTV1"]["startup"]
    assert life_seconds(after["VTV3"]["Life"]) == life_seconds(before["VTV3"]["Life"]) + 2

    def nginx(t: float) -> dict[str, Any]:
        return next(a for a in render_dump(s, t)["APPS"] if a["name"] == "nginx")

    assert life_seconds(nginx(EPOCH + 1799)["Life"]) > 800
    assert life_seconds(nginx(EPOCH + 1800)["Life"]) == 0
    assert nginx(EPOCH + 1800)["process"]["pid"] != nginx(EPOCH + 1799)["process"]["pid"]


def test_speed_dips_and_override() -> None:
    s = server(jobs=4)
    speeds = [job_speed(s, j, EPOCH + k * 60) for j in job_names(s) for k in range(240)]
    assert all(0 < v <= 1.02 for v in speeds)
    assert any(v < 0.95 for v in speeds) and sum(v >= 1 for v in speeds) > len(speeds) / 2
    s.speed_overrides["VTV3"] = 0.5
    assert render_progress(s, EPOCH + 77)["result"]["VTV3"]["speed"] == 0.5


def test_emitted_errors_match_visible_lines() -> None:
    s = server(jobs=3)
    t0, t1 = EPOCH - 100, EPOCH + 3600
    for job in job_names(s):
        seen: set[str] = set()
        prev = emitted_errors(s, job, until=t0)
        assert prev == dict.fromkeys(ERROR_CODES, 0)  # nothing before epoch
        for t in range(int(t0), int(t1) + 1):
            lines = error_lines(s, job, t)
            assert len(lines) <= 5 and lines == sorted(lines)
            seen.update(lines)
            if t % 300 == 0:
                now = emitted_errors(s, job, until=t)
                assert all(now[c] >= prev[c] for c in now)  # monotonic
                prev = now
        by_code = dict.fromkeys(ERROR_CODES, 0)
        for line in seen:
            m = CODE.search(line)
            assert m, line  # every line carries a code, as Sigma documents
            by_code[m.group(1)] += 1
        assert emitted_errors(s, job, until=t1) == by_code
        assert sum(by_code.values()) > 10
        # A window: lines whose second lies in [since, until].
        part = emitted_errors(s, job, since=EPOCH + 600, until=EPOCH + 1200)
        whole = emitted_errors(s, job, until=EPOCH + 1200)
        assert sum(part.values()) < sum(whole.values())


def test_error_lines_are_documented_ones() -> None:
    """The documented form, `[05-26 02:32:55] Input timeout (code: INPUT_TIMEOUT)`,
    with codes of Sigma's list only (DECODE_ERROR and OUTPUT_FAIL are not)."""
    s = server(jobs=2)
    lines = [x for k in range(0, 3600, 60) for x in error_lines(s, "VTV1", EPOCH + k)]
    assert lines
    codes = set()
    for line in lines:
        m = re.fullmatch(r"\[\d\d-\d\d \d\d:\d\d:\d\d\] ([A-Z].*) \(code: ([A-Z_]+)\)", line)
        assert m, line
        assert m.group(2) in BY_CODE, line
        assert m.group(1) == error_message(m.group(2))
        codes.add(m.group(2))
    assert error_message("INPUT_TIMEOUT") == "Input timeout"  # Sigma's own example
    classes = {c for code in codes for c in BY_CODE[code].classes}
    assert {"input", "output"} <= classes, codes  # the feed and the CDN both fail now and then


def test_a_restarting_job_passes_through_starting_and_preparing() -> None:
    s = server(jobs=2)  # VTV1 restarts every job_restart_period
    restart = EPOCH + s.job_restart_period

    def at(dt: float) -> dict[str, Any]:
        job: dict[str, Any] = render_progress(s, restart + dt)["result"]["VTV1"]
        return job

    assert at(-1)["state"] == "started" and at(-1)["speed"] > 0
    assert [at(dt)["state"] for dt in (0, 3, 4, 11, 12)] == [
        "starting", "starting", "preparing", "preparing", "started"]
    assert at(5)["speed"] == 0 and at(5)["input"][0]["bitrate"] == 0
    assert all(t["bitrate"] == 0 for t in at(5)["target"])
    assert render_progress(s, restart + 5)["result"]["VTV3"]["state"] == "started"
    assert render_dump(s, restart + 5)["task"] == {"preparing": 1, "started": 1}


def test_a_job_held_in_error_logs_its_code() -> None:
    s = server(jobs=2)
    t = EPOCH + 100.0
    set_job_state(s, "VTV3", "error", t, code="OUTPUT_TIMEOUT")
    job = render_progress(s, t + 35)["result"]["VTV3"]
    assert job["state"] == "error" and job["speed"] == 0
    assert [line.split("] ", 1)[1] for line in job["error"]][-4:] == [
        "An output timed out (depends on that output) (code: OUTPUT_TIMEOUT)"] * 4
    assert emitted_errors(s, "VTV3", since=t, until=t + 35)["OUTPUT_TIMEOUT"] == 4
    set_job_state(s, "VTV3", "error", t + 40, code="INVALID_ARGUMENT")  # config class
    set_job_state(s, "VTV3", None, t + 60)  # released: it restarts
    held = emitted_errors(s, "VTV3", since=t, until=t + 59)  # in error all along: its codes only
    assert held == {**dict.fromkeys(ERROR_CODES, 0), "OUTPUT_TIMEOUT": 4,
                    "INVALID_ARGUMENT": 2}
    states = [render_progress(s, t + 60 + dt)["result"]["VTV3"]["state"] for dt in (0, 5, 20)]
    assert states == ["starting", "preparing", "started"]
    assert life_seconds(render_progress(s, t + 80)["result"]["VTV3"]["Life"]) == 20
    with pytest.raises(ValueError, match="Sigma documents"):
        set_job_state(s, "VTV3", "stopped", t)
    with pytest.raises(ValueError, match="not one Sigma documents"):
        set_job_state(s, "VTV3", "error", t, code="DECODE_ERROR")
    with pytest.raises(KeyError):
        set_job_state(s, "NOPE", "Stop", t)
    set_job_state(s, "VTV3", "stop", t + 700)  # any case; reported as Sigma spells it
    assert render_progress(s, t + 700)["result"]["VTV3"]["state"] == "Stop"


# ---------------------------------------------------------------------------
# HTTP


@asynccontextmanager
async def simulated(
    n: int = 1,
    *,
    control: bool = False,
    static: bool = False,
    clock: Callable[[], float] = time.time,
    **kw: Any,
) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    sims = make_servers(n, **kw)
    sim = Simulator(
        sims,
        listen_host="127.0.0.1",
        control_port=0 if control else None,
        static=static,
        clock=clock,
    )
    await sim.start()
    try:
        async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
            yield sim, client
    finally:
        await sim.stop()


DUMP = {"type": "dump"}
PROGRESS = {"type": "progress", "name": "*"}


def test_http_dump_and_progress() -> None:
    async def go() -> None:
        async with simulated(3, gpus=2) as (sim, c):
            assert len({sim.port(i) for i in range(3)}) == 3
            r = await c.get(sim.url(0))
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/json")
            d = r.json()
            assert d["name"] == "sigma-server-01" and d["port"] == sim.port(0)
            assert len(d["System"]["gpu"]) == 2
            d3 = (await c.post(sim.url(2), json=DUMP)).json()
            assert d3["name"] == "sigma-server-03" and d3["System"]["gpu"] == []
            p = (await c.post(sim.url(1), json=PROGRESS)).json()
            assert p["ec"] == 0 and list(p["result"]) == ["VTV1", "VTV3", "HTV7", "SPORT-HD"]
            one = (await c.post(sim.url(1), json={"type": "progress", "name": "HTV7"})).json()
            assert list(one["result"]) == ["HTV7"]
            bad = await c.post(sim.url(0), json={"type": "bogus"})
            assert bad.headers["content-type"].startswith("application/json")
            assert bad.json()["ec"] == 1
            assert (await c.post(sim.url(0), content=b"{nope")).json()["ec"] == 1

    run(go())


def test_http_static_serves_same_bytes() -> None:
    async def go() -> None:
        async with simulated(1, static=True) as (sim, c):
            a = (await c.get(sim.url(0))).content
            b = (await c.post(sim.url(0), json=DUMP)).content
            assert a == b
            p1 = (await c.post(sim.url(0), json=PROGRESS)).content
            assert p1 == (await c.post(sim.url(0), json=PROGRESS)).content

    run(go())


async def _expect_timeout(call: Callable[[], Awaitable[Any]], deadline: float) -> None:
    with pytest.raises((httpx.TimeoutException, TimeoutError)):
        await asyncio.wait_for(call(), deadline)


def test_fault_refuse_and_reopen() -> None:
    async def go() -> None:
        async with simulated(1, fault="refuse") as (sim, c):
            with pytest.raises(httpx.ConnectError):
                await c.get(sim.url(0))
            await sim.set_fault(0, None)
            assert (await c.get(sim.url(0))).status_code == 200
            await sim.set_fault(0, "refuse")  # also drops the open keep-alive connection
            with pytest.raises(httpx.TransportError):
                await c.get(sim.url(0))

    run(go())


def test_fault_slow_trips_read_timeout() -> None:
    async def go() -> None:
        async with simulated(1, fault="slow") as (sim, c):
            with pytest.raises(httpx.ReadTimeout):
                await c.get(sim.url(0), timeout=httpx.Timeout(5.0, read=1.0))

    run(go())


def test_fault_trickle_needs_a_total_deadline() -> None:
    async def go() -> None:
        async with simulated(1, fault="trickle") as (sim, c):
            # Bytes arrive every 0.5 s, so a 1 s read timeout alone never trips;
            # a 1 s deadline on the whole request does.
            await _expect_timeout(
                lambda: c.get(sim.url(0), timeout=httpx.Timeout(5.0, read=1.0)), 1.2
            )

    run(go())


def test_fault_http_502_html() -> None:
    async def go() -> None:
        async with simulated(1, fault="http-502-html") as (sim, c):
            r = await c.post(sim.url(0), json=DUMP)
            assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
            assert b"502 Bad Gateway" in r.content

    run(go())


def test_fault_truncated() -> None:
    async def go() -> None:
        async with simulated(1, fault="truncated") as (sim, c):
            r = await c.get(sim.url(0))
            assert r.status_code == 200
            assert "content-length" not in r.headers and "transfer-encoding" not in r.headers
            assert r.content.startswith(b'{"name":')
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(r.content)

    run(go())


def test_fault_invalid_json_and_non_object() -> None:
    async def go() -> None:
        async with simulated(2) as (sim, c):
            await sim.set_fault(0, "invalid-json")
            await sim.set_fault(1, "non-object")
            r = await c.get(sim.url(0))
            assert r.status_code == 200
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(r.content)
            r = await c.post(sim.url(1), json=PROGRESS)
            assert r.status_code == 200 and isinstance(orjson.loads(r.content), list)

    run(go())


def test_fault_huge_is_chunked_20_mib() -> None:
    async def go() -> None:
        async with simulated(1, fault="huge") as (sim, c):
            async with c.stream("GET", sim.url(0)) as r:
                assert r.status_code == 200
                assert "content-length" not in r.headers
                assert r.headers["transfer-encoding"] == "chunked"
                size = 0
                async for chunk in r.aiter_raw():
                    size += len(chunk)
            assert size == HUGE_BYTES == 20 * 1024 * 1024

    run(go())


def test_fault_flap_alternates() -> None:
    async def go() -> None:
        async with simulated(1, fault="flap") as (sim, c):
            codes = [(await c.get(sim.url(0))).status_code for _ in range(4)]
            assert codes == [200, 502, 200, 502]

    run(go())


def test_fault_progress_invalid() -> None:
    async def go() -> None:
        async with simulated(1, fault="progress-invalid") as (sim, c):
            assert (await c.post(sim.url(0), json=DUMP)).json()["name"] == "sigma-server-01"
            r = await c.post(sim.url(0), json=PROGRESS)
            assert r.status_code == 200 and r.text == PROGRESS_AS_DOCUMENTED
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(r.content)
            # Only the missing comma makes it invalid.
            fixed = PROGRESS_AS_DOCUMENTED.replace("128760\n        }", "128760\n        },")
            assert orjson.loads(fixed)["result"]["$job_name"]["profile"][1]["id"] == "480"

    run(go())


def test_fault_invalid_utf8() -> None:
    async def go() -> None:
        async with simulated(1, fault="invalid-utf8") as (sim, c):
            r = await c.get(sim.url(0))
            assert r.status_code == 200
            with pytest.raises(UnicodeDecodeError):
                r.content.decode("utf-8")
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(r.content)

    run(go())


def test_fault_redirect() -> None:
    async def go() -> None:
        async with simulated(1, fault="redirect") as (sim, c):
            r = await c.get(sim.url(0))
            assert r.status_code == 302 and r.headers["location"] == REDIRECT_TARGET

    run(go())


def test_control_api() -> None:
    async def go() -> None:
        # A pinned clock an hour after the epoch: answers are exactly predictable.
        now = EPOCH + 3600.5
        async with simulated(2, control=True, epoch=EPOCH, clock=lambda: now) as (sim, c):
            base = sim.control_url
            assert base is not None
            listing = (await c.get(f"{base}/servers")).json()
            assert [(s["index"], s["port"], s["fault"]) for s in listing] == [
                (0, sim.port(0), "none"),
                (1, sim.port(1), "none"),
            ]

            r = await c.post(f"{base}/servers/1/jobs/VTV3", params={"speed": "0.5"})
            assert r.status_code == 200
            p = (await c.post(sim.url(1), json=PROGRESS)).json()
            assert p["result"]["VTV3"]["speed"] == 0.5
            await c.post(f"{base}/servers/1/jobs/VTV3", params={"speed": "clear"})
            assert "VTV3" not in sim.servers[1].speed_overrides
            assert (await c.post(f"{base}/servers/1/jobs/NOPE?speed=1")).status_code == 404
            assert (await c.post(f"{base}/servers/1/jobs/VTV3?speed=x")).status_code == 400

            r = await c.post(f"{base}/servers/1/jobs/VTV3", params={"state": "Stop"})
            assert r.status_code == 200
            p = (await c.post(sim.url(1), json=PROGRESS)).json()
            assert p["result"]["VTV3"]["state"] == "Stop"
            r = await c.post(f"{base}/servers/1/jobs/VTV3",
                             params={"state": "error", "code": "CONNECTION_REFUSED"})
            assert r.status_code == 200
            now += 10.0
            p = (await c.post(sim.url(1), json=PROGRESS)).json()
            assert p["result"]["VTV3"]["state"] == "error"
            assert p["result"]["VTV3"]["error"][-1].endswith("(code: CONNECTION_REFUSED)")
            await c.post(f"{base}/servers/1/jobs/VTV3", params={"state": "clear"})
            p = (await c.post(sim.url(1), json=PROGRESS)).json()
            assert p["result"]["VTV3"]["state"] == "starting"  # released: it restarts
            now += 20.0
            p = (await c.post(sim.url(1), json=PROGRESS)).json()
            assert p["result"]["VTV3"]["state"] == "started"
            now -= 30.0
            assert (await c.post(f"{base}/servers/1/jobs/NOPE?state=Stop")).status_code == 404
            for bad in ("state=stopped", "state=error&code=OUTPUT_FAIL", "state=Stop&code=X"):
                r = await c.post(f"{base}/servers/1/jobs/VTV3?{bad}")
                assert r.status_code == 400, bad

            # Freezing a job's media time: it still claims to run at its speed.
            await c.post(f"{base}/servers/1/jobs/HTV7", params={"speed": "1"})
            r = await c.post(f"{base}/servers/1/jobs/HTV7", params={"freeze": "1"})
            assert r.status_code == 200 and r.json()["frozen"] is True
            frozen = (await c.post(sim.url(1), json=PROGRESS)).json()["result"]["HTV7"]
            assert frozen["speed"] == 1 and frozen["state"] == "started"
            now += 30.0
            later = (await c.post(sim.url(1), json=PROGRESS)).json()["result"]["HTV7"]
            assert later["PTS"] == frozen["PTS"] and later["Life"] != frozen["Life"]
            assert sim.servers[1].speed_overrides["HTV7"] == 1  # freezing kept the speed
            await c.post(f"{base}/servers/1/jobs/HTV7", params={"freeze": "0"})
            thawed = (await c.post(sim.url(1), json=PROGRESS)).json()["result"]["HTV7"]
            assert thawed["PTS"] != frozen["PTS"]
            assert (await c.post(f"{base}/servers/1/jobs/HTV7?freeze=2")).status_code == 400
            assert (await c.post(f"{base}/servers/1/jobs/NOPE?freeze=1")).status_code == 404
            now -= 30.0

            # Holding the queue: tests that replay rules must not meet the random one.
            for held in (3, 0):
                r = await c.post(f"{base}/servers/1/queue", params={"jobs": str(held)})
                assert r.status_code == 200 and r.json()["queued"] == held
                dump = (await c.post(sim.url(1), json=DUMP)).json()
                assert dump["queue"] == held and dump["task"].get("pending", 0) == held
            await c.post(f"{base}/servers/1/queue", params={"jobs": "clear"})
            assert sim.servers[1].queue_override is None
            assert (await c.post(f"{base}/servers/1/queue?jobs=-1")).status_code == 400
            assert (await c.post(f"{base}/servers/1/queue?jobs=x")).status_code == 400

            assert (await c.post(f"{base}/servers/0/fault?mode=http-502-html")).status_code == 200
            assert (await c.get(sim.url(0))).status_code == 502
            await c.post(f"{base}/servers/0/fault", params={"mode": "refuse"})
            with pytest.raises(httpx.TransportError):
                await c.get(sim.url(0))
            listing = (await c.get(f"{base}/servers")).json()
            assert listing[0]["fault"] == "refuse"
            await c.post(f"{base}/servers/0/fault", params={"mode": "none"})
            assert (await c.get(sim.url(0))).status_code == 200
            assert (await c.post(f"{base}/servers/0/fault?mode=melt")).status_code == 400
            assert (await c.post(f"{base}/servers/9/fault?mode=none")).status_code == 404

            # The answer is computed
            # between our two local computations, so it lies between them.
            srv = sim.servers[0]
            got = (await c.get(f"{base}/servers/0/emitted")).json()
            assert got == {j: emitted_errors(srv, j, until=now) for j in job_names(srv)}
            assert all(sum(v.values()) > 0 for v in got.values())
            p = (await c.post(sim.url(0), json=PROGRESS)).json()
            assert p == render_progress(srv, now)

    run(go())


def test_main_simulate_cli_and_signals() -> None:
    assert main_simulate(["--help"]) == 0
    assert main_simulate(["--servers", "0"]) == 2  # --listen has a default; 0 servers do not
    assert main_simulate(["--listen", "127.0.0.1:1", "--fault", "melt"]) == 2
    code = (
        "import sys; from sigma_exporter.sim.simulator import main_simulate; "
        "sys.exit(main_simulate(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = ["--listen", "127.0.0.1:0", "--servers", "3", "--jobs", "2", "--control", "127.0.0.1:0"]
    with subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline().strip() for _ in range(4)]
            urls = []
            for i, line in enumerate(lines[:3]):
                m = re.match(
                    r"^sigma simulator server (\S+) listening on (http://127\.0\.0\.1:\d+)$", line
                )
                assert m, lines
                assert m.group(1) == f"sigma-server-{i + 1:02d}"
                urls.append(m.group(2))
            m = re.match(r"^sigma simulator control API on (http://127\.0\.0\.1:\d+)$", lines[3])
            assert m, lines
            with httpx.Client(timeout=5.0) as c:
                assert c.get(urls[2]).json()["System"]["gpu"] == []  # index 2: no GPU
                assert len(c.get(urls[0]).json()["System"]["gpu"]) == 1
                assert len(c.get(f"{m.group(1)}/servers").json()) == 3
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
            with httpx.Client(timeout=2.0) as c, pytest.raises(httpx.ConnectError):
                c.get(urls[0])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
