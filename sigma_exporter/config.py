"""Typed, validated configuration.

A bad file is refused at start with a message naming the file, the key and
the fix. Secrets (passwords, tokens) come only from files or environment
variables, never from the YAML itself or the command line.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The grammars and the strict reader live in modules of their own; the names
# are re-exported here for the callers that read them as config's.
from sigma_exporter.grammar import DURATION_FIX as DURATION_FIX
from sigma_exporter.grammar import format_duration as format_duration
from sigma_exporter.grammar import parse_duration as parse_duration
from sigma_exporter.redact import redact_url
from sigma_exporter.strictyaml import ConfigError as ConfigError
from sigma_exporter.strictyaml import ConfigErrors as ConfigErrors
from sigma_exporter.strictyaml import Reader, read_text, read_yaml
from sigma_exporter.tlsfiles import TLSFileProblem, check_ca_file, check_cert_and_key

DEFAULT_INTERVAL = 15.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_MAX_JOBS = 500
DEFAULT_MAX_CONCURRENT_POLLS = 256
# Series one target may export (data series; its health series always stay).
# 500 jobs, the default max, make about 9,000; docs/security.md has the cost.
DEFAULT_MAX_SERIES = 20_000
# The zone of the wall times `progress` writes without one (job `created` and
# `startup`, error lines): UTC, or `server` for the zone the dump names. The
# rule and its evidence: source/units.py `wall_clock_zone`, docs/time.md.
DEFAULT_TIMEZONE = "UTC"
SERVER_TIMEZONE = "server"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
# `${VAR}` in a target's name and url, nvml.target and an outputs root's target and
# url: the environment's VAR, read with the file (at start and on each reload). One
# agent file then serves every host: `name: ${HOSTNAME}` is each host's own name.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class AuthConfig:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.bearer_token) if s)


@dataclass(frozen=True, slots=True)
class JobsConfig:
    enabled: bool = True
    include: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None
    max: int = DEFAULT_MAX_JOBS


@dataclass(frozen=True, slots=True)
class TargetConfig:
    name: str
    url: str
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    method: str = "POST"
    tls: TLSConfig = TLSConfig()
    auth: AuthConfig = AuthConfig()
    headers: tuple[tuple[str, str], ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_series: int = DEFAULT_MAX_SERIES
    jobs: JobsConfig = JobsConfig()
    timezone: str = DEFAULT_TIMEZONE  # of progress' wall times; see DEFAULT_TIMEZONE

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


DEFAULT_TOLERANCES: dict[str, float] = {
    "utilization": 0.15,  # ratio (15 points of percent)
    "temperature": 5.0,  # celsius
    "memory_used_bytes": 256 * 1024 * 1024,
    "memory_used_ratio": 0.05,  # of total; the larger of the two applies
    "memory_total_bytes": 1024 * 1024,
}


# Most seconds a poll waits for one NVML read (it takes milliseconds when well).
DEFAULT_NVML_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class NvmlConfig:
    enabled: str = "auto"  # auto | true | false
    target: str | None = None
    window: int = 4
    timeout: float = DEFAULT_NVML_TIMEOUT
    tolerances: tuple[tuple[str, float], ...] = tuple(sorted(DEFAULT_TOLERANCES.items()))

    def tolerance(self, key: str) -> float:
        return dict(self.tolerances)[key]


# Renditions (variant playlists, DASH representations) one job may export;
# beyond it they are counted in sigma_output_renditions_dropped.
DEFAULT_MAX_RENDITIONS = 16
# A playlist or manifest larger than this is refused (too_large). A live
# sliding-window playlist is a few hundred bytes; a day-long EVENT playlist
# of 2 s segments about 2 MiB. Only its head and tail are read either way.
DEFAULT_MAX_PLAYLIST_BYTES = 4 * 1024 * 1024
# Central mode cannot list a folder over HTTP: these names are tried in it,
# in this order (Sigma's `manifest` settings name them but `progress` does
# not echo them).
DEFAULT_PLAYLIST_NAMES = ("master.m3u8", "playlist.m3u8", "index.m3u8", "manifest.mpd",
                          "index.mpd")


@dataclass(frozen=True, slots=True)
class OutputRoot:
    """A folder Sigma's HLS/DASH outputs are written under, and where to read them.

    Only folders under `path` are ever read: Sigma's answer names the folders,
    and it is not trusted. With `url` they are fetched from there instead
    (central mode: `path`'s sub-folder `a/b/` is `url` + `a/b/`).
    """

    path: str  # absolute, normalised, no trailing slash
    url: str | None = None  # http(s), ends with "/"
    target: str | None = None  # the target it serves; None: the only target


@dataclass(frozen=True, slots=True)
class OutputsConfig:
    roots: tuple[OutputRoot, ...] = ()
    max_renditions: int = DEFAULT_MAX_RENDITIONS
    max_playlist_bytes: int = DEFAULT_MAX_PLAYLIST_BYTES
    playlist_names: tuple[str, ...] = DEFAULT_PLAYLIST_NAMES

    def roots_of(self, target: str, only_target: bool) -> tuple[OutputRoot, ...]:
        """The roots that serve `target` (a root without `target` serves the only one)."""
        return tuple(r for r in self.roots
                     if r.target == target or (r.target is None and only_target))


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[TargetConfig, ...]
    nvml: NvmlConfig = NvmlConfig()
    max_concurrent_polls: int = DEFAULT_MAX_CONCURRENT_POLLS
    source: str = "<flags>"
    outputs: OutputsConfig = OutputsConfig()

    def target(self, name: str) -> TargetConfig | None:
        for target in self.targets:
            if target.name == name:
                return target
        return None

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for t in self.targets for s in t.auth.secrets())


def host_name() -> str:
    """What `${HOSTNAME}` means: the environment's HOSTNAME (containers and Kubernetes
    set it), else the kernel's host name, as `hostname` prints it (systemd and
    most shells do not export HOSTNAME)."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def expand(r: Reader, value: object, key: str) -> str:
    """A string with each `${VAR}` replaced by the environment's VAR; unset is an error."""
    text = r.string(value, key)

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        found = host_name() if name == "HOSTNAME" else os.environ.get(name)
        if not found:
            raise r.error(key, f"${{{name}}}: the environment variable {name} is not set",
                          f"set {name} in the exporter's environment (systemd: "
                          f"Environment={name}=..., Kubernetes: env), or write the value "
                          "itself")
        return found

    return _VARIABLE.sub(variable, text)


