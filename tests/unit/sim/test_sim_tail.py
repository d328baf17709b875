"""The simulator's dump ends like the complete documented one, and its control
API lapses a licence and drops the control-plane link.

Rendering is checked as a pure function of (server, time); the control API on
a real simulator on 127.0.0.1 ephemeral ports, always stopped.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from conftest import load_fixture

from sigma_exporter.sim.dump import CONTROL_PLANE_DELAY, license_key, render_dump
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.source.parse import parse_dump
from sigma_exporter.source.units import iso_timestamp

EPOCH = 1_717_000_000.0
KEY_SHAPE = re.compile(r"^[A-Z0-9]{5}(?:-[A-Z0-9]{5}){4}$")


def test_dump_has_the_documented_keys_in_order() -> None:
    documented = load_fixture("dump-sample-complete.json")
    server = make_servers(1, epoch=EPOCH)[0]
    dump = render_dump(server, EPOCH + 60)
    assert list(dump) == list(documented)
    assert list(dump["nats"]) == list(documented["nats"])
    assert (dump["licenseStatus"], dump["ec"], dump["result"], dump["dt"]) == (
        "VALID", 0, {}, 0)
    assert dump["now"] == dump["local"]
    assert dump["nats"]["connected"] == 1 and dump["nats"]["hook"] == 5000
    startup = iso_timestamp(dump["nats"]["startup"])
    start = iso_timestamp(dump["start"])
    assert startup is not None and start is not None
    assert abs(startup - start - CONTROL_PLANE_DELAY) < 0.002
    assert server.name in dump["nats"]["ID"]
    assert parse_dump(dump).errors == ()


def test_licence_key_is_fake_documented_shaped_and_per_server() -> None:
    servers = make_servers(3, epoch=EPOCH)
    keys = [license_key(s) for s in servers]
    assert all(KEY_SHAPE.match(k) for k in keys)
    assert len(set(keys)) == 3
    assert keys[0] == license_key(make_servers(1, epoch=EPOCH + 999)[0])  # stable per seed
    assert keys[0] != load_fixture("dump-sample-complete.json")["nats"]["license"]
    assert render_dump(servers[1], EPOCH)["nats"]["license"] == keys[1]


def test_lapsed_licence_and_dropped_link_render() -> None:
    server = make_servers(1, epoch=EPOCH)[0]
    server.license_status = "EXPIRED"
    server.control_plane_down_since = EPOCH + 100
    before = render_dump(server, EPOCH + 99)
    after = render_dump(server, EPOCH + 101)
    assert before["licenseStatus"] == after["licenseStatus"] == "EXPIRED"
    assert (before["nats"]["connected"], after["nats"]["connected"]) == (1, 0)
    assert after["nats"]["startup"] == before["nats"]["startup"]  # the last time it came up
    parsed = parse_dump(after).value
    assert parsed.license_status == "EXPIRED" and parsed.control_plane_connected is False


def test_control_api_lapses_the_licence_and_drops_the_link() -> None:
    now = EPOCH + 3600.0

    async def go() -> None:
        servers = make_servers(2, epoch=EPOCH)
        sim = Simulator(servers, listen_host="127.0.0.1", control_port=0, clock=lambda: now)
        await sim.start()
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as c:
                await _exercise(sim, c)
        finally:
            await sim.stop()

    async def dump(sim: Simulator, c: httpx.AsyncClient, i: int) -> dict[str, Any]:
        answer: dict[str, Any] = (await c.post(sim.url(i), json={"type": "dump"})).json()
        return answer

    async def _exercise(sim: Simulator, c: httpx.AsyncClient) -> None:
        nonlocal now
        base = sim.control_url
        r = await c.post(f"{base}/servers/1/license", params={"status": "EXPIRED"})
        assert r.status_code == 200 and r.json()["license_status"] == "EXPIRED"
        assert (await dump(sim, c, 1))["licenseStatus"] == "EXPIRED"
        assert (await dump(sim, c, 0))["licenseStatus"] == "VALID"  # only that server
        await c.post(f"{base}/servers/1/license", params={"status": "clear"})
        assert (await dump(sim, c, 1))["licenseStatus"] == "VALID"
        for bad in ("", "EXPIRED SOON", "x" * 65, "é"):
            r = await c.post(f"{base}/servers/1/license", params={"status": bad})
            assert r.status_code == 400, bad
        assert (await c.post(f"{base}/servers/7/license?status=EXPIRED")).status_code == 404

        first = (await dump(sim, c, 0))["nats"]
        r = await c.post(f"{base}/servers/0/control-plane", params={"connected": "0"})
        assert r.status_code == 200 and r.json()["connected"] == 0
        now += 60.0
        down = (await dump(sim, c, 0))["nats"]
        assert down["connected"] == 0 and down["startup"] == first["startup"]
        assert (await dump(sim, c, 1))["nats"]["connected"] == 1
        await c.post(f"{base}/servers/0/control-plane", params={"connected": "1"})
        back = (await dump(sim, c, 0))["nats"]
        assert back["connected"] == 1
        assert iso_timestamp(back["startup"]) == now  # re-established: a new startup
        for bad in ("", "2", "yes"):
            r = await c.post(f"{base}/servers/0/control-plane", params={"connected": bad})
            assert r.status_code == 400, bad

    asyncio.run(go())


def test_static_simulator_re_renders_after_a_control_call() -> None:
    async def go() -> None:
        sim = Simulator(make_servers(1, epoch=EPOCH), listen_host="127.0.0.1", static=True,
                        clock=lambda: EPOCH + 10)
        await sim.start()
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as c:
                assert (await c.get(sim.url(0))).json()["licenseStatus"] == "VALID"
                sim.set_license(0, "EXPIRED")
                sim.set_control_plane(0, False)
                dump = (await c.get(sim.url(0))).json()
                assert dump["licenseStatus"] == "EXPIRED" and dump["nats"]["connected"] == 0
        finally:
            await sim.stop()

    asyncio.run(go())
