"""Command line: the exporter, and its `check-config`, `once`, `simulate`, `demo`.

Flags follow the exporter convention (`--config.file`, `--web.listen-address`,
...). Each flag falls back to an environment variable `SIGMA_EXPORTER_*`
(dots and dashes become underscores), then to its default.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Sequence
from dataclasses import replace

from aiohttp import web

from sigma_exporter import __version__, logsetup
from sigma_exporter.collect import exposition
from sigma_exporter.config import (
    DURATION_FIX,
    Config,
    ConfigError,
    config_from_urls,
    format_duration,
    load_config,
    parse_duration,
)
from sigma_exporter.poll.poller import AfterDump, Poller
from sigma_exporter.redact import RedactFilter, install_log_filter, redact_url
from sigma_exporter.web import systemd
from sigma_exporter.web.server import DEFAULT_MAX_REQUESTS, Exporter, ExporterSite, build_app
from sigma_exporter.web.webconfig import WebConfigWatcher

log = logging.getLogger("sigma_exporter")

DEFAULT_READ_TIMEOUT = "10s"
DEFAULT_LISTEN = ":19911"  # outside the 9100-9999 range of well-known exporter ports
ENV_PREFIX = "SIGMA_EXPORTER_"
EXIT_CONFIG = 2
TRUE = ("1", "true", "yes")


def _env(flag: str) -> str | None:
    return os.environ.get(ENV_PREFIX + flag.lstrip("-").replace(".", "_").replace("-", "_")
                          .upper())


def _add(parser: argparse.ArgumentParser, flag: str, default: str | None, help_: str) -> None:
    env = _env(flag)
    parser.add_argument(flag, default=env if env is not None else default,
                        help=f"{help_} (env {ENV_PREFIX}"
                             f"{flag.lstrip('-').replace('.', '_').replace('-', '_').upper()})")


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter",
        description="Prometheus exporter for Sigma Media Server. Subcommands: check-config "
                    "FILE, once, simulate, demo (see `sigma-exporter SUBCOMMAND --help`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add(parser, "--config.file", None, "YAML file listing the Sigma servers")
    parser.add_argument("--target", action="append", default=None, metavar="URL",
                        help="a Sigma server URL, repeatable, for use without a config file "
                             f"(env {ENV_PREFIX}TARGETS, comma-separated)")
    # Repeatable, as in the exporter-toolkit; the environment variable holds one
    # address (the container's health check reads its port from it).
    parser.add_argument("--web.listen-address", action="append", default=None,
                        metavar="HOST:PORT",
                        help=f"address to serve metrics on; repeat for several (default "
                             f"{DEFAULT_LISTEN}; env {ENV_PREFIX}WEB_LISTEN_ADDRESS, one address)")
    parser.add_argument("--web.systemd-socket", action="store_true",
                        default=(_env("--web.systemd-socket") or "").lower() in TRUE,
                        help="serve on the listening sockets systemd passes (socket "
                             "activation) instead of --web.listen-address "
                             f"(env {ENV_PREFIX}WEB_SYSTEMD_SOCKET=true)")
    _add(parser, "--web.telemetry-path", "/metrics", "path of the metrics endpoint")
    _add(parser, "--web.config.file", None,
         "exporter-toolkit web config (TLS, basic auth, headers); re-read when it changes")
    _add(parser, "--web.max-requests", str(DEFAULT_MAX_REQUESTS),
         "most requests handled at once; more get 503 (0: no limit)")
    _add(parser, "--web.read-timeout", DEFAULT_READ_TIMEOUT,
         "time a client has to send a complete request (and to finish a TLS handshake); "
         "idle keep-alive connections close after it too")
    _add(parser, "--log.level", "info", "debug, info, warn or error")
    _add(parser, "--log.format", "logfmt", "logfmt or json")
    parser.add_argument("--version", action="version", version=f"sigma-exporter {__version__}")
    return parser


def _split_listen(address: str) -> tuple[str | None, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("--web.listen-address", address, "not HOST:PORT",
                          "write e.g. `:19911` or `127.0.0.1:19911`")
    host = host.strip("[]")
    return (host or None), int(port)


def listen_addresses(args: argparse.Namespace) -> list[str]:
    """--web.listen-address, each checked; the environment's one or the default without."""
    given: list[str] | None = getattr(args, "web.listen_address")
    addresses = given or [_env("--web.listen-address") or DEFAULT_LISTEN]
    for address in addresses:
        _split_listen(address)
    if len(set(addresses)) != len(addresses):
        raise ConfigError("--web.listen-address", ", ".join(addresses), "given twice",
                          "give each address once")
    return addresses