def _secret(r: Reader, block: Mapping[str, Any], name: str, key: str) -> str | None:
    """`NAME_file` or `NAME_env`; a literal `NAME` is refused."""
    if name in block:
        raise r.error(f"{key}.{name}", "secrets may not be written in the config file",
                      f"put it in a file and use `{name}_file: /path`, or in an "
                      f"environment variable and use `{name}_env: VARIABLE`")
    path, env = block.get(f"{name}_file"), block.get(f"{name}_env")
    if path is not None and env is not None:
        raise r.error(f"{key}.{name}_file", f"both {name}_file and {name}_env are set",
                      "keep one of them")
    if path is not None:
        path = r.string(path, f"{key}.{name}_file")
        try:
            secret = read_text(path).strip()
        except OSError as exc:
            raise r.error(f"{key}.{name}_file", f"cannot read {path}: {exc.strerror}",
                          "check the path and that the exporter's user may read it") from None
        except UnicodeDecodeError:
            raise r.error(f"{key}.{name}_file", f"{path} is not UTF-8 text",
                          "save the secret as UTF-8") from None
        if not secret:  # e.g. a Kubernetes Secret or a vault agent that has not written it
            raise r.error(f"{key}.{name}_file", f"{path} is empty",
                          f"write the {name.replace('_', ' ')} in it, on one line")
        return secret
    if env is not None:
        env = r.string(env, f"{key}.{name}_env")
        value = os.environ.get(env)
        if value is None:
            raise r.error(f"{key}.{name}_env", f"environment variable {env} is not set",
                          f"export {env}=... before starting the exporter")
        return value
    return None


# --- sections ------------------------------------------------------------------

_TARGET_KEYS = {"name", "url", "interval", "timeout", "method", "tls", "auth", "headers",
                "max_body_bytes", "max_series", "jobs", "timezone"}
_DEFAULT_KEYS = _TARGET_KEYS - {"name", "url"}
_TLS_KEYS = {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}
_AUTH_KEYS = {"username", "password", "password_file", "password_env",
              "bearer_token", "bearer_token_file", "bearer_token_env"}
