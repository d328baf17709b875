"""The web server: its thread and event loop, its listeners, and the listen flag's helpers.

`WebThread` runs aiohttp on a thread of its own (see app.py for what crosses
between it and the poll loop); `ExporterSite` and `HeaderDeadline` bound the
TLS handshake and the first request of a connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import platform
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence

from aiohttp import web

from sigma_exporter.config import ConfigError
from sigma_exporter.grammar import HOST_PORT_FIX, parse_host_port
from sigma_exporter.logsetup import fields
from sigma_exporter.web.auth import sans_allowed
from sigma_exporter.web.exporter import Exporter
from sigma_exporter.web.routes import build_app
from sigma_exporter.web.webconfig import WebConfigWatcher

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ":19911"  # outside the 9100-9999 range of well-known exporter ports


def split_listen(address: str) -> tuple[str | None, int]:
    """A --web.listen-address value as (host or None for every interface, port)."""
    try:
        host, port = parse_host_port(address)
    except ValueError as exc:
        raise ConfigError("--web.listen-address", address, f"not HOST:PORT ({exc})",
                          HOST_PORT_FIX) from None
    if port == 0:
        raise ConfigError("--web.listen-address", address, "port 0 is not a listen port",
                          HOST_PORT_FIX)
    return host, port


def listen_problem(listen: str, exc: OSError) -> str:
    """Why the listener could not open, with the flag and the fix, like a config error."""
    if exc.errno == errno.EADDRINUSE:
        return (f"--web.listen-address {listen}: the address is already in use (another "
                "sigma-exporter?). Fix: stop the process listening there, or pass "
                "--web.listen-address with a free port, e.g. 127.0.0.1:19912")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"--web.listen-address {listen}: permission denied. Fix: use a port above "
                "1023, or give the service CAP_NET_BIND_SERVICE")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"--web.listen-address {listen}: no such address on this host. Fix: use "
                "one of this host's addresses, or `:PORT` for all of them")
    return f"--web.listen-address {listen}: {exc}"


class WebThread:
    """The HTTP side on a thread and event loop of its own.

    The web server does not share the poll loop: when a thousand
    answers arrive at once, the poll loop is busy parsing for a second or two,
    and a scrape queued behind that work would wait for all of it. On its own
    thread a scrape waits at most one GIL switch interval at a time, and gzip
    releases the GIL while it compresses. A scrape hands the GIL back and
    forth a dozen times (socket and /proc reads), so during a poll round it
    costs a dozen switch intervals, which is why the application lowers
    the interval (app.WEB_SWITCH_INTERVAL). What crosses between this thread
    and the poll loop is stated in app.py.
    """

    def __init__(self, exporter: Exporter, listen: str | Sequence[str],
                 web_config: WebConfigWatcher | None, max_requests: int, read_timeout: float,
                 sockets: Sequence[socket.socket] = ()) -> None:
        self.exporter = exporter
        # Socket activation replaces the listen addresses, as in the toolkit.
        self.sockets = list(sockets)
        self.listens = [] if self.sockets else (
            [listen] if isinstance(listen, str) else list(listen))
        self.listen = ", ".join(self.listens) or ", ".join(
            "systemd:{}:{}".format(*s.getsockname()[:2]) for s in self.sockets)
        self.addresses = [split_listen(address) for address in self.listens]
        self.web_config, self.max_requests, self.read_timeout = (
            web_config, max_requests, read_timeout)
        self._thread = threading.Thread(target=self._run, name="sigma-web", daemon=True)
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        """Start serving; raises what binding the listener raised (e.g. OSError)."""
        self._thread.start()
        self._started.result()

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run `callback(*args)` on the web thread's loop; from any thread, never blocks.
        Dropped when the web thread is not serving (not started yet, or stopped)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed between the check and the call
                loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaces in start() when it happens at start-up
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                log.exception("web server failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        web_config, read_timeout = self.web_config, self.read_timeout
        # keepalive_timeout bounds the wait for a complete request line and
        # headers, from the connection's start or the end of the previous
        # answer: a client trickling its headers (slowloris) is cut off.
        runner = web.AppRunner(build_app(self.exporter, web_config, self.max_requests),
                               access_log=None, handle_signals=False,
                               keepalive_timeout=read_timeout, shutdown_timeout=5.0)
        await runner.setup()
        sites: list[ExporterSite] = []

        def allowed_sans() -> tuple[str, ...] | None:
            tls = web_config.config.tls if web_config is not None else None
            return tls.client_allowed_sans if tls is not None else None

        async def open_site() -> None:
            context = web_config.ssl_context() if web_config is not None else None
            new: list[ExporterSite] = []
            try:
                for host, port in self.addresses:
                    new.append(ExporterSite(runner, host, port, ssl_context=context,
                                            read_timeout=read_timeout,
                                            allowed_sans=allowed_sans, replacing=bool(sites)))
                    await new[-1].start()
                for sock in self.sockets:
                    new.append(ExporterSite(runner, None, 0, ssl_context=context,
                                            read_timeout=read_timeout, sock=sock,
                                            allowed_sans=allowed_sans))
                    await new[-1].start()
            except BaseException:
                for site in new:
                    await site.stop()
                raise
            old = list(sites)
            sites[:] = new
            for stale in old:  # after the new ones listen: no connection is refused
                await stale.stop()

        try:
            await open_site()
        except BaseException:
            await runner.cleanup()
            raise
        background: set[asyncio.Task[None]] = set()
        loop = self._loop
        if web_config is not None:
            async def reopen() -> None:
                try:
                    await open_site()
                    log.info("listener reopened with the new TLS settings",
                             extra=fields(address=self.listen))
                except (OSError, RuntimeError) as exc:
                    log.error("cannot reopen the listener with the new TLS settings, "
                              "keeping the old one",
                              extra=fields(address=self.listen, error=str(exc)))

            def tls_changed() -> None:
                task = loop.create_task(reopen())
                background.add(task)
                task.add_done_callback(background.discard)

            web_config.on_tls_change = tls_changed

            async def watch_web_config() -> None:
                while True:
                    await asyncio.sleep(web_config.CHECK_EVERY_S)
                    web_config.refresh()

            watcher_task = loop.create_task(watch_web_config())
            background.add(watcher_task)
            watcher_task.add_done_callback(background.discard)
        self._started.set_result(None)
        try:
            await self._stop.wait()
        finally:
            for task in list(background):
                task.cancel()
            await runner.cleanup()
            self.exporter.close()



class HeaderDeadline(asyncio.Protocol):
    """Closes a connection whose first request line and headers take too long.

    aiohttp's keep-alive timer bounds the wait between requests, but (before
    aiohttp 3.14) not the first request of a connection: a client trickling
    its headers a byte at a time (slowloris) could hold the connection for
    ever. This wrapper sits between the transport and aiohttp's protocol and
    aborts the connection unless a blank line ends the headers in time.
    """

    MAX_HEAD = 64 * 1024  # aiohttp refuses longer heads itself

    def __init__(self, inner: asyncio.Protocol, timeout: float,
                 admit: Callable[[asyncio.BaseTransport], bool] | None = None) -> None:
        self._inner = inner
        self._timeout = timeout
        self._admit = admit
        self._timer: asyncio.TimerHandle | None = None
        self._head = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._admit is not None and not self._admit(transport):
            # Closed right after the TLS handshake, before a byte is read: the
            # toolkit fails the handshake itself, which Python's ssl cannot.
            self._transport = None
            getattr(transport, "abort", transport.close)()
            return
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)
        self._inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            log.debug("closing a connection that sent no complete request in time",
                      extra=fields(timeout=f"{self._timeout:g}s"))
            abort = getattr(self._transport, "abort", self._transport.close)
            abort()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:  # refused in connection_made
            return
        if self._timer is not None:
            self._head = (self._head + data)[-self.MAX_HEAD:]
            if b"\r\n\r\n" in self._head or b"\n\n" in self._head:
                self._timer.cancel()
                self._timer = None
                self._head = b""
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._transport is None:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        admitted = self._transport is not None
        self._transport = None
        if admitted:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ExporterSite(web.TCPSite):
    """A TCPSite with a deadline on the TLS handshake and on the first request.

    `reuse_port` (TLS only) lets a replacement listener with new TLS settings
    bind before the old one closes, so a certificate change refuses no
    connection. It would also let a second exporter bind the same port and
    take half the scrapes: unless `replacing` our own listener, the port is
    first checked free with a plain bind, as without TLS.
    """

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *,
                 ssl_context: ssl.SSLContext | None, read_timeout: float,
                 sock: socket.socket | None = None,
                 allowed_sans: Callable[[], tuple[str, ...] | None] | None = None,
                 replacing: bool = False) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=True,
                         reuse_port=ssl_context is not None)
        self._read_timeout = read_timeout
        # A listening socket handed over by systemd (--web.systemd-socket):
        # served through a duplicate, so that replacing the site for new TLS
        # settings closes the duplicate and never the socket systemd gave.
        self._sock = sock
        self._allowed_sans = allowed_sans
        self._replacing = replacing

    @property
    def name(self) -> str:
        if self._sock is not None:
            host, port = self._sock.getsockname()[:2]
            return f"systemd socket {host}:{port}"
        return super().name

    async def start(self) -> None:
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        if server is None:
            raise RuntimeError("runner not set up")
        timeout = self._read_timeout

        allowed_sans = self._allowed_sans
        admit: Callable[[asyncio.BaseTransport], bool] | None = None
        if allowed_sans is not None and self._ssl_context is not None:
            def admit(transport: asyncio.BaseTransport) -> bool:
                ok = sans_allowed(allowed_sans(), transport.get_extra_info("peercert"))
                if not ok:
                    log.warning("client certificate refused: no SAN in client_allowed_sans",
                                extra=fields(peer=str(transport.get_extra_info("peername"))))
                return ok

        def factory() -> asyncio.Protocol:
            return HeaderDeadline(server(), timeout, admit)

        handshake = timeout if self._ssl_context is not None else None
        if self._sock is not None:
            self._server = await loop.create_server(
                factory, sock=self._sock.dup(), ssl=self._ssl_context, backlog=self._backlog,
                ssl_handshake_timeout=handshake)
        else:
            if self._reuse_port and not self._replacing and self._port != 0:
                await ensure_port_free(self._host, self._port)
            self._server = await loop.create_server(
                factory, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
                reuse_address=self._reuse_address, reuse_port=self._reuse_port,
                ssl_handshake_timeout=handshake)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]


async def ensure_port_free(host: str | None, port: int) -> None:
    """Raise OSError (address in use) when any listener holds host:port already.

    A bind without SO_REUSEPORT fails against every listener, with the
    option or without; the probe socket is closed at once.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)


def describe_listen(address: str) -> str:
    host, port = parse_host_port(address)
    shown = "localhost" if host in (None, "0.0.0.0", "::") else host  # noqa: S104 - display only
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"  # IPv6 in brackets


def python_info() -> str:
    return f"{platform.python_implementation()} {sys.version.split()[0]}"
