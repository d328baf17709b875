"""HTTP: /metrics, /probe, the status page and the health endpoints.

Scrapes read what the poller published: each target's exposition is already
rendered, and the merged, gzip-1 body is built once per burst of publishes
(ahead of the scrape, for the variants Prometheus asks for), so a scrape
only appends the process metrics.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
import ssl
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_generate
from prometheus_client.openmetrics.exposition import generate_latest as om_generate
from prometheus_client.process_collector import ProcessCollector

from sigma_exporter import __version__
from sigma_exporter.collect import exposition
from sigma_exporter.collect.samples import Samples, new_samples
from sigma_exporter.grammar import parse_host_port
from sigma_exporter.poll.poller import Poller
from sigma_exporter.redact import redact_url
from sigma_exporter.web import status
from sigma_exporter.web.auth import AuthBusy, Authenticator, RateLimiter, parse_basic, sans_allowed
from sigma_exporter.web.webconfig import WebConfigWatcher

log = logging.getLogger("sigma_exporter.web.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


def wants_gzip(accept_encoding: str) -> bool:
    """Whether the client takes gzip: listed, and not with `q=0` (which means refused)."""
    for part in accept_encoding.split(","):
        coding, *params = part.split(";")
        if coding.strip().lower() != "gzip":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class GzipPrefix:
    """A gzip stream of a cached body that can be finished with a fresh tail.

    The families' body changes once per poll; the exporter's own process
    metrics change every scrape. Compressing the body once, sync-flushing,
    and finishing a copy of the compressor per scrape yields one valid gzip
    member without recompressing megabytes. Level 1: ~10x cheaper than 9.
    """

    __slots__ = ("_compressor", "head")

    def __init__(self, body: bytes) -> None:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        self.head = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._compressor = compressor

    def finish(self, tail: bytes) -> bytes:
        compressor = self._compressor.copy()
        return self.head + compressor.compress(tail) + compressor.flush()


# Bodies are prebuilt after a poll burst for variants scraped within this many seconds.
PREBUILD_WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class _Body:
    generation: int
    plain: bytes
    gzip: GzipPrefix | None


@dataclass
class ReloadStatus:
    successful: bool = True
    last_success: float = field(default_factory=time.time)


class Exporter:
    """What the HTTP side serves, built from the poller's published state."""

    def __init__(self, poller: Poller, telemetry_path: str = "/metrics") -> None:
        self.poller = poller
        self.telemetry_path = telemetry_path
        self.reload = ReloadStatus()
        # Set by the application: re-read the config file on the poll loop;
        # resolves to None when the new file is in use, else why it was refused.
        self.request_reload: Callable[[], Awaitable[str | None]] | None = None
        self._process_registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self._process_registry)
        # Last built body per (openmetrics, gzip), tagged with the generation
        # it was built from; swapped whole, so either thread may replace it.
        self._bodies: dict[tuple[bool, bool], _Body] = {}
        self._asked: dict[tuple[bool, bool], float] = {}  # variant -> last scrape (monotonic)
        poller.on_flush = self.prebuild

    def _self_samples(self) -> Samples:
        out = new_samples()
        out["sigma_exporter_build_info"].append(
            ((__version__, platform.python_version()), 1.0))
        out["sigma_targets"].append(((), float(len(self.poller.targets))))
        out["sigma_config_last_reload_successful"].append(
            ((), 1.0 if self.reload.successful else 0.0))
        out["sigma_config_last_reload_success_timestamp_seconds"].append(
            ((), self.reload.last_success))
        return out

    def _process_metrics(self, openmetrics: bool) -> bytes:
        if openmetrics:
            body: bytes = om_generate(self._process_registry)  # type: ignore[no-untyped-call]
            return body.removesuffix(b"# EOF\n")
        return text_generate(self._process_registry)

    def _build(self, openmetrics: bool, gzip: bool, generation: int) -> _Body:
        blocks = [exposition.render(self._self_samples())]
        blocks.extend(s.published.rendered for s in self.poller.targets.values())
        plain = exposition.merge(blocks, openmetrics, end=False)
        return _Body(generation, plain, GzipPrefix(plain) if gzip else None)

    def prebuild(self, generation: int) -> None:
        """Build the bodies scrapers asked for lately, before `generation` is published.

        Called on the poll loop as a burst of publishes is flushed: scrapes
        then find their body ready instead of merging and compressing the
        whole fleet themselves while a poll round competes for the CPU.
        """
        now = time.monotonic()
        for variant, asked in list(self._asked.items()):
            if now - asked < PREBUILD_WINDOW:
                self._bodies[variant] = self._build(*variant, generation)

    def metrics_body(self, openmetrics: bool, gzip: bool) -> bytes:
        """The full /metrics body; the targets' part is built once per poll generation."""
        variant = (openmetrics, gzip)
        self._asked[variant] = time.monotonic()
        generation = self.poller.generation
        body = self._bodies.get(variant)
        # A body of the next generation (prebuilt, not yet announced) is fine too.
        if body is None or body.generation < generation:
            body = self._bodies[variant] = self._build(openmetrics, gzip, generation)
        tail = self._process_metrics(openmetrics) + (b"# EOF\n" if openmetrics else b"")
        if body.gzip is None:
            return body.plain + tail
        return body.gzip.finish(tail)

    def probe_body(self, name: str, openmetrics: bool) -> bytes | None:
        state = self.poller.targets.get(name)
        if state is None:
            return None
        return exposition.merge([state.published.rendered], openmetrics)

    def landing_page(self) -> str:
        """The status page, from what the poller last published (no I/O, no waiting)."""
        rows = [status.Row(s.name, redact_url(s.config.url), s.config.interval,
                           s.published.status) for s in self.poller.targets.values()]
        return status.render_page(rows, version=__version__,
                                  telemetry_path=self.telemetry_path, now=time.time())