_JOBS_KEYS = {"enabled", "include", "exclude", "max"}
_NVML_KEYS = {"enabled", "target", "window", "timeout", "tolerances"}
_TOP_KEYS = {"targets", "defaults", "nvml", "poll", "outputs"}
_OUTPUTS_KEYS = {"roots", "max_renditions", "max_playlist_bytes", "playlist_names"}
_ROOT_KEYS = {"path", "url", "target"}
_POLL_KEYS = {"max_concurrent"}


def _tls(r: Reader, raw: object, key: str, base: TLSConfig) -> TLSConfig:
    block = r.mapping(raw, key, _TLS_KEYS)
    values: dict[str, Any] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        if name in block:
            values[name] = r.file(block[name], f"{key}.{name}")
    if "insecure_skip_verify" in block:
        values["insecure_skip_verify"] = r.boolean(block["insecure_skip_verify"],
                                                   f"{key}.insecure_skip_verify")
    tls = replace(base, **values)
    if tls.key_file and not tls.cert_file:
        raise r.error(f"{key}.key_file", "key_file without cert_file",
                      "set cert_file to the client certificate too")
    # Read now as the polls will: a junk CA or a key of another certificate is a
    # config mistake (exit 2, or a refused reload), not a failure of every poll.
    try:
        if tls.ca_file:
            check_ca_file(tls.ca_file)
        if tls.cert_file:
            check_cert_and_key(tls.cert_file, tls.key_file)
    except TLSFileProblem as exc:
        raise r.error(f"{key}.{exc.which}_file", exc.problem, exc.fix) from None
    return tls


def _auth(r: Reader, raw: object, key: str) -> AuthConfig:
    block = r.mapping(raw, key, _AUTH_KEYS)
    if not block:
        return AuthConfig()
    username = r.string(block["username"], f"{key}.username") if "username" in block else None
    password = _secret(r, block, "password", key)
    token = _secret(r, block, "bearer_token", key)
    if token is not None and (username is not None or password is not None):
        raise r.error(key, "both basic auth and a bearer token are set", "keep one of them")
    if password is not None and username is None:
        raise r.error(f"{key}.username", "a password needs a username",
                      "add `username: NAME`")
    return AuthConfig(username, password, token)


def _jobs(r: Reader, raw: object, key: str, base: JobsConfig) -> JobsConfig:
    block = r.mapping(raw, key, _JOBS_KEYS)
    values: dict[str, Any] = {}
    if "enabled" in block:
        values["enabled"] = r.boolean(block["enabled"], f"{key}.enabled")
    for name in ("include", "exclude"):
        if name in block:
            values[name] = r.regex(block[name], f"{key}.{name}")
    if "max" in block:
        values["max"] = r.integer(block["max"], f"{key}.max", minimum=0)
    return replace(base, **values)


def _headers(r: Reader, raw: object, key: str) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in r.mapping(raw, key, None).items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9-]+$", name):
            raise r.error(f"{key}.{name}", "not a valid header name", "use letters, digits, -")
        if name.lower() == "authorization":
            raise r.error(f"{key}.{name}", "credentials may not be written in the config file",
                          "use auth.bearer_token_file or auth.password_file instead")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise r.error(f"{key}.{name}", "header value must be text", "quote the value")
        if any(c in str(value) for c in "\r\n\0"):
            # Sent raw, a line break would end the header and start another.
            raise r.error(f"{key}.{name}", "header value contains a line break or NUL",
                          "write the value on one line")
        out.append((name, str(value)))
    return tuple(out)


def _timezone(r: Reader, raw: object, key: str) -> str:
    """`UTC`, `server`, or an IANA zone name this host's tz database knows."""
    fix = (f"write `timezone: {DEFAULT_TIMEZONE}` (the default), `timezone: "
           f"{SERVER_TIMEZONE}` (the zone the server's dump names) or an IANA name such "
           "as `Asia/Ho_Chi_Minh` (docs/time.md)")
    if not isinstance(raw, str) or not raw.strip():
        raise r.error(key, f"{raw!r} is not a time zone", fix)
    name = raw.strip()
    if name.lower() == SERVER_TIMEZONE:
        return SERVER_TIMEZONE
    if name.upper() == DEFAULT_TIMEZONE:
        return DEFAULT_TIMEZONE
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise r.error(key, f"{name!r} is not a time zone this host knows", fix) from None
    return name


