"""Command line: the exporter, and its `check-config`, `once`, `simulate`, `demo`.

Flags follow the exporter convention (`--config.file`, `--web.listen-address`,
...). Each flag falls back to an environment variable `SIGMA_EXPORTER_*`
(dots and dashes become underscores), then to its default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from . import __version__, exposition, logsetup
from .config import Config, ConfigError, config_from_urls, load_config
from .poller import AfterDump, Poller
from .redact import redact_url
from .serve import Exporter, build_app

log = logging.getLogger("sigma_exporter")

DEFAULT_LISTEN = ":19911"  # outside the 9100-9999 range of well-known exporter ports
ENV_PREFIX = "SIGMA_EXPORTER_"
EXIT_CONFIG = 2


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
    )
    _add(parser, "--config.file", None, "YAML file listing the Sigma servers")
    parser.add_argument("--target", action="append", default=None, metavar="URL",
                        help="a Sigma server URL, repeatable, for use without a config file "
                             f"(env {ENV_PREFIX}TARGETS, comma-separated)")
    _add(parser, "--web.listen-address", DEFAULT_LISTEN, "address to serve metrics on")
    _add(parser, "--web.telemetry-path", "/metrics", "path of the metrics endpoint")
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
    if not path.startswith("/") or path in ("/", "/probe", "/-/healthy", "/-/ready"):
        raise ConfigError("--web.telemetry-path", path, "must be a path of its own",
                          "write e.g. `/metrics`")


async def serve(config: Config, listen: str, telemetry_path: str,
                config_file: str | None, after_dump: AfterDump | None = None,
                ready: asyncio.Event | None = None) -> None:
    """Run the poll loop and the HTTP server until SIGINT/SIGTERM."""
    host, port = _split_listen(listen)
    poller = Poller(config, after_dump)
    exporter = Exporter(poller, telemetry_path)
    runner = web.AppRunner(build_app(exporter), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("listening address=%s targets=%d version=%s", listen, len(config.targets),
             __version__)
    for target in config.targets:
        log.info("watching target=%s url=%s interval=%gs", target.name,
                 redact_url(target.url), target.interval)
    poller.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def reload() -> None:
        if not config_file:
            log.warning("SIGHUP ignored: no --config.file to reload")
            return
        try:
            new = load_config(config_file)
        except ConfigError as exc:
            exporter.reload.successful = False
            poller.generation += 1
            log.error("reload failed, keeping the running config: %s", exc)
            return
        await poller.reload(new)
        exporter.reload.successful = True
        exporter.reload.last_success = time.time()
        log.info("config reloaded targets=%d", len(new.targets))

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await poller.stop()
        await runner.cleanup()


def main_run(argv: Sequence[str]) -> int:
    args = run_parser().parse_args(argv)
    try:
        _validate_choices(args)
        logsetup.setup(getattr(args, "log.level"), getattr(args, "log.format"))
        config = resolve_config(getattr(args, "config.file"), args.target)
        _split_listen(getattr(args, "web.listen_address"))
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from .agent import after_dump_hook  # late: imports NVML bindings only when running

    try:
        hook = after_dump_hook(config)
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        asyncio.run(serve(config, getattr(args, "web.listen_address"),
                          getattr(args, "web.telemetry_path"), getattr(args, "config.file"),
                          hook))
    except OSError as exc:
        print(f"sigma-exporter: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


def main_check_config(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sigma-exporter check-config",
                                     description="Validate a config file and exit.")
    parser.add_argument("file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: OK, {len(config.targets)} target(s)")
    for target in config.targets:
        auth = "bearer token" if target.auth.bearer_token else (
            "basic auth" if target.auth.username else "no auth")
        print(f"  {target.name}: {redact_url(target.url)} every {target.interval:g}s, "
              f"timeout {target.timeout:g}s, {target.method}, {auth}")
    return 0


def main_once(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter once",
        description="Poll one server once, print its exposition; exit 0 when up, 1 when not.")
    parser.add_argument("--target", required=True, metavar="URL")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    logsetup.setup("error")
    try:
        config = config_from_urls([args.target], timeout=args.timeout,
                                  interval=max(15.0, args.timeout or 0))
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


def main_simulate(argv: Sequence[str]) -> int:
    from .simulator import main_simulate as simulate

    return simulate(list(argv))


def main_demo(argv: Sequence[str]) -> int:
    from .demo import main_demo as demo

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
