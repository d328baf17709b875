"""Command line: the exporter, and its `check-config`, `once`, `simulate`, `demo`.

It parses and checks the flags into `app.Settings` and hands them to
`app.run`, which owns the process. The server stack (`app`, aiohttp, the
scheduler) is imported only to run the exporter: `check-config`, `once` and
`simulate` start without it (`oneshot.py` does their work).

Flags follow the exporter convention (`--config.file`, `--web.listen-address`,
...). Each flag falls back to an environment variable `SIGMA_EXPORTER_*`
(dots and dashes become underscores), then to its default.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sigma_exporter import buildinfo, logsetup, oneshot
from sigma_exporter.config import (
    EXIT_CONFIG,
    Config,
    ConfigError,
    config_from_urls,
    duration_flag,
    format_duration,
    load_config,
)
from sigma_exporter.helptext import HelpFormatter
from sigma_exporter.redact import install_log_filter, redact_url
from sigma_exporter.web.webconfig import load_web_config

if TYPE_CHECKING:
    from sigma_exporter import app

log = logging.getLogger("sigma_exporter")

DEFAULT_READ_TIMEOUT = "10s"
ENV_PREFIX = "SIGMA_EXPORTER_"
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
    from sigma_exporter import app

    parser = argparse.ArgumentParser(
        prog="sigma-exporter",
        description="Prometheus exporter for Sigma Media Server. Subcommands: check-config "
                    "FILE, once, simulate, demo (see `sigma-exporter SUBCOMMAND --help`).",
        formatter_class=HelpFormatter,
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
                             f"{app.DEFAULT_LISTEN}; env {ENV_PREFIX}WEB_LISTEN_ADDRESS, "
                             "one address)")
    parser.add_argument("--web.systemd-socket", action="store_true",
                        default=(_env("--web.systemd-socket") or "").lower() in TRUE,
                        help="serve on the listening sockets systemd passes (socket "
                             "activation) instead of --web.listen-address "
                             f"(env {ENV_PREFIX}WEB_SYSTEMD_SOCKET=true)")
    _add(parser, "--web.telemetry-path", "/metrics", "path of the metrics endpoint")
    _add(parser, "--web.config.file", None,
         "exporter-toolkit web config (TLS, basic auth, headers); re-read when it changes")
    _add(parser, "--web.max-requests", str(app.DEFAULT_MAX_REQUESTS),
         "most requests handled at once; more get 503 (0: no limit)")
    _add(parser, "--web.read-timeout", DEFAULT_READ_TIMEOUT,
         "time a client has to send a complete request (and to finish a TLS handshake); "
         "idle keep-alive connections close after it too")
    _add(parser, "--log.level", "info", "debug, info, warn or error")
    _add(parser, "--log.format", "logfmt", "logfmt or json")
    parser.add_argument("--version", action=_VersionAction)
    return parser


class _VersionAction(argparse.Action):
    """--version: Prometheus' multi-line layout, worked out only when asked (git)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version, revision, Python and platform and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(buildinfo.version_text())
        parser.exit()


def listen_addresses(args: argparse.Namespace) -> list[str]:
    """--web.listen-address, each checked; the environment's one or the default without."""
    from sigma_exporter import app

    given: list[str] | None = getattr(args, "web.listen_address")
    addresses = given or [_env("--web.listen-address") or app.DEFAULT_LISTEN]
    for address in addresses:
        app.check_listen_address(address)
    if len(set(addresses)) != len(addresses):
        raise ConfigError("--web.listen-address", ", ".join(addresses), "given twice",
                          "give each address once")
    return addresses


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


def main_run(argv: Sequence[str]) -> int:
    args = run_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from sigma_exporter import app

    return app.run(settings)