def _target_fields(r: Reader, block: Mapping[str, Any], key: str,
                   base: TargetConfig) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "interval" in block:
        values["interval"] = r.duration(block["interval"], f"{key}.interval")
    if "timeout" in block:
        values["timeout"] = r.duration(block["timeout"], f"{key}.timeout")
    if "method" in block:
        method = str(block["method"]).upper()
        if method not in ("GET", "POST"):
            raise r.error(f"{key}.method", f"{block['method']!r} is not GET or POST",
                          "write `method: POST` (default) or `method: GET`")
        values["method"] = method
    if "tls" in block:
        values["tls"] = _tls(r, block["tls"], f"{key}.tls", base.tls)
    if "auth" in block:
        values["auth"] = _auth(r, block["auth"], f"{key}.auth")
    if "headers" in block:
        values["headers"] = base.headers + _headers(r, block["headers"], f"{key}.headers")
    if "max_body_bytes" in block:
        values["max_body_bytes"] = r.size(block["max_body_bytes"], f"{key}.max_body_bytes")
    if "max_series" in block:
        values["max_series"] = r.integer(block["max_series"], f"{key}.max_series")
    if "jobs" in block:
        values["jobs"] = _jobs(r, block["jobs"], f"{key}.jobs", base.jobs)
    if "timezone" in block:
        values["timezone"] = _timezone(r, block["timezone"], f"{key}.timezone")
    return values


def check_url(r: Reader, url: object, key: str) -> str:
    text = r.string(url, key)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.error(key, f"{redact_url(text)!r} is not an http(s) URL",
                      "write e.g. `http://sigma-01.example:9999`")
    if parts.username or parts.password:
        raise r.error(key, "credentials may not be written in the URL",
                      "use auth.username with auth.password_file or auth.password_env")
    del port
    return text


def parse_config(data: object, source: str) -> Config:
    """A validated Config; raises ConfigErrors listing every mistake of the file.

    Each section and each target is checked on its own, so one run reports
    all of them (a target's mistakes stop at its first: later keys of a
    broken target would mostly repeat it).
    """
    r = Reader(source)
    errors: list[ConfigError] = []
    top = r.mapping(data, "", _TOP_KEYS)
    base = TargetConfig(name="", url="")
    if "defaults" in top:
        try:
            defaults = r.mapping(top["defaults"], "defaults", _DEFAULT_KEYS)
            base = replace(base, **_target_fields(r, defaults, "defaults", base))
            if "timeout" in defaults:
                _check_timeout(r, base, "defaults")
        except ConfigError as exc:
            errors.append(exc)
    raw_targets = top.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        errors.append(r.error("targets", "at least one target is required",
                              "add `targets:` with entries like `- name: sigma-01` and "
                              "`url: http://HOST:9999`"))
        raw_targets = []
    targets: list[TargetConfig] = []
    names: set[str] = set()
    for i, raw in enumerate(raw_targets):
        raw_name = raw.get("name") if isinstance(raw, dict) else None
        try:
            target = _target(r, raw, f"targets[{i}]", base, names)
        except ConfigError as exc:
            if isinstance(raw_name, str) and raw_name and not _VARIABLE.search(raw_name):
                exc = ConfigError(exc.source, exc.key, exc.problem, exc.fix, raw_name)
            errors.append(exc)
            continue
        names.add(target.name)
        targets.append(target)
    nvml = NvmlConfig()
    max_concurrent = DEFAULT_MAX_CONCURRENT_POLLS
    try:
        nvml = _nvml(r, top.get("nvml"), names)
    except ConfigError as exc:
        errors.append(exc)
    outputs = OutputsConfig()
    try:
        outputs = _outputs(r, top.get("outputs"), [t.name for t in targets])
    except ConfigError as exc:
        errors.append(exc)
    try:
        if "poll" in top:
            poll = r.mapping(top["poll"], "poll", _POLL_KEYS)
            if "max_concurrent" in poll:
                max_concurrent = r.integer(poll["max_concurrent"], "poll.max_concurrent")
    except ConfigError as exc:
        errors.append(exc)
    if errors:
        raise ConfigErrors(errors)
    return Config(tuple(targets), nvml, max_concurrent, source, outputs)


