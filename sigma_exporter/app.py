"""The application: wires the poll loop, the web thread and agent mode, and owns the process.

`cli.py` parses flags into `Settings` and calls `run`. Everything that
concerns the process as a whole is here: signals (SIGINT and SIGTERM stop,
SIGHUP reloads), the config reload (SIGHUP and POST /-/reload), the GC and
GIL switch-interval tuning, the open-file limit and the order of shutdown.

Threading model. Two event loops, each on its own thread, and three kinds
of worker thread that own no state:

* The main thread runs the poll loop: the Poller, every TargetState and its
  sources, reloads and signals. Nothing else touches their state.
* The web thread (`WebThread`) runs the HTTP server: the Exporter, its body
  cache (`_bodies`, `_asked`) and the listeners. Nothing else touches them.
* Workers: the exporter's build thread (merges and compresses a new View's
  body from the immutable View, `web/exporter.py`); one NVML read thread at
  a time in agent mode (a daemon, so a wedged driver never holds up the exit,
  `agent/source.py`); and asyncio's default executor, which runs bcrypt for
  basic auth on the web loop's behalf and the resolver's getaddrinfo for
  the poll loop's connections.

From poll to web crosses one thing: the immutable `View` the poller builds
per generation and hands over by a single attribute assignment
(`poller.view = View(...)`); the web thread reads that attribute and builds
every body and page from the object it got. The poll side's only call
towards the web side is the notification of a new View, which schedules the
Exporter's prebuild on the web loop with `loop.call_soon_threadsafe`
(`WebThread.call_soon`). The web side's only call towards the poll side is
a reload request, scheduled on the poll loop with
`asyncio.run_coroutine_threadsafe`. The settings the web side reads (the
web config watcher, the telemetry path, the reload callable) are set before
the web thread starts and belong to the web thread from then on. Logging is
the process's: a reload replaces the redaction filter's secrets whole (one
assignment of a tuple) for both threads.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import resource
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sigma_exporter import __version__
from sigma_exporter.collect.source import SourceFactory
from sigma_exporter.config import (
    EXIT_CONFIG,
    Config,
    ConfigError,
    format_duration,
    load_config,
)
from sigma_exporter.logsetup import fields
from sigma_exporter.outputs.source import OutputsFactory
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.redact import RedactFilter, redact_url
from sigma_exporter.web import systemd
from sigma_exporter.web.exporter import Exporter
from sigma_exporter.web.routes import DEFAULT_MAX_REQUESTS
from sigma_exporter.web.server import DEFAULT_LISTEN, WebThread, listen_problem, split_listen
from sigma_exporter.web.webconfig import WebConfigWatcher, load_web_config

# What the command line offers and checks, defined where it is used.
__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_REQUESTS",
    "Settings",
    "check_listen_address",
    "load_web_config",
    "run",
    "serve",
    "systemd_sockets",
    "watch_web_config",
]

log = logging.getLogger("sigma_exporter")


# GIL switch interval while the web thread shares the process with the poll
# loop: a scrape hands the GIL back and forth a dozen times, so during a poll
# round it waits a dozen intervals; 1 ms instead of CPython's 5 ms.
WEB_SWITCH_INTERVAL = 0.001


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the exporter runs with, as the command line gave it."""

    config: Config
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    telemetry_path: str = "/metrics"
    config_file: str | None = None  # re-read on reload; None: targets from --target
    web_config: WebConfigWatcher | None = None
    max_requests: int = DEFAULT_MAX_REQUESTS
    read_timeout: float = 10.0
    sockets: tuple[socket.socket, ...] = ()  # systemd's; they replace `listen`


def check_listen_address(address: str) -> None:
    """Raise ConfigError naming --web.listen-address unless `address` is HOST:PORT."""
    split_listen(address)


def systemd_sockets() -> tuple[socket.socket, ...]:
    """The listening sockets systemd passed (--web.systemd-socket)."""
    return tuple(systemd.listen_sockets())


def watch_web_config(path: str) -> WebConfigWatcher:
    """The web config file, read now (ConfigError if bad) and re-read as it changes."""
    return WebConfigWatcher(path)


# Net allocations of GC-tracked objects between young collections (tuned_runtime).
YOUNG_COLLECTION_THRESHOLD = 100_000