def duration_flag(flag: str, text: str) -> float:
    """A flag's Prometheus duration (the grammar of the config file), above zero."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ConfigError(flag, text, "not a duration above zero", DURATION_FIX)
    return seconds


def _count_flag(flag: str, text: str) -> int:
    if not text.strip().isdigit():
        raise ConfigError(flag, text, "not a whole number >= 0", "write e.g. `40` (0: no limit)")
    return int(text)


def resolve_config(config_file: str | None, targets: list[str] | None,
                   timeout: float | None = None) -> Config:
    if config_file and targets:
        raise ConfigError("--target", "--target", "given together with --config.file",
                          "list the servers in the config file, or use --target alone")
    if config_file:
        return load_config(config_file)
    if not targets:
        env_targets = os.environ.get(ENV_PREFIX + "TARGETS")
        targets = [t.strip() for t in env_targets.split(",") if t.strip()] if env_targets else []
    if not targets:
        raise ConfigError("(flags)", "--config.file", "no Sigma server to watch",
                          "pass --config.file sigma.yml or --target http://HOST:9999 "
                          "(try `sigma-exporter demo` for a simulated one)")
    return config_from_urls(targets, timeout=timeout)


def _validate_choices(args: argparse.Namespace) -> None:
    level = getattr(args, "log.level")
    if level not in logsetup.LEVELS:
        raise ConfigError("--log.level", level, "unknown level", "use debug, info, warn or error")
    fmt = getattr(args, "log.format")
    if fmt not in ("logfmt", "json"):
        raise ConfigError("--log.format", fmt, "unknown format", "use logfmt or json")
    path = getattr(args, "web.telemetry_path")
    if not path.startswith("/") or path in ("/", "/probe", "/-/healthy", "/-/ready",
                                            "/-/reload"):
        raise ConfigError("--web.telemetry-path", path, "must be a path of its own",
                          "write e.g. `/metrics`")


# GIL switch interval while the web thread shares the process with the poll loop.
WEB_SWITCH_INTERVAL = 0.001


class WebThread:
    """The HTTP side on a thread and event loop of its own.

    Polls and scrapes share nothing but immutable published bytes, so the
    web server does not have to share the poll loop either: when a thousand
    answers arrive at once, the poll loop is busy parsing for a second or two,
    and a scrape queued behind that work would wait for all of it. On its own
    thread a scrape waits at most one GIL switch interval at a time, and gzip
    releases the GIL while it compresses. A scrape hands the GIL back and
    forth a dozen times (socket and /proc reads), so during a poll round it
    costs a dozen switch intervals: the interval is lowered from CPython's
    5 ms to 1 ms while the web thread runs.
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
        self.addresses = [_split_listen(address) for address in self.listens]
        self.web_config, self.max_requests, self.read_timeout = (
            web_config, max_requests, read_timeout)
        self._thread = threading.Thread(target=self._run, name="sigma-web", daemon=True)
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        """Start serving; raises what binding the listener raised (e.g. OSError)."""
        sys.setswitchinterval(WEB_SWITCH_INTERVAL)
        self._thread.start()
        self._started.result()

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
                    log.info("listener reopened with the new TLS settings address=%s",
                             self.listen)
                except (OSError, RuntimeError) as exc:
                    log.error("cannot reopen the listener with the new TLS settings, keeping "
                              "the old one: %s", exc)

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