def _settings(args: argparse.Namespace) -> app.Settings:
    """The flags, checked and read into Settings; raises ConfigError naming the flag."""
    from sigma_exporter import app

    _validate_choices(args)
    logsetup.setup(getattr(args, "log.level"), getattr(args, "log.format"))
    config = resolve_config(getattr(args, "config.file"), args.target)
    listens = listen_addresses(args)
    sockets = app.systemd_sockets() if getattr(args, "web.systemd_socket") else ()
    max_requests = _count_flag("--web.max-requests", getattr(args, "web.max_requests"))
    read_timeout = duration_flag("--web.read-timeout", getattr(args, "web.read_timeout"))
    web_config_file = getattr(args, "web.config.file")
    install_log_filter(config.secrets())
    web_config = app.watch_web_config(web_config_file) if web_config_file else None
    return app.Settings(config, tuple(listens), getattr(args, "web.telemetry_path"),
                        getattr(args, "config.file"), web_config, max_requests, read_timeout,
                        sockets)


def main_check_config(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter check-config",
        description="Validate a config file as start-up does (NVML included) and exit: "
                    "0 when valid, 2 when not.",
        formatter_class=HelpFormatter)
    parser.add_argument("file", nargs="?", default=None,
                        help="the YAML file given to --config.file")
    parser.add_argument("--config.file", default=None, metavar="FILE",
                        help="the same file, named as the exporter and `once` take it")
    parser.add_argument("--web.config.file", default=None, metavar="FILE",
                        help="also validate this web config (TLS, basic auth, headers)")
    parser.add_argument("--syntax-only", action="store_true",
                        help="check the files only, not this host (NVML): for a file made "
                             "elsewhere than where it runs, e.g. in CI or on a build host")
    args = parser.parse_args(argv)
    flag_file = getattr(args, "config.file")
    if (args.file is None) == (flag_file is None):
        parser.error("give the config file once: `check-config FILE` or "
                     "`check-config --config.file FILE`")
    file, given_as = (args.file, "check-config") if args.file else (flag_file, "--config.file")
    web_file = getattr(args, "web.config.file")
    try:
        config = load_config(file, given_as)
        web_cfg = load_web_config(web_file) if web_file else None
        nvml = ("not checked (--syntax-only); start-up checks it" if args.syntax_only
                else oneshot.check_nvml(config))
    except ConfigError as exc:
        print(f"sigma-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if web_cfg is not None:
        print(f"{web_file}: OK, tls {'on' if web_cfg.tls else 'off'}, "
              f"{len(web_cfg.users)} basic auth user(s), {len(web_cfg.headers)} header(s)")
    print(f"{file}: OK, {len(config.targets)} target(s)")
    for target in config.targets:
        auth = "bearer token" if target.auth.bearer_token else (
            "basic auth" if target.auth.username else "no auth")
        print(f"  {target.name}: {redact_url(target.url)} every "
              f"{format_duration(target.interval)}, timeout {format_duration(target.timeout)}, "
              f"{target.method}, {auth}")
    print(f"  nvml: {nvml}")
    for root in config.outputs.roots:
        where = f"fetched from {redact_url(root.url)}" if root.url else "read on this host"
        print(f"  outputs root {root.path}: {where}, for "
              f"{root.target or config.targets[0].name}")
    print("Not checked: whether each server answers and accepts the credentials; "
          f"try `sigma-exporter once --config.file {file} --target NAME`.")
    return 0


def main_once(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter once",
        description="Poll one server once, print its exposition, then a one-line verdict "
                    "on stderr; exit 0 when up, 1 when not, 2 for a bad flag or config.",
        formatter_class=HelpFormatter)
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

    outputs: list[str] = []
    try:
        body, up, verdict = oneshot.poll_once(config, outputs)
    except Exception as exc:  # a bug of ours: one line, never a traceback
        print(f"sigma-exporter once: internal error: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    sys.stdout.buffer.write(body)
    sys.stdout.flush()
    for finding in outputs:  # the outputs source's problems, stale playlists first
        print(f"sigma-exporter once: output: {finding}", file=sys.stderr)
    # The verdict last, on stderr: seen after the exposition, never in a pipe's data.
    print(f"sigma-exporter once: {verdict}", file=sys.stderr)
    return 0 if up else 1


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
