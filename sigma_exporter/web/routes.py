"""The HTTP routes and what guards them: /metrics, /probe, the status page, health, reload.

Handlers run on the web thread and read only the Exporter (which reads the
poll side's View); POST /-/reload asks the application, which runs the
reload on the poll loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from sigma_exporter.collect import exposition
from sigma_exporter.web.auth import AuthBusy, Authenticator, RateLimiter, parse_basic
from sigma_exporter.web.exporter import Exporter
from sigma_exporter.web.webconfig import WebConfigWatcher

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


def _weight(element: str) -> tuple[str, float] | None:
    """(coding, q) of one Accept-Encoding element; None when its weight is malformed."""
    coding, _, params = element.partition(";")
    q = 1.0
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            if not 0.0 <= q <= 1.0:
                return None
    return coding.strip().lower(), q


def wants_gzip(accept_encoding: str) -> bool:
    """Whether to answer in gzip, by RFC 9110 §12.5.3's q-values (as Go's promhttp does).

    `q=0` means "not acceptable": `gzip;q=0` gets the plain body. A coding not
    listed is acceptable only through `*`; identity is acceptable unless
    excluded (`identity;q=0`, or `*;q=0` without identity). Between the two,
    gzip wins a tie: it is the one Prometheus asks for.
    """
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        parsed = _weight(element)
        if parsed is not None and parsed[0]:
            weights.setdefault(parsed[0], parsed[1])
    star = weights.get("*")
    gzip = weights.get("gzip", weights.get("x-gzip", star if star is not None else 0.0))
    identity = weights.get("identity", star if star is not None else 1.0)
    return gzip > 0.0 and gzip >= identity


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
        if exporter.ready():
            return web.Response(text="Ready\n")
        return web.Response(status=503, text="Not ready: first poll round not finished\n")

    app.router.add_get(exporter.telemetry_path, metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/", landing)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)  # as Prometheus and Alertmanager offer it
    return app