def _target(r: Reader, raw: object, key: str, base: TargetConfig,
            names: set[str]) -> TargetConfig:
    block = r.mapping(raw, key, _TARGET_KEYS)
    if "url" not in block:
        raise r.error(f"{key}.url", "missing", "add `url: http://HOST:9999`")
    url = check_url(r, expand(r, block["url"], f"{key}.url"), f"{key}.url")
    raw_name = block.get("name")
    name = urlsplit(url).netloc if raw_name is None else expand(r, raw_name, f"{key}.name")
    if not _NAME.match(name):
        shown = repr(name) if name == raw_name else f"{name!r} (from {raw_name!r})"
        raise r.error(f"{key}.name", f"{shown} is not a valid target name",
                      "use letters, digits, '.', '_', ':' and '-' (at most 128)"
                      + ("; `${HOSTNAME}` (with braces) is the host's name"
                         if "$" in name else ""))
    if name in names:
        raise r.error(f"{key}.name", f"target name {name!r} is used twice",
                      "give every target a unique name")
    target = replace(base, name=name, url=url, **_target_fields(r, block, key, base))
    if "timeout" in block:
        _check_timeout(r, target, key)
    else:  # as Prometheus does with scrape_timeout: never longer than the interval
        target = replace(target, timeout=min(target.timeout, target.interval))
    return target


def _check_timeout(r: Reader, target: TargetConfig, key: str) -> None:
    """An explicit timeout longer than the interval is a mistake (Prometheus agrees)."""
    if target.timeout > target.interval:
        raise r.error(f"{key}.timeout", f"timeout {format_duration(target.timeout)} is longer "
                      f"than the interval {format_duration(target.interval)}",
                      "make the timeout at most the interval, or leave it out "
                      "(it then defaults to the smaller of 5s and the interval)")


def _nvml(r: Reader, raw: object, names: set[str]) -> NvmlConfig:
    block = r.mapping(raw, "nvml", _NVML_KEYS)
    values: dict[str, Any] = {}
    if "enabled" in block:
        enabled = block["enabled"]
        text = {True: "true", False: "false"}.get(enabled, enabled) \
            if isinstance(enabled, bool) else str(enabled).lower()
        if text not in ("auto", "true", "false"):
            raise r.error("nvml.enabled", f"{enabled!r} is not auto, true or false",
                          "write `enabled: auto` (default), `true` or `false`")
        values["enabled"] = text
    if "target" in block:
        target = expand(r, block["target"], "nvml.target")
        if target not in names:
            raise r.error("nvml.target", f"no target is named {target!r}",
                          f"use one of: {', '.join(sorted(names))}")
        values["target"] = target
    if "window" in block:
        values["window"] = r.integer(block["window"], "nvml.window")
    if "timeout" in block:
        values["timeout"] = r.duration(block["timeout"], "nvml.timeout")
    if "tolerances" in block:
        tol = r.mapping(block["tolerances"], "nvml.tolerances", set(DEFAULT_TOLERANCES))
        merged = dict(DEFAULT_TOLERANCES)
        for k, v in tol.items():
            merged[k] = r.number(v, f"nvml.tolerances.{k}", example=DEFAULT_TOLERANCES[k])
        values["tolerances"] = tuple(sorted(merged.items()))
    return NvmlConfig(**values)


def _outputs(r: Reader, raw: object, names: list[str]) -> OutputsConfig:
    block = r.mapping(raw, "outputs", _OUTPUTS_KEYS)
    values: dict[str, Any] = {}
    if "max_renditions" in block:
        values["max_renditions"] = r.integer(block["max_renditions"], "outputs.max_renditions")
    if "max_playlist_bytes" in block:
        values["max_playlist_bytes"] = r.size(block["max_playlist_bytes"],
                                              "outputs.max_playlist_bytes")
    if "playlist_names" in block:
        raw_names = block["playlist_names"]
        if not isinstance(raw_names, list) or not raw_names:
            raise r.error("outputs.playlist_names", "must be a list of file names",
                          "write e.g. `playlist_names: [master.m3u8, index.m3u8]`")
        found = []
        for i, name in enumerate(raw_names):
            key = f"outputs.playlist_names[{i}]"
            name = r.string(name, key)
            if "/" in name or name in (".", "..") or not name.endswith((".m3u8", ".mpd")):
                raise r.error(key, f"{name!r} is not a playlist file name",
                              "write a bare file name ending in .m3u8 or .mpd")
            found.append(name)
        values["playlist_names"] = tuple(found)
    raw_roots = block.get("roots", [])
    if not isinstance(raw_roots, list):
        raise r.error("outputs.roots", "must be a list",
                      "write `roots:` with entries like `- path: /mnt/ramdisk`")
    roots: list[OutputRoot] = []
    for i, raw_root in enumerate(raw_roots):
        roots.append(_root(r, raw_root, f"outputs.roots[{i}]", names, roots))
    return OutputsConfig(tuple(roots), **values)


