"""Typed, validated configuration.

A bad file is refused at start with a message naming the file, the key and
the fix. Secrets (passwords, tokens) come only from files or environment
variables, never from the YAML itself or the command line.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from sigma_exporter.redact import redact_url

DEFAULT_INTERVAL = 15.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_MAX_JOBS = 500
DEFAULT_MAX_CONCURRENT_POLLS = 256
# Series one target may export (data series; its health series always stay).
# 500 jobs, the default max, make about 9,000; docs/security.md has the cost.
DEFAULT_MAX_SERIES = 20_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


class ConfigError(Exception):
    """A configuration mistake: where it is and how to fix it.

    `target` names the target the key belongs to, when it has a name, so a
    message about `targets[7].timeout` also says which server that is.
    """

    def __init__(self, source: str, key: str, problem: str, fix: str,
                 target: str | None = None) -> None:
        self.source, self.key, self.problem, self.fix = source, key, problem, fix
        self.target = target
        where = f"{key} (target {target})" if target else key
        super().__init__(f"{source}: {where}: {problem}. Fix: {fix}")


class ConfigErrors(ConfigError):
    """Every mistake found in one file, so one run shows them all.

    It reads as its first mistake (key, problem, fix) for callers that want
    one; its message lists each on a line of its own.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.source, first.key, first.problem, first.fix, first.target)
        self.errors = errors
        if len(errors) > 1:
            self.args = (f"{len(errors)} problems:\n" + "\n".join(f"  {e}" for e in errors),)


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


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[TargetConfig, ...]
    nvml: NvmlConfig = NvmlConfig()
    max_concurrent_polls: int = DEFAULT_MAX_CONCURRENT_POLLS
    source: str = "<flags>"

    def target(self, name: str) -> TargetConfig | None:
        for target in self.targets:
            if target.name == name:
                return target
        return None

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for t in self.targets for s in t.auth.secrets())


# --- durations: Prometheus' grammar, everywhere ------------------------------

# `1y2w3d4h5m6s7ms`: each unit at most once, largest first, whole numbers
# (Prometheus' model.ParseDuration). Tokenised in one linear pass: no
# backtracking regular expression over text a user (or a file) supplies.
_DURATION_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0,
                   "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_ORDER = tuple(_DURATION_UNITS)