@contextmanager
def tuned_runtime() -> Iterator[None]:
    """Make the cyclic GC cheap and the GIL switch quick while the exporter runs.

    Each round allocates many short-lived objects (decoded JSON, samples);
    with CPython's default thresholds that triggers frequent full collections
    that walk every live object, a third of a 1,000-target round's CPU.
    Almost nothing we allocate forms cycles (refcounting frees it), so we
    collect less often and move the start-up objects out of the GC's sight.
    Both settings are the process's: they are put back on the way out.

    The young generation's threshold counts tracked objects allocated and
    not yet freed. A round replaces each target's data, freeing about as
    much as it allocates, but mid-burst the answers and samples of the polls
    in flight are alive: at 20,000 a 1,000-target round ran about a dozen
    young collections, each walking 20,000-80,000 live objects, 0.3 s of a
    2.4 s round. At 100,000 it runs one every round or two (0.02-0.1 s). The
    cost: cyclic garbage, which we rarely make, waits a little longer.
    """
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, 20, 20)
    sys.setswitchinterval(WEB_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 256 * 1024


def return_large_buffers() -> None:
    """Give freed large buffers back to the system at once (glibc; elsewhere nothing).

    The big allocations here are short-lived: an answer's bytes, a merged scrape
    body (about 15 MB at 1,000 targets, built once per View and variant). glibc's
    default raises its mmap threshold after the first such free, so the next
    ones come from the heap, which it rarely trims: RSS keeps the high-water
    mark of every build. A fixed threshold keeps each large buffer in a mapping
    of its own, unmapped when freed (measured: 20 MB less RSS at 1,000 targets,
    docs/performance.md).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its own policy stays
        return
    mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)
    mallopt(_M_TRIM_THRESHOLD, LARGE_BUFFER_BYTES)


def raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one, as Go programs do since 1.19.

    Each target keeps connections open and each scrape takes one; a soft
    limit of 1,024 (systemd's default) ran out long before the hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # an infinite hard limit may not be a soft one
        log.debug("open-file limit left as it was",
                  extra=fields(soft=soft, hard=hard, error=str(exc)))


async def serve(settings: Settings, sources: Sequence[SourceFactory] = (),
                ready: asyncio.Event | None = None) -> None:
    """Run the poll loop and the HTTP server until SIGINT/SIGTERM (or cancellation).

    `sources`: the factories of extra sources (agent mode's NVML); the outputs
    source's is added here, from the config's `outputs` section.
    """
    config = settings.config
    outputs = OutputsFactory(config)  # the playlists of the jobs' HLS/DASH outputs
    poller = Poller(config, [*sources, outputs])
    exporter = Exporter(poller, settings.telemetry_path)
    web_thread = WebThread(exporter, settings.listen, settings.web_config,
                           settings.max_requests, settings.read_timeout, settings.sockets)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def reload() -> str | None:
        """SIGHUP and POST /-/reload: None when the new file is in use, else why not."""
        if not settings.config_file:
            log.warning("reload ignored: no --config.file to reload")
            return "no --config.file to reload (the targets come from --target)"
        try:
            new = load_config(settings.config_file)  # reads every file it names, TLS too
            # Builds the new targets' clients before changing anything: if that
            # fails (a TLS file replaced since it was checked), nothing changed.
            # A changed outputs section gives every target its sources anew.
            running = poller.config
            try:
                await poller.reload(new, rebuild=outputs.update(new))
            except BaseException:
                outputs.update(running)
                raise
        except Exception as exc:  # never "successful", never an unretrieved task error
            poller.reload_failed()
            if isinstance(exc, ConfigError | OSError):  # ssl.SSLError is an OSError
                log.error("reload failed, keeping the running config",
                          extra=fields(error=str(exc)))
            else:  # a bug of ours: its traceback, once
                log.exception("reload failed, keeping the running config")
            return str(exc)
        for handler in logging.getLogger().handlers:  # new secrets to blank in logs
            for flt in handler.filters:
                if isinstance(flt, RedactFilter):
                    flt.secrets = new.secrets()
        log.info("config reloaded", extra=fields(targets=len(new.targets)))
        return None

    def reload_from_web() -> Awaitable[str | None]:
        # Called on the web thread's loop; the reload itself runs on the poll loop.
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(reload(), loop))

    exporter.request_reload = reload_from_web
    # A new View: the web thread prebuilds the bodies scrapers ask for, on its own loop.
    poller.on_publish = lambda view: web_thread.call_soon(exporter.prebuild, view)

    def remove_signal_handlers() -> None:  # a second Ctrl-C during shutdown stops at once
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    # Handlers first: a signal must never find the process without them.
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    try:
        with tuned_runtime():
            web_thread.start()
            try:
                web_config = settings.web_config
                log.info("listening", extra=fields(
                    address=web_thread.listen,
                    tls=web_config is not None and web_config.tls_enabled,
                    auth=bool(web_config and web_config.config.users),
                    targets=len(config.targets), version=__version__))
                for target in config.targets:
                    log.info("watching", extra=fields(
                        target=target.name, url=redact_url(target.url),
                        interval=format_duration(target.interval),
                        timeout=format_duration(target.timeout)))
                poller.start()
                if ready is not None:
                    ready.set()
                await stop.wait()
            finally:
                log.info("shutting down")
                remove_signal_handlers()
                await poller.stop()
                await asyncio.to_thread(web_thread.stop)
    finally:
        remove_signal_handlers()
        poller.on_publish = None


def run(settings: Settings) -> int:
    """The exporter, until a signal stops it; the process's exit status."""
    from sigma_exporter.agent.source import nvml_source  # late: NVML bindings only when running

    raise_open_file_limit()
    return_large_buffers()
    try:
        nvml = nvml_source(settings.config)
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    listen = "the systemd sockets" if settings.sockets else ", ".join(settings.listen)
    try:
        asyncio.run(serve(settings, [nvml.factory] if nvml is not None else []))
    except ssl.SSLError as exc:  # a TLS file that changed between its check and its use
        print(f"sigma-exporter: invalid configuration: TLS: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"sigma-exporter: cannot serve: {listen_problem(listen, exc)}", file=sys.stderr)
        return 1
    finally:
        if nvml is not None:  # agent mode: let go of NVML
            nvml.close()
    return 0