def _root(r: Reader, raw: object, key: str, names: list[str],
          before: list[OutputRoot]) -> OutputRoot:
    block = r.mapping(raw, key, _ROOT_KEYS)
    if "path" not in block:
        raise r.error(f"{key}.path", "missing",
                      "add `path: /mnt/ramdisk` (the folder Sigma writes its HLS/DASH under)")
    path = r.string(block["path"], f"{key}.path")
    normal = os.path.normpath(path)
    if not os.path.isabs(path) or normal in ("/", "//") or "\0" in path:
        raise r.error(f"{key}.path", f"{path!r} is not an absolute folder below /",
                      "name the folder the outputs are written under, e.g. /mnt/ramdisk")
    url = None
    if "url" in block:
        url = check_url(r, expand(r, block["url"], f"{key}.url"), f"{key}.url")
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise r.error(f"{key}.url", "a root URL has no query or fragment",
                          "write the origin's base, e.g. `http://sigma-01:8080/`")
        url = url if url.endswith("/") else url + "/"
    target = None
    if "target" in block:
        target = expand(r, block["target"], f"{key}.target")
        if target not in names:
            raise r.error(f"{key}.target", f"no target is named {target!r}",
                          f"use one of: {', '.join(sorted(names))}")
    elif len(names) > 1:
        raise r.error(f"{key}.target", "several targets, and this root names none",
                      "add `target: NAME`: the target whose outputs are under this path "
                      "(fetched from its `url`, or read here when the target runs on this host)")
    root = OutputRoot(normal, url, target)
    for other in before:
        if other.path == root.path and other.target == root.target:
            raise r.error(f"{key}.path", f"{path!r} is given twice for the same target",
                          "give each folder once per target")
    return root


def load_config(path: str, given_as: str = "--config.file") -> Config:
    """Read and validate a YAML config file; raises ConfigError.

    `given_as` is how the user named the file (a flag or a subcommand), for the
    fix when it cannot be read."""
    data = read_yaml(path, given_as)
    if data is None:
        raise ConfigError(path, "targets", "the file is empty",
                          "add `targets:` with at least one `- url: http://HOST:9999`")
    return parse_config(data, path)


def config_from_urls(urls: list[str], timeout: float | None = None,
                     interval: float | None = None) -> Config:
    """A config from `--target URL` flags (no file)."""
    r = Reader("--target")
    targets = []
    names: set[str] = set()
    for url in urls:
        checked = check_url(r, url, "--target")
        name = urlsplit(checked).netloc
        if name in names:
            raise r.error("--target", f"{name} is given twice", "give each URL once")
        names.add(name)
        target = TargetConfig(name=name, url=checked)
        if interval is not None:
            target = replace(target, interval=interval)
        if timeout is not None:
            if timeout > target.interval:
                raise r.error("--timeout", f"{format_duration(timeout)} is longer than the "
                              f"interval {format_duration(target.interval)}",
                              "give a shorter --timeout")
            target = replace(target, timeout=timeout)
        else:
            target = replace(target, timeout=min(target.timeout, target.interval))
        targets.append(target)
    return Config(tuple(targets), source="--target")


# The exit status of a refused configuration (a flag, the file, a file it names):
# systemd's RestartPreventExitStatus=2 then stops restarting a unit that cannot start.
EXIT_CONFIG = 2


def duration_flag(flag: str, text: str) -> float:
    """A flag's Prometheus duration (the grammar of the config file), above zero."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ConfigError(flag, text, "not a duration above zero", DURATION_FIX)
    return seconds