def _content_type(openmetrics: bool) -> str:
    return exposition.OPENMETRICS_CONTENT_TYPE if openmetrics else exposition.TEXT_CONTENT_TYPE


DEFAULT_MAX_REQUESTS = 40


@dataclass
class InFlight:
    """Authorised requests being handled right now, against `--web.max-requests`."""

    limit: int = DEFAULT_MAX_REQUESTS  # 0: no limit
    current: int = 0
    refused: int = 0


IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight")


def _busy() -> web.Response:
    return web.Response(status=503, text="too many concurrent requests; "
                        "retry later (--web.max-requests)\n", headers={"Retry-After": "1"})


def _guards(watcher: WebConfigWatcher | None, in_flight: InFlight) -> list[Any]:
    """Middlewares: the rate limit (if configured), basic auth, then the in-flight cap.

    Only authorised work takes an in-flight slot: clients without valid
    credentials (their bcrypt checks bounded on their own, see Authenticator)
    cannot fill `--web.max-requests` and starve Prometheus.
    """

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if in_flight.limit and in_flight.current >= in_flight.limit:
            in_flight.refused += 1
            return _busy()
        in_flight.current += 1
        try:
            return await handler(request)
        finally:
            in_flight.current -= 1

    if watcher is None:
        return [limit]
    authenticator = Authenticator()
    limiter: list[RateLimiter] = []  # the bucket of the rate_limit in force, if any

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        # As the exporter-toolkit does: one bucket for every request, before auth,
        # so that a flood of bad passwords costs no bcrypt beyond the rate.
        config = watcher.refresh().rate_limit
        if config is None:
            limiter.clear()
        else:
            if not limiter or limiter[0].limit != config:
                limiter[:] = [RateLimiter(config)]
            if not limiter[0].allow():
                return web.Response(status=429, text="Too Many Requests\n")
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        users = watcher.refresh().user_hashes()
        if users:
            given = parse_basic(request.headers.get("Authorization", ""))
            try:
                ok = given is not None and await authenticator.check(users, *given)
            except AuthBusy:
                return _busy()
            if not ok:
                return web.Response(status=401, text="Unauthorized\n",
                                    headers={"WWW-Authenticate": "Basic"})
        return await handler(request)

    # The toolkit's rate limit stays first (one bucket, before any bcrypt);
    # the in-flight cap comes last, so that only authorised work takes a slot.
    return [rate_limit, auth, limit]


class OneLineBadRequests(logging.Filter):
    """aiohttp logs each malformed request (the client's fault, answered 400)
    at ERROR with a full traceback; one line at INFO says all there is."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            lines = str(error.message or "").strip().splitlines()
            why = lines[0].rstrip(":") if lines else type(error).__name__
            record.msg, record.args = "%s: %s %s", (record.getMessage(), error.code, why)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineBadRequests) for f in server_log.filters):
        server_log.addFilter(OneLineBadRequests())


def build_app(exporter: Exporter, watcher: WebConfigWatcher | None = None,
              max_requests: int = DEFAULT_MAX_REQUESTS) -> web.Application:
    """The HTTP app; `watcher` brings basic auth and headers from --web.config.file."""
    _quiet_bad_requests()
    in_flight = InFlight(limit=max_requests)
    app = web.Application(middlewares=_guards(watcher, in_flight))
    app[IN_FLIGHT] = in_flight
    if watcher is not None:
        async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
            for name, value in watcher.config.headers:
                response.headers[name] = value

        app.on_response_prepare.append(add_headers)

    async def metrics(request: web.Request) -> web.Response:
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        gzip = wants_gzip(request.headers.get("Accept-Encoding", ""))
        body = exporter.metrics_body(openmetrics, gzip)
        # The body depends on both: a cache must not hand one client's variant to another.
        headers = {"Content-Type": _content_type(openmetrics),
                   "Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def probe(request: web.Request) -> web.Response:
        name = request.query.get("target")
        if not name:
            return web.Response(status=400, text="missing ?target=NAME\n")
        body = exporter.probe_body(name, wants_openmetrics(request.headers.get("Accept", "")))
        if body is None:
            # Never fetch a URL we were not configured with: only names are accepted.
            return web.Response(status=404, text="unknown target; /probe serves configured "
                                "target names only\n")
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": _content_type(openmetrics),
                                                "Vary": "Accept"})

    async def landing(request: web.Request) -> web.Response:
        return web.Response(text=exporter.landing_page(), content_type="text/html")

    async def reload(request: web.Request) -> web.Response:
        if exporter.request_reload is None:
            return web.Response(status=503, text="reload is not available\n")
        problem = await exporter.request_reload()
        if problem is not None:
            return web.Response(status=500, text=f"reload failed: {problem}\n")
        return web.Response(text="Reloaded\n")

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="Healthy\n")

    async def ready(request: web.Request) -> web.Response:
        if exporter.poller.first_round.is_set():
            return web.Response(text="Ready\n")
        return web.Response(status=503, text="Not ready: first poll round not finished\n")

    app.router.add_get(exporter.telemetry_path, metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/", landing)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)  # as Prometheus and Alertmanager offer it
    return app


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
            log.debug("closing a connection that sent no complete request in %gs",
                      self._timeout)
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
                    log.warning("client certificate refused: no SAN in client_allowed_sans "
                                "peer=%s", transport.get_extra_info("peername"))
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