async def serve(config: Config, listen: str | Sequence[str], telemetry_path: str,
                config_file: str | None, after_dump: AfterDump | None = None,
                ready: asyncio.Event | None = None, *,
                web_config: WebConfigWatcher | None = None,
                max_requests: int = DEFAULT_MAX_REQUESTS,
                read_timeout: float = 10.0,
                sockets: Sequence[socket.socket] = ()) -> None:
    """Run the poll loop and the HTTP server until SIGINT/SIGTERM (or cancellation)."""
    poller = Poller(config, after_dump)
    exporter = Exporter(poller, telemetry_path)
    web_thread = WebThread(exporter, listen, web_config, max_requests, read_timeout, sockets)
    listen = web_thread.listen
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def reload() -> str | None:
        """SIGHUP and POST /-/reload: None when the new file is in use, else why not."""
        if not config_file:
            log.warning("reload ignored: no --config.file to reload")
            return "no --config.file to reload (the targets come from --target)"
        try:
            new = load_config(config_file)
        except Exception as exc:  # ConfigError, or anything unforeseen: never "successful"
            exporter.reload.successful = False
            poller.flush_published()
            if isinstance(exc, ConfigError):
                log.error("reload failed, keeping the running config: %s", exc)
            else:
                log.exception("reload failed, keeping the running config")
            return str(exc)
        await poller.reload(new)
        for handler in logging.getLogger().handlers:  # new secrets to blank in logs
            for flt in handler.filters:
                if isinstance(flt, RedactFilter):
                    flt.secrets = new.secrets()
        exporter.reload.successful = True
        exporter.reload.last_success = time.time()
        log.info("config reloaded targets=%d", len(new.targets))
        return None

    def reload_from_web() -> Awaitable[str | None]:
        # Called on the web thread's loop; the reload itself runs on the poll loop.
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(reload(), loop))

    exporter.request_reload = reload_from_web

    # Handlers first: a signal must never find the process without them.
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    try:
        web_thread.start()
    except BaseException:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        raise
    tls = web_config is not None and web_config.tls_enabled
    log.info("listening address=%s tls=%s auth=%s targets=%d version=%s", listen, tls,
             bool(web_config and web_config.config.users), len(config.targets), __version__)
    for target in config.targets:
        log.info("watching target=%s url=%s interval=%s timeout=%s", target.name,
                 redact_url(target.url), format_duration(target.interval),
                 format_duration(target.timeout))
    poller.start()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await poller.stop()
        close = getattr(after_dump, "close", None)
        if callable(close):  # agent mode: let go of NVML
            close()
        await asyncio.to_thread(web_thread.stop)


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
        log.debug("open-file limit left at %d (hard %d): %s", soft, hard, exc)


def main_run(argv: Sequence[str]) -> int:
    args = run_parser().parse_args(argv)
    try:
        _validate_choices(args)
        logsetup.setup(getattr(args, "log.level"), getattr(args, "log.format"))
        config = resolve_config(getattr(args, "config.file"), args.target)
        listens = listen_addresses(args)
        sockets = systemd.listen_sockets() if getattr(args, "web.systemd_socket") else []
        max_requests = _count_flag("--web.max-requests", getattr(args, "web.max_requests"))
        read_timeout = duration_flag("--web.read-timeout", getattr(args, "web.read_timeout"))
        web_config_file = getattr(args, "web.config.file")
        install_log_filter(config.secrets())
        web_config = WebConfigWatcher(web_config_file) if web_config_file else None
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from sigma_exporter.agent.hook import (
        after_dump_hook,  # late: imports NVML bindings only when running
    )

    raise_open_file_limit()
    try:
        hook = after_dump_hook(config)
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    listen = "the systemd sockets" if sockets else ", ".join(listens)
    try:
        asyncio.run(serve(config, listens,
                          getattr(args, "web.telemetry_path"), getattr(args, "config.file"),
                          hook, web_config=web_config, max_requests=max_requests,
                          read_timeout=read_timeout, sockets=sockets))
    except OSError as exc:
        print(f"sigma-exporter: cannot serve: {listen_problem(listen, exc)}", file=sys.stderr)
        return 1
    return 0


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


