"""`Simulator`: simulated servers served over HTTP, with a control API.

One aiohttp listener per server on consecutive ports (or ephemeral ones in
tests), answering Sigma's `dump` and `progress` requests with what `dump`
and `progress` render, through the server's fault mode (`faults`). The
optional control API changes faults, job speeds, job states, the queue,
frozen media time (PTS), the licence's state and the control-plane link at
run time, and says how many error lines each job has emitted so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sigma_exporter.sim.dump import render_dump
from sigma_exporter.sim.faults import FAULT_MODES, answer_with_fault, json_ok
from sigma_exporter.sim.hls import OUTPUT_FAULTS, HlsWriter
from sigma_exporter.sim.model import SimServer, job_names
from sigma_exporter.sim.progress import emitted_errors, render_progress, set_job_state


@dataclass
class _Slot:
    """Run-time state of one served server."""

    server: SimServer
    host: str
    port: int
    runner: web.ServerRunner | None = None
    web_server: web.Server | None = None
    site: web.SockSite | None = None
    # Requests of each kind ("dump", "progress") since the fault was set: fault
    # `flap` alternates per kind.
    by_kind: dict[str, int] = field(default_factory=dict)
    cache: dict[str, bytes] = field(default_factory=dict)


# How often the simulated jobs' HLS is advanced (their segments are 2 s long).
OUTPUT_TICK_S = 0.5


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Reopening after fault `refuse` must get the same port back at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _raise_fd_limit(needed: int) -> None:
    """One listener per server plus a connection each: 1,000 servers pass the
    common soft limit of 1024 open files, so raise it towards the hard limit."""
    try:
        import resource  # POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass  # best effort; binding will say if it is not enough


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


class Simulator:
    """Serves SimServers over HTTP, one listener per server, plus an optional
    control API. Use `await start()` / `await stop()` (or `async with`)."""

    def __init__(
        self,
        servers: list[SimServer],
        *,
        listen_host: str = "127.0.0.1",
        first_port: int = 0,
        control_port: int | None = None,
        control_host: str | None = None,
        static: bool = False,
        clock: Callable[[], float] = time.time,
        outputs_dir: str | None = None,
        origin_port: int | None = None,
    ) -> None:
        """first_port 0 gives every server its own ephemeral port (for tests);
        otherwise server i listens on first_port + i. control_port 0 picks a
        free port for the control API; None runs none. `clock` is the time
        answers are rendered at (tests can pin it to compare exactly).
        `outputs_dir`: write the jobs' HLS there (sim/hls.py), and with
        `origin_port` (0: a free one) serve that folder over HTTP as Sigma's
        `origin` app does."""
        self.servers = servers
        self.listen_host = listen_host
        self.first_port = first_port
        self.static = static
        self.clock = clock
        self._control_port = control_port
        self._control_host = control_host or listen_host
        self._control_runner: web.AppRunner | None = None
        self.control_port: int | None = None
        self._slots: list[_Slot] = []
        self.hls = HlsWriter(outputs_dir, servers) if outputs_dir is not None else None
        self._origin_port = origin_port
        self._origin_runner: web.AppRunner | None = None
        self.origin_port: int | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- public helpers -----------------------------------------------------

    def port(self, index: int) -> int:
        return self._slots[index].port

    def url(self, index: int) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self._slots[index].port}/"

    @property
    def origin_url(self) -> str | None:
        """The HTTP origin serving the outputs folder, or None."""
        if self.origin_port is None:
            return None
        h = self.listen_host
        return f"http://{f'[{h}]' if ':' in h else h}:{self.origin_port}/"

    def set_job_output(self, index: int, job: str, fault: str | None) -> None:
        """Make a job's HLS output misbehave (sim/hls.py OUTPUT_FAULTS); None: heal it."""
        if self.hls is None:
            raise ValueError("the simulator writes no outputs (no outputs folder)")
        self.hls.set_fault(index, job, fault)

    async def _tick(self) -> None:
        hls = self.hls
        while hls is not None:
            try:
                hls.tick(self.clock())
            except OSError as exc:  # a full or vanished folder: keep serving the API
                print(f"sigma simulator: writing outputs failed: {exc}")
            await asyncio.sleep(OUTPUT_TICK_S)

    @property
    def control_url(self) -> str | None:
        if self.control_port is None:
            return None
        h = self._control_host
        return f"http://{f'[{h}]' if ':' in h else h}:{self.control_port}"

    async def set_fault(self, index: int, mode: str | None) -> None:
        """Change a server's fault; `refuse` closes its listener, leaving
        `refuse` reopens it on the same port."""
        if mode == "none":
            mode = None
        if mode is not None and mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        slot = self._slots[index]
        slot.server.fault = mode
        slot.by_kind.clear()
        if mode == "refuse":
            await self._close_site(slot)
        elif slot.site is None:
            await self._open_site(slot)

    def set_job_frozen(self, index: int, job: str, frozen: bool) -> None:
        """Freeze (or thaw) a job's media time: it keeps claiming to run at its speed."""
        srv = self._slots[index].server
        if job not in job_names(srv):
            raise KeyError(job)
        if frozen:
            srv.pts_frozen_at.setdefault(job, self.clock())
        else:
            srv.pts_frozen_at.pop(job, None)
        self._slots[index].cache.clear()

    def set_queue(self, index: int, queued: int | None) -> None:
        """Hold the number of jobs waiting to start; None: back to the random queue."""
        self._slots[index].server.queue_override = queued
        self._slots[index].cache.clear()

    def set_job_speed(self, index: int, job: str, speed: float | None) -> None:
        srv = self._slots[index].server
        if job not in job_names(srv):
            raise KeyError(job)
        if speed is None:
            srv.speed_overrides.pop(job, None)
        else:
            srv.speed_overrides[job] = speed
        self._slots[index].cache.clear()  # static mode re-renders on next request

    def set_job_state(self, index: int, job: str, state: str | None,
                      code: str | None = None) -> None:
        """Hold `job` in one of Sigma's documented states (`Stop`: stopped; `error`
        logging `code`, a documented code); None: release it, and it restarts through
        `starting` and `preparing`. KeyError: no such job; ValueError: not documented."""
        set_job_state(self._slots[index].server, job, state, self.clock(), code)
        self._slots[index].cache.clear()

    def set_license(self, index: int, status: str | None) -> None:
        """Report the licence in `status` (e.g. "EXPIRED": it lapsed); None: VALID again."""
        self._slots[index].server.license_status = status or "VALID"
        self._slots[index].cache.clear()

    def set_control_plane(self, index: int, connected: bool) -> None:
        """Drop the server's link to the control plane, or bring it back: a link
        that comes back reports a new `startup` (when it came up)."""
        srv = self._slots[index].server
        now = self.clock()
        if not connected:
            if srv.control_plane_down_since is None:
                srv.control_plane_down_since = now
        elif srv.control_plane_down_since is not None:
            srv.control_plane_down_since = None
            srv.control_plane_up_since = now
        self._slots[index].cache.clear()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        _raise_fd_limit(3 * len(self.servers) + 256)
        try:
            for i, srv in enumerate(self.servers):
                port = self.first_port + i if self.first_port else 0
                slot = _Slot(srv, self.listen_host, port)
                self._slots.append(slot)
                # No access log: 1,000 servers under benchmark would log every poll.
                web_server = web.Server(
                    functools.partial(self._handle, slot),
                    handler_cancellation=True,
                    access_log=None,
                )
                slot.web_server = web_server
                # Short shutdown: `slow` and `trickle` handlers are cancelled, not awaited.
                slot.runner = web.ServerRunner(web_server, shutdown_timeout=0.5)
                await slot.runner.setup()
                sock = _bind(self.listen_host, port)
                slot.port = sock.getsockname()[1]
                srv.port = slot.port
                if self.static:  # render once now, so no request pays for it
                    self._payload(slot, "dump", "*")
                    self._payload(slot, "progress", "*")
                if srv.fault == "refuse":
                    sock.close()
                else:
                    await self._open_site(slot, sock)
            if self._control_port is not None:
                await self._start_control()
            if self.hls is not None:
                self.hls.tick(self.clock())
                self._ticker = asyncio.create_task(self._tick())
                if self._origin_port is not None:
                    await self._start_origin()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        runners: list[web.BaseRunner] = [s.runner for s in self._slots if s.runner is not None]
        if self._control_runner is not None:
            runners.append(self._control_runner)
        if self._origin_runner is not None:
            runners.append(self._origin_runner)
            self._origin_runner = None
        await asyncio.gather(*(r.cleanup() for r in runners), return_exceptions=True)
        for s in self._slots:
            s.runner = None
            s.site = None
        self._control_runner = None

    async def _open_site(self, slot: _Slot, sock: socket.socket | None = None) -> None:
        if slot.runner is None:  # stopped: nothing to reopen
            return
        site = web.SockSite(slot.runner, sock or _bind(slot.host, slot.port))
        await site.start()
        slot.site = site

    async def _close_site(self, slot: _Slot) -> None:
        if slot.site is not None:
            await slot.site.stop()
            slot.site = None
        # Open keep-alive connections would still answer: drop them too.
        if slot.web_server is not None:
            for conn in slot.web_server.connections:
                conn.force_close()

    # -- serving ------------------------------------------------------------

    def _payload(self, slot: _Slot, kind: str, name: str) -> bytes:
        cache_key = f"{kind}:{name}"
        if self.static and cache_key in slot.cache:
            return slot.cache[cache_key]
        now = self.clock()
        doc = (
            render_dump(slot.server, now)
            if kind == "dump"
            else render_progress(slot.server, now, name)
        )
        body = orjson.dumps(doc)
        if self.static and (kind == "dump" or doc.get("ec") == 0):
            slot.cache[cache_key] = body  # unknown job names are not kept
        return body

    async def _handle(self, slot: _Slot, request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/":
            return _json_response({"ec": 1, "msg": "not found"}, 404)
        kind, name = "dump", "*"
        if request.method == "POST":
            raw = await request.read()
            if raw.strip():
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return _json_response({"ec": 1, "msg": "invalid request body"}, 400)
                if not isinstance(doc, dict):
                    return _json_response({"ec": 1, "msg": "request must be an object"}, 400)
                kind = str(doc.get("type", ""))
                name = str(doc.get("name") or "*")
                if kind not in ("dump", "progress"):
                    return _json_response({"ec": 1, "msg": f"unknown type {kind!r}"})
        elif request.method != "GET":
            return _json_response({"ec": 1, "msg": "method not allowed"}, 405)

        fault = slot.server.fault
        slot.by_kind[kind] = slot.by_kind.get(kind, 0) + 1
        body = self._payload(slot, kind, name)
        if fault is None:
            return json_ok(body)
        return await answer_with_fault(request, fault, kind, slot.by_kind[kind], body)

    # -- control API --------------------------------------------------------

    def _slot_of(self, request: web.Request) -> _Slot:
        try:
            i = int(request.match_info["i"])
            if i < 0:
                raise IndexError(i)
            return self._slots[i]
        except (ValueError, IndexError):
            raise web.HTTPNotFound(
                text='{"error":"no such server"}', content_type="application/json"
            ) from None

    async def _c_list(self, request: web.Request) -> web.Response:
        return _json_response(
            [
                {
                    "index": s.server.index,
                    "name": s.server.name,
                    "port": s.port,
                    "fault": s.server.fault or "none",
                }
                for s in self._slots
            ]
        )

    async def _c_fault(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        mode = request.query.get("mode", "")
        if mode not in FAULT_MODES:
            return _json_response(
                {"error": f"unknown mode {mode!r}", "modes": list(FAULT_MODES)}, 400
            )
        await self.set_fault(self._slots.index(slot), mode)
        return _json_response({"index": slot.server.index, "fault": mode})

    async def _c_job(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        job = request.match_info["name"]
        if "state" in request.query:  # ?state=Stop, ?state=error&code=X, or ?state=clear
            state = request.query["state"]
            code = request.query.get("code")
            try:
                self.set_job_state(self._slots.index(slot), job,
                                   None if state in ("", "clear") else state, code)
            except KeyError:
                return _json_response({"error": f"no job {job!r}"}, 404)
            except ValueError as exc:
                return _json_response({"error": str(exc)}, 400)
            return _json_response({"index": slot.server.index, "job": job, "state": state,
                                   "code": code})
        index = self._slots.index(slot)
        if "output" in request.query:  # ?output=frozen|endlist|missing|overlong|full|clear
            fault = request.query["output"]
            if fault not in (*OUTPUT_FAULTS, "clear") or self.hls is None:
                return _json_response({"error": f"bad output {fault!r} (one of "
                                       f"{', '.join(OUTPUT_FAULTS)}, clear; needs --outputs)"},
                                      400)
            try:
                self.set_job_output(index, job, None if fault == "clear" else fault)
            except KeyError:
                return _json_response({"error": f"no job {job!r}"}, 404)
            return _json_response({"index": slot.server.index, "job": job, "output": fault})
        freeze = request.query.get("freeze")
        if freeze is not None and freeze not in ("0", "1"):
            return _json_response({"error": f"bad freeze {freeze!r} (0 or 1)"}, 400)
        if job not in job_names(slot.server):
            return _json_response({"error": f"no job {job!r}"}, 404)
        if freeze is not None:  # PTS only: speed stays as it is unless given too
            self.set_job_frozen(index, job, freeze == "1")
            if "speed" not in request.query:
                return _json_response({"index": slot.server.index, "job": job,
                                       "frozen": freeze == "1"})
        raw = request.query.get("speed", "")
        speed: float | None = None
        if raw not in ("", "clear"):
            try:
                speed = float(raw)
            except ValueError:
                return _json_response({"error": f"bad speed {raw!r}"}, 400)
            if not math.isfinite(speed) or speed < 0:
                return _json_response({"error": f"bad speed {raw!r}"}, 400)
        self.set_job_speed(index, job, speed)
        return _json_response({"index": slot.server.index, "job": job, "speed": speed})

    async def _c_queue(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        raw = request.query.get("jobs", "")  # ?jobs=N, or ?jobs=clear
        queued: int | None = None
        if raw != "clear":
            try:
                queued = int(raw)
            except ValueError:
                queued = -1
            if queued < 0:
                return _json_response({"error": f"bad jobs {raw!r} (0 or more, or clear)"}, 400)
        self.set_queue(self._slots.index(slot), queued)
        return _json_response({"index": slot.server.index, "queued": queued})

    async def _c_license(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        raw = request.query.get("status", "")  # ?status=EXPIRED, or ?status=clear
        if raw != "clear" and not (raw.isascii() and raw.replace("_", "").isalnum()
                                   and len(raw) <= 64):
            return _json_response({"error": f"bad status {raw!r} (a word, or clear)"}, 400)
        self.set_license(self._slots.index(slot), None if raw == "clear" else raw)
        return _json_response({"index": slot.server.index,
                               "license_status": slot.server.license_status})

    async def _c_control_plane(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        raw = request.query.get("connected", "")  # ?connected=0 or ?connected=1
        if raw not in ("0", "1"):
            return _json_response({"error": f"bad connected {raw!r} (0 or 1)"}, 400)
        self.set_control_plane(self._slots.index(slot), raw == "1")
        return _json_response({"index": slot.server.index, "connected": int(raw)})

    async def _c_emitted(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        now = self.clock()
        return _json_response(
            {job: emitted_errors(slot.server, job, until=now) for job in job_names(slot.server)}
        )

    async def _start_origin(self) -> None:
        """The outputs folder over HTTP, as Sigma's `origin` app serves it: files
        only (no listing, no symlinks followed), with ranged reads."""
        if self.hls is None:
            return
        app = web.Application()
        app.router.add_static("/", self.hls.base, show_index=False, follow_symlinks=False)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._origin_runner = runner
        sock = _bind(self.listen_host, self._origin_port or 0)
        self.origin_port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()

    async def _start_control(self) -> None:
        app = web.Application()
        app.router.add_get("/servers", self._c_list)
        app.router.add_post("/servers/{i}/fault", self._c_fault)
        app.router.add_post("/servers/{i}/jobs/{name}", self._c_job)
        app.router.add_post("/servers/{i}/queue", self._c_queue)
        app.router.add_post("/servers/{i}/license", self._c_license)
        app.router.add_post("/servers/{i}/control-plane", self._c_control_plane)
        app.router.add_get("/servers/{i}/emitted", self._c_emitted)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._control_runner = runner
        sock = _bind(self._control_host, self._control_port or 0)
        self.control_port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