_DURATION_TOKEN = re.compile(r"([0-9]+)(ms|[ywdhms])")
DURATION_FIX = "write a Prometheus duration such as `15s`, `1m30s` or `500ms`"


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; ValueError (with the reason) if it is not one."""
    if text == "0":
        return 0.0
    if not text or len(text) > 64:
        raise ValueError("not a duration")
    seconds, position, last = 0.0, 0, -1
    for match in _DURATION_TOKEN.finditer(text):
        unit = _DURATION_ORDER.index(match.group(2))
        if match.start() != position or unit <= last:
            raise ValueError("units must each appear once, largest first")
        seconds += int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position, last = match.end(), unit
    if position != len(text):
        raise ValueError("not a duration")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as Prometheus writes it: `1m30s`, `500ms`, `0s`."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    out = []
    for unit, size in _DURATION_UNITS.items():
        count, millis = divmod(millis, round(size * 1000))
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


# --- value readers -----------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3,
                "kb": 1024, "mb": 1024**2, "gb": 1024**3}


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(self.source, key, problem, fix)

    def mapping(self, value: object, key: str, allowed: set[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, not {type(value).__name__}",
                             f"write `{key}:` followed by indented `name: value` lines")
        for k in value:
            if k not in allowed:
                raise self.error(f"{key}.{k}" if key else str(k), "unknown key",
                                 f"use one of: {', '.join(sorted(allowed))}")
        return value

    def duration(self, value: object, key: str) -> float:
        if not isinstance(value, str):  # a bare YAML number has no unit
            raise self.error(key, f"{value!r} is not a duration", DURATION_FIX)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(key, f"{value!r} is not a duration ({exc})", DURATION_FIX) \
                from None
        if seconds <= 0:
            raise self.error(key, "must be greater than zero", "write e.g. `15s`")
        return seconds

    def size(self, value: object, key: str) -> int:
        match = _SIZE.match(str(value)) if not isinstance(value, bool) else None
        if not match:
            raise self.error(key, f"{value!r} is not a size", "write e.g. `8MiB` or `8388608`")
        size = int(match.group(1)) * _SIZE_FACTOR[(match.group(2) or "b").lower()]
        if size <= 0:
            raise self.error(key, "must be greater than zero", "write e.g. `8MiB`")
        return size

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"{value!r} is not true or false", "write `true` or `false`")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string", f"write `{key}: some-text`")
        return value

    def integer(self, value: object, key: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"{value!r} is not a whole number >= {minimum}",
                             f"write e.g. `{key.rsplit('.', 1)[-1]}: {max(minimum, 4)}`")
        return value

    def regex(self, value: object, key: str) -> re.Pattern[str]:
        text = self.string(value, key)
        try:
            return re.compile(text)
        except re.error as exc:
            raise self.error(key, f"invalid regular expression: {exc}",
                             "write a Python regular expression, e.g. `^VTV`") from None

    def secret(self, block: Mapping[str, Any], name: str, key: str) -> str | None:
        """`NAME_file` or `NAME_env`; a literal `NAME` is refused."""
        if name in block:
            raise self.error(f"{key}.{name}", "secrets may not be written in the config file",
                             f"put it in a file and use `{name}_file: /path`, or in an "
                             f"environment variable and use `{name}_env: VARIABLE`")
        path, env = block.get(f"{name}_file"), block.get(f"{name}_env")
        if path is not None and env is not None:
            raise self.error(f"{key}.{name}_file", f"both {name}_file and {name}_env are set",
                             "keep one of them")
        if path is not None:
            path = self.string(path, f"{key}.{name}_file")
            try:
                return read_text(path).strip()
            except OSError as exc:
                raise self.error(f"{key}.{name}_file", f"cannot read {path}: {exc.strerror}",
                                 "check the path and that the exporter's user may read it") \
                    from None
            except UnicodeDecodeError:
                raise self.error(f"{key}.{name}_file", f"{path} is not UTF-8 text",
                                 "save the secret as UTF-8") from None
        if env is not None:
            env = self.string(env, f"{key}.{name}_env")
            value = os.environ.get(env)
            if value is None:
                raise self.error(f"{key}.{name}_env", f"environment variable {env} is not set",
                                 f"export {env}=... before starting the exporter")
            return value
        return None


# --- sections ------------------------------------------------------------------

_TARGET_KEYS = {"name", "url", "interval", "timeout", "method", "tls", "auth", "headers",
                "max_body_bytes", "max_series", "jobs"}
_DEFAULT_KEYS = _TARGET_KEYS - {"name", "url"}
_TLS_KEYS = {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}
_AUTH_KEYS = {"username", "password", "password_file", "password_env",
              "bearer_token", "bearer_token_file", "bearer_token_env"}
_JOBS_KEYS = {"enabled", "include", "exclude", "max"}
_NVML_KEYS = {"enabled", "target", "window", "timeout", "tolerances"}
_TOP_KEYS = {"targets", "defaults", "nvml", "poll"}
_POLL_KEYS = {"max_concurrent"}


def _tls(r: _Reader, raw: object, key: str, base: TLSConfig) -> TLSConfig:
    block = r.mapping(raw, key, _TLS_KEYS)
    values: dict[str, Any] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        if name in block:
            path = r.string(block[name], f"{key}.{name}")
            if not os.path.isfile(path):
                raise r.error(f"{key}.{name}", f"file {path} does not exist",
                              "give the path of a PEM file the exporter can read")
            values[name] = path
    if "insecure_skip_verify" in block:
        values["insecure_skip_verify"] = r.boolean(block["insecure_skip_verify"],
                                                   f"{key}.insecure_skip_verify")
    tls = replace(base, **values)
    if tls.key_file and not tls.cert_file:
        raise r.error(f"{key}.key_file", "key_file without cert_file",
                      "set cert_file to the client certificate too")
    return tls


def _auth(r: _Reader, raw: object, key: str) -> AuthConfig:
    block = r.mapping(raw, key, _AUTH_KEYS)
    if not block:
        return AuthConfig()
    username = r.string(block["username"], f"{key}.username") if "username" in block else None
    password = r.secret(block, "password", key)
    token = r.secret(block, "bearer_token", key)
    if token is not None and (username is not None or password is not None):
        raise r.error(key, "both basic auth and a bearer token are set", "keep one of them")
    if password is not None and username is None:
        raise r.error(f"{key}.username", "a password needs a username",
                      "add `username: NAME`")
    return AuthConfig(username, password, token)


def _jobs(r: _Reader, raw: object, key: str, base: JobsConfig) -> JobsConfig:
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


def _headers(r: _Reader, raw: object, key: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise r.error(key, "must be a mapping of header name to value",
                      f"write `{key}:` and lines like `X-Api-Key: value`")
    out = []
    for name, value in raw.items():
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


def _target_fields(r: _Reader, block: Mapping[str, Any], key: str,
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
    return values


def check_url(r: _Reader, url: object, key: str) -> str:
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
    r = _Reader(source)
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
            if isinstance(raw_name, str) and raw_name:
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
    try:
        if "poll" in top:
            poll = r.mapping(top["poll"], "poll", _POLL_KEYS)
            if "max_concurrent" in poll:
                max_concurrent = r.integer(poll["max_concurrent"], "poll.max_concurrent")
    except ConfigError as exc:
        errors.append(exc)
    if errors:
        raise ConfigErrors(errors)
    return Config(tuple(targets), nvml, max_concurrent, source)


def _target(r: _Reader, raw: object, key: str, base: TargetConfig,
            names: set[str]) -> TargetConfig:
    block = r.mapping(raw, key, _TARGET_KEYS)
    if "url" not in block:
        raise r.error(f"{key}.url", "missing", "add `url: http://HOST:9999`")
    url = check_url(r, block["url"], f"{key}.url")
    name = block.get("name")
    if name is None:
        name = urlsplit(url).netloc
    if not isinstance(name, str) or not _NAME.match(name):
        raise r.error(f"{key}.name", f"{name!r} is not a valid target name",
                      "use letters, digits, '.', '_', ':' and '-' (at most 128)")
    if name in names:
        raise r.error(f"{key}.name", f"target name {name!r} is used twice",
                      "give every target a unique name")
    target = replace(base, name=name, url=url, **_target_fields(r, block, key, base))
    if "timeout" in block:
        _check_timeout(r, target, key)
    else:  # as Prometheus does with scrape_timeout: never longer than the interval
        target = replace(target, timeout=min(target.timeout, target.interval))
    return target


def _check_timeout(r: _Reader, target: TargetConfig, key: str) -> None:
    """An explicit timeout longer than the interval is a mistake (Prometheus agrees)."""
    if target.timeout > target.interval:
        raise r.error(f"{key}.timeout", f"timeout {format_duration(target.timeout)} is longer "
                      f"than the interval {format_duration(target.interval)}",
                      "make the timeout at most the interval, or leave it out "
                      "(it then defaults to the smaller of 5s and the interval)")


def _nvml(r: _Reader, raw: object, names: set[str]) -> NvmlConfig:
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
        target = r.string(block["target"], "nvml.target")
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
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise r.error(f"nvml.tolerances.{k}", f"{v!r} is not a number >= 0",
                              f"write e.g. `{k}: {DEFAULT_TOLERANCES[k]:g}`")
            merged[k] = float(v)
        values["tolerances"] = tuple(sorted(merged.items()))
    return NvmlConfig(**values)


def read_text(path: str) -> str:
    """A regular file's text (UTF-8). Opened non-blocking and checked first: a
    FIFO or device put in a config file's place would block the loop reading
    it; it is refused instead (OSError, `not a regular file`)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, encoding="utf-8") as handle:
            fd = -1  # the handle owns it now
            return handle.read()
    finally:
        if fd >= 0:
            os.close(fd)


def read_yaml(path: str, flag: str) -> Any:
    """A YAML file's content; every way it can fail is a ConfigError naming `flag`."""
    try:
        return yaml.safe_load(read_text(path))
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot read the file: {exc.strerror}",
                          f"check the path given to {flag}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "(file)", "not UTF-8 text", "save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          "fix the YAML syntax (indentation, colons, quotes)") from None


def load_config(path: str) -> Config:
    """Read and validate a YAML config file; raises ConfigError."""
    data = read_yaml(path, "--config.file")
    if data is None:
        raise ConfigError(path, "targets", "the file is empty",
                          "add `targets:` with at least one `- url: http://HOST:9999`")
    return parse_config(data, path)


def config_from_urls(urls: list[str], timeout: float | None = None,
                     interval: float | None = None) -> Config:
    """A config from `--target URL` flags (no file)."""
    r = _Reader("--target")
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