def main_check_config(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter check-config",
        description="Validate a config file as start-up does (NVML included) and exit: "
                    "0 when valid, 2 when not.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("file", help="the YAML file given to --config.file")
    parser.add_argument("--web.config.file", default=None, metavar="FILE",
                        help="also validate this web config (TLS, basic auth, headers)")
    parser.add_argument("--syntax-only", action="store_true",
                        help="check the files only, not this host (NVML): for a file made "
                             "elsewhere than where it runs, e.g. a Kubernetes init container")
    args = parser.parse_args(argv)
    web_file = getattr(args, "web.config.file")
    try:
        config = load_config(args.file)
        web_cfg = WebConfigWatcher(web_file).config if web_file else None
        nvml = ("not checked (--syntax-only); start-up checks it" if args.syntax_only
                else _check_nvml(config))
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if web_cfg is not None:
        print(f"{web_file}: OK, tls {'on' if web_cfg.tls else 'off'}, "
              f"{len(web_cfg.users)} basic auth user(s), {len(web_cfg.headers)} header(s)")
    print(f"{args.file}: OK, {len(config.targets)} target(s)")
    for target in config.targets:
        auth = "bearer token" if target.auth.bearer_token else (
            "basic auth" if target.auth.username else "no auth")
        print(f"  {target.name}: {redact_url(target.url)} every "
              f"{format_duration(target.interval)}, timeout {format_duration(target.timeout)}, "
              f"{target.method}, {auth}")
    print(f"  nvml: {nvml}")
    print("Not checked: whether each server answers and accepts the credentials; "
          f"try `sigma-exporter once --config.file {args.file} --target NAME`.")
    return 0


def _check_nvml(config: Config) -> str:
    """What agent mode would do on this host, as start-up decides it.

    `nvml.enabled: true` that cannot be honoured raises ConfigError (start-up
    refuses it too); otherwise a sentence saying what was found.
    """
    if config.nvml.enabled == "false":
        return "agent mode off (nvml.enabled: false)"
    from sigma_exporter.agent.hook import (
        after_dump_hook,  # late: imports NVML bindings only when asked
    )

    reasons: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reasons.append(record.getMessage())

    agent_log = logging.getLogger("sigma_exporter.agent.hook")
    handler, level = Collect(logging.INFO), agent_log.level
    agent_log.addHandler(handler)
    agent_log.setLevel(logging.INFO)
    try:
        hook = after_dump_hook(config)
    finally:
        agent_log.removeHandler(handler)
        agent_log.setLevel(level)
    close = getattr(hook, "close", None)
    if callable(close):
        close()
    said = "; ".join(reasons) or "no reason given"
    return f"{'checked' if hook is not None else 'agent mode off on this host'}: {said}"


def main_once(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter once",
        description="Poll one server once, print its exposition; exit 0 when up, 1 when not, "
                    "2 for a bad flag or config.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--target", required=True, metavar="URL|NAME",
                        help="a server URL, or with --config.file the name of a target there")
    parser.add_argument("--config.file", default=None, metavar="FILE",
                        help="poll a target of this config with its auth, TLS, method, "
                             "headers, timeout and job filters")
    parser.add_argument("--timeout", default=None, metavar="DURATION",
                        help="how long to wait for the answer, e.g. 5s or 1m30s "
                             "(default: the target's timeout, else 5s)")
    args = parser.parse_args(argv)
    logsetup.setup("error")
    try:
        config = _once_config(getattr(args, "config.file"), args.target, args.timeout)
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def poll() -> tuple[bytes, bool, str | None]:
        poller = Poller(config)
        try:
            await poller.poll_all_once()
            state = next(iter(poller.targets.values()))
            body = exposition.merge([state.published.rendered], openmetrics=False)
            return body, bool(state.health.up), state.health.last_error
        finally:
            await poller.stop()

    body, up, error = asyncio.run(poll())
    sys.stdout.buffer.write(body)
    sys.stdout.flush()
    if not up:
        print(f"sigma-exporter: poll failed: {error}", file=sys.stderr)
        return 1
    return 0


def _once_config(config_file: str | None, target: str, timeout_text: str | None) -> Config:
    timeout = None if timeout_text is None else duration_flag("--timeout", timeout_text)
    if config_file is None:
        return config_from_urls([target], timeout=timeout, interval=max(15.0, timeout or 0))
    config = load_config(config_file)
    chosen = config.target(target)
    if chosen is None:
        raise ConfigError(config_file, "--target", f"no target is named {target!r}",
                          f"use one of: {', '.join(t.name for t in config.targets)}")
    if timeout is not None:
        chosen = replace(chosen, timeout=timeout, interval=max(chosen.interval, timeout))
    return replace(config, targets=(chosen,))


def main_simulate(argv: Sequence[str]) -> int:
    from sigma_exporter.sim.simulator import main_simulate as simulate

    return simulate(list(argv))


def main_demo(argv: Sequence[str]) -> int:
    from sigma_exporter.sim.demo import main_demo as demo

    return demo(list(argv))


SUBCOMMANDS = {
    "check-config": main_check_config,
    "once": main_once,
    "simulate": main_simulate,
    "demo": main_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:])
    with contextlib.suppress(KeyboardInterrupt):
        return main_run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
