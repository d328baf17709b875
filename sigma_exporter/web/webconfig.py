"""`--web.config.file`: TLS, basic auth and response headers for the HTTP side.

The file format is the Prometheus exporter-toolkit's (as of TOOLKIT_VERSION),
so the file an operator already uses for node_exporter works here unchanged:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...            # bcrypt hash
    http_server_config:
      headers:
        X-Frame-Options: deny
    rate_limit:                         # every request, before auth; 429 beyond
      interval: 100ms
      burst: 20

Behaviour copied from the toolkit on purpose:

* unknown keys are an error (exit 2 at start, naming the file, key and fix);
  the toolkit's two keys we do not implement (cipher_suites,
  curve_preferences) are refused the same way, naming the toolkit version;
* relative paths are relative to the web config file's directory;
* an unknown user is checked against a dummy bcrypt hash, so the answer takes
  as long as for a known user with a wrong password;
* verified credentials are cached under a digest of user, hash AND password
  together (a cache keyed on less is how CVE-2022-46146 let a hash itself be
  used as a password);
* a password over 72 bytes or a malformed hash is a plain 401, never a 500;
* the file is re-read when it changes (checked on each request and each TLS
  handshake); a broken new file is logged and the last good one stays.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from sigma_exporter.config import ConfigError, read_yaml

log = logging.getLogger("sigma_exporter.web.webconfig")

# The exporter-toolkit release whose web config format this module follows
# (web/tls_config.go and web/handler.go there): its keys are accepted, or
# refused with a message naming this version.
TOOLKIT_VERSION = "v0.17"

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
    "RequireClientCert",  # the toolkit's older spelling of RequireAnyClientCert
)
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The headers (and values) the exporter-toolkit lets an operator set.
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config", "rate_limit"}
_TLS_KEYS = {"cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file",
             "client_auth_type", "min_version", "max_version", "prefer_server_cipher_suites",
             "cipher_suites", "curve_preferences", "client_allowed_sans"}
_HTTP_KEYS = {"headers", "http2"}
_RATE_KEYS = {"interval", "burst"}
# client_allowed_sans is only meaningful when a certificate is required (as in the toolkit).
_SAN_AUTH_TYPES = ("RequireAnyClientCert", "RequireClientCert", "RequireAndVerifyClientCert")

# A fixed, valid bcrypt hash (cost 10) to compare unknown users against. The
# password it hashes does not matter; nobody is meant to know it.
DUMMY_HASH = b"$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
CACHE_SIZE = 1024
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    # Each of certificate, key and client CA comes from a file or inline PEM
    # (`cert`, `key`, `client_ca`), never both.
    cert_file: str | None
    key_file: str | None
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str | None = None
    prefer_server_cipher_suites: bool = True
    cert_pem: str | None = field(default=None, repr=False)
    key_pem: str | None = field(default=None, repr=False)  # a secret: never in a repr
    client_ca_pem: str | None = field(default=None, repr=False)
    client_allowed_sans: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit`: a token bucket of `burst` requests, one more every `interval` s."""

    interval: float
    burst: int


@dataclass(frozen=True, slots=True)
class WebConfig:
    tls: TLSServerConfig | None = None
    users: tuple[tuple[str, str], ...] = ()  # (user, bcrypt hash)
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = True
    source: str = "<none>"
    rate_limit: RateLimit | None = None

    def user_hashes(self) -> dict[str, str]:
        return dict(self.users)


# --- parsing ----------------------------------------------------------------


def _error(source: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(source, key, problem, fix)


def _mapping(source: str, value: object, key: str, allowed: set[str] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(source, key or "(file)", f"must be a mapping, not {type(value).__name__}",
                     f"write `{key}:` followed by indented `name: value` lines"
                     if key else "the file must be a YAML mapping")
    if allowed is not None:
        for k in value:
            if k not in allowed:
                raise _error(source, f"{key}.{k}" if key else str(k),
                             f"unknown key (the format is exporter-toolkit {TOOLKIT_VERSION}'s)",
                             f"use one of: {', '.join(sorted(allowed))}")
    return value


def _path(source: str, value: object, key: str, base: str) -> str:
    if not isinstance(value, str) or not value:
        raise _error(source, key, "must be a file path", f"write `{key.rsplit('.', 1)[-1]}: "
                     "/path/to/file.pem`")
    path = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.path.isfile(path):
        raise _error(source, key, f"file {value} does not exist",
                     "give the path of a PEM file the exporter can read (relative paths are "
                     "relative to the web config file)")
    return path


def _pem(source: str, value: object, key: str, marker: str) -> str:
    """An inline PEM block (`cert`, `key`, `client_ca`), checked for its marker."""
    if not isinstance(value, str) or f"-----BEGIN {marker}" not in value.replace(
            "RSA PRIVATE", "PRIVATE").replace("EC PRIVATE", "PRIVATE"):
        raise _error(source, key, f"must be PEM text ({marker})",
                     f"write `{key.rsplit('.', 1)[-1]}: |` followed by the indented PEM block, "
                     "or use the _file key with a path")
    return value


def _file_or_inline(source: str, block: dict[str, Any], name: str, marker: str,
                    base: str) -> tuple[str | None, str | None]:
    """(path, inline PEM) of `<name>_file` / `<name>`; at most one of them is given."""
    file_key, inline_key = f"{name}_file", name
    if file_key in block and inline_key in block:
        raise _error(source, f"tls_server_config.{inline_key}",
                     f"given together with {file_key}",
                     f"keep one: the inline PEM `{inline_key}` or the path `{file_key}`")
    if file_key in block:
        return _path(source, block[file_key], f"tls_server_config.{file_key}", base), None
    if inline_key in block:
        return None, _pem(source, block[inline_key], f"tls_server_config.{inline_key}", marker)
    return None, None


def _sans(source: str, raw: object, auth: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    key = "tls_server_config.client_allowed_sans"
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(s, str) and s for s in raw)):
        raise _error(source, key, "must be a non-empty list of names",
                     "list the DNS names, IP addresses, e-mail addresses or URIs a client "
                     "certificate may carry, e.g. `client_allowed_sans: [prometheus.example]`")
    if auth not in _SAN_AUTH_TYPES:
        raise _error(source, key, f"needs a required client certificate, not {auth}",
                     "set client_auth_type: RequireAndVerifyClientCert (as the exporter-toolkit "
                     f"{TOOLKIT_VERSION} requires)")
    return tuple(raw)


def _tls(source: str, raw: object, base: str) -> TLSServerConfig | None:
    block = _mapping(source, raw, "tls_server_config", _TLS_KEYS)
    if not block:
        return None
    for unsupported in ("cipher_suites", "curve_preferences"):
        if unsupported in block:
            raise _error(source, f"tls_server_config.{unsupported}",
                         f"accepted by exporter-toolkit {TOOLKIT_VERSION} but not supported by "
                         "sigma-exporter (Python's TLS stack picks the suites and curves of its "
                         "OpenSSL defaults)",
                         f"remove `{unsupported}`; use min_version: TLS13 to restrict suites")
    cert, cert_pem = _file_or_inline(source, block, "cert", "CERTIFICATE", base)
    key, key_pem = _file_or_inline(source, block, "key", "PRIVATE KEY", base)
    for name, found in (("cert", cert or cert_pem), ("key", key or key_pem)):
        if not found:
            raise _error(source, f"tls_server_config.{name}_file", "missing",
                         "set the certificate and its key: cert_file and key_file (PEM files), "
                         "or cert and key (inline PEM)")
    auth = block.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH_TYPES:
        raise _error(source, "tls_server_config.client_auth_type", f"{auth!r} is not known",
                     f"use one of: {', '.join(CLIENT_AUTH_TYPES)}")
    ca, ca_pem = _file_or_inline(source, block, "client_ca", "CERTIFICATE", base)
    if ca or ca_pem:
        if auth == "NoClientCert":
            raise _error(source, "tls_server_config.client_ca_file",
                         "client CAs are configured without a client auth policy",
                         "set client_auth_type: RequireAndVerifyClientCert (or remove "
                         "client_ca_file)")
    elif auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert",
                  "RequireAnyClientCert", "RequireClientCert"):
        raise _error(source, "tls_server_config.client_ca_file",
                     f"client_auth_type {auth} needs the CA that signs client certificates",
                     "set client_ca_file: /path/to/ca.pem (or client_ca: inline PEM)")
    sans = _sans(source, block.get("client_allowed_sans"), auth)
    versions = {}
    for name in ("min_version", "max_version"):
        if name in block:
            value = block[name]
            if value not in TLS_VERSIONS:
                raise _error(source, f"tls_server_config.{name}", f"{value!r} is not known",
                             f"use one of: {', '.join(TLS_VERSIONS)}")
            versions[name] = value
    minimum = versions.get("min_version", "TLS12")
    maximum = versions.get("max_version")
    if maximum is not None and TLS_VERSIONS[maximum] < TLS_VERSIONS[minimum]:
        raise _error(source, "tls_server_config.max_version",
                     f"{maximum} is lower than min_version {minimum}",
                     "raise max_version or lower min_version")
    prefer = block.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise _error(source, "tls_server_config.prefer_server_cipher_suites",
                     f"{prefer!r} is not true or false", "write `true` or `false`")
    return TLSServerConfig(cert, key, ca, auth, minimum, maximum, prefer, cert_pem, key_pem,
                           ca_pem, sans)


def _users(source: str, raw: object) -> tuple[tuple[str, str], ...]:
    block = _mapping(source, raw, "basic_auth_users", None)
    out = []
    for user, hashed in block.items():
        if not isinstance(user, str) or not user:
            raise _error(source, f"basic_auth_users.{user}", "user name must be text",
                         "quote the user name")
        if ":" in user:
            raise _error(source, f"basic_auth_users.{user}", "a user name cannot contain ':'",
                         "pick a name without ':' (basic auth splits on it)")
        if not isinstance(hashed, str) or not hashed:
            raise _error(source, f"basic_auth_users.{user}", "must be a bcrypt hash",
                         "generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
        match = _BCRYPT.match(hashed)
        if match is None or not 4 <= int(match.group(1)) <= 31:
            # The toolkit refuses these at start too (promtool: "hashedSecret too short").
            raise _error(source, f"basic_auth_users.{user}", "not a bcrypt hash",
                         "generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'` or "
                         "python -c 'import bcrypt; print(bcrypt.hashpw(b\"PASSWORD\", "
                         "bcrypt.gensalt()).decode())'")
        out.append((user, hashed))
    return tuple(out)


def _http(source: str, raw: object) -> tuple[tuple[tuple[str, str], ...], bool]:
    block = _mapping(source, raw, "http_server_config", _HTTP_KEYS)
    http2 = block.get("http2", True)
    if not isinstance(http2, bool):
        raise _error(source, "http_server_config.http2", f"{http2!r} is not true or false",
                     "write `true` or `false` (HTTP/2 is accepted and ignored: the exporter "
                     "speaks HTTP/1.1)")
    headers = []
    raw_headers = _mapping(source, block.get("headers"), "http_server_config.headers", None)
    for name, value in raw_headers.items():
        key = f"http_server_config.headers.{name}"
        if name not in ALLOWED_HEADERS:
            raise _error(source, key, "this header cannot be configured",
                         f"use one of: {', '.join(sorted(ALLOWED_HEADERS))}")
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise _error(source, key, "the value must be one line of text", "quote the value")
        allowed = ALLOWED_HEADERS[name]
        if allowed and value not in allowed:
            raise _error(source, key, f"invalid value {value!r}",
                         f"use one of: {', '.join(allowed)}")
        headers.append((name, value))
    return tuple(headers), http2


# A Go time.Duration as the toolkit's YAML reads it: "100ms", "1m30s", "0".
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(source: str, key: str, value: object) -> float:
    if value == 0 or value == "0":
        return 0.0
    text = value if isinstance(value, str) else ""
    parts = _GO_DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise _error(source, key, f"{value!r} is not a duration",
                     "write a Go duration such as `100ms`, `1s` or `1m30s`")
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _rate_limit(source: str, raw: object) -> RateLimit | None:
    block = _mapping(source, raw, "rate_limit", _RATE_KEYS)
    interval = _go_duration(source, "rate_limit.interval", block.get("interval", 0))
    burst = block.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        raise _error(source, "rate_limit.burst", f"{burst!r} is not a whole number >= 0",
                     "write e.g. `burst: 20`")
    if interval == 0:
        return None  # the toolkit's default: no limit
    if burst == 0:
        # The toolkit would start and then refuse every request (a bucket of 0).
        raise _error(source, "rate_limit.burst", "0 with an interval refuses every request",
                     "set burst to the requests allowed at once, e.g. `burst: 20`")
    return RateLimit(interval, burst)


def parse_web_config(data: object, source: str, base: str = ".") -> WebConfig:
    top = _mapping(source, data, "", _TOP_KEYS)
    tls = _tls(source, top.get("tls_server_config"), base)
    users = _users(source, top.get("basic_auth_users"))
    headers, http2 = _http(source, top.get("http_server_config"))
    rate = _rate_limit(source, top.get("rate_limit"))
    return WebConfig(tls, users, headers, http2, source, rate)


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web config file; raises ConfigError."""
    data = read_yaml(path, "--web.config.file")
    config = parse_web_config(data, path, os.path.dirname(os.path.abspath(path)))
    if config.tls is not None:
        build_ssl_context(config.tls, path)  # refuse unusable certificates now
    return config


# --- TLS ------------------------------------------------------------------------


def build_ssl_context(tls: TLSServerConfig, source: str = "web config") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.max_version is not None:
        context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        with _pem_path(tls.cert_file, tls.cert_pem) as cert, \
                _pem_path(tls.key_file, tls.key_pem) as key:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(source, "tls_server_config.cert_file",
                          f"cannot load the certificate and key: {exc}",
                          "give a PEM certificate and its unencrypted PEM private key") from None
    # Python's ssl verifies every client certificate it asks for, so the two
    # "any certificate" modes verify too (documented in docs/security.md).
    if tls.client_auth_type in ("NoClientCert", "RequestClientCert"):
        context.verify_mode = ssl.CERT_NONE
    elif tls.client_auth_type == "VerifyClientCertIfGiven":
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_REQUIRED
    if tls.client_ca_file is not None or tls.client_ca_pem is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file, cadata=tls.client_ca_pem)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(source, "tls_server_config.client_ca_file",
                              f"cannot load the client CA: {exc}",
                              "give a PEM file of CA certificates") from None
    return context


@contextlib.contextmanager
def _pem_path(path: str | None, pem: str | None) -> Iterator[str]:
    """A path to give OpenSSL for a file or inline PEM.

    Python's ssl loads a certificate chain from paths only. Inline PEM goes
    into an anonymous memory file (memfd), named through /proc/self/fd: it
    works on a read-only root filesystem and leaves no key material on disk.
    """
    if path is not None:
        yield path
        return
    fd = os.memfd_create("sigma-exporter-pem", os.MFD_CLOEXEC)
    try:
        os.write(fd, (pem or "").encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def peer_sans(peercert: Mapping[str, Any] | None) -> list[str]:
    """A verified client certificate's SANs, as the toolkit compares them.

    DNS names, e-mail addresses, IP addresses (in Go's `ip.String()` form,
    which Python's ipaddress shares) and URIs.
    """
    out = []
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                continue
        if kind in ("DNS", "email", "URI", "IP Address"):
            out.append(value)
    return out


def sans_allowed(allowed: tuple[str, ...] | None, peercert: Mapping[str, Any] | None) -> bool:
    """Whether a client may stay connected under `client_allowed_sans` (None: any client)."""
    if allowed is None:
        return True
    return any(san in allowed for san in peer_sans(peercert))


class RateLimiter:
    """`rate_limit` as the toolkit applies it: one token bucket for every request.

    Tokens refill at one per `interval`, up to `burst`; a request without a
    token is answered 429 before authentication. Thread-safe: the check is a
    few float operations under a lock.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.limit.burst),
                               self._tokens + (now - self._last) / self.limit.interval)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


# --- basic auth -------------------------------------------------------------


def parse_basic(header: str) -> tuple[bytes, bytes] | None:
    """User and password of an `Authorization: Basic ...` header, or None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password


def _bcrypt_ok(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # over 72 bytes, or not a bcrypt hash: a refusal, not an error
        return False


class AuthBusy(Exception):
    """Too many credentials wait for bcrypt already: try again later (503)."""


# bcrypt checks at once (each holds a CPU for tens of milliseconds), and how
# many more may wait for one. Cached credentials (Prometheus' own, after its
# first scrape) never wait: strangers guessing passwords cannot queue ahead.
BCRYPT_AT_ONCE = 2
BCRYPT_WAITING = 32


class Authenticator:
    """Checks basic-auth credentials; bcrypt runs in a thread, results cached."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._bcrypt_slots = asyncio.Semaphore(BCRYPT_AT_ONCE)
        self._bcrypt_waiting = 0
        # A random key per process: the cache's keys reveal nothing if dumped.
        self._key = os.urandom(32)

    def _cache_key(self, user: bytes, hashed: bytes, password: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user, hashed, password):  # length-prefixed: no ambiguity
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()

    def _lookup(self, users: Mapping[str, str], user: bytes,
                password: bytes) -> tuple[bool, bytes, bytes, bool | None]:
        try:
            name: str | None = user.decode("utf-8")
        except UnicodeDecodeError:
            name = None
        known = name is not None and name in users
        hashed = users[name].encode("utf-8") if known and name is not None else DUMMY_HASH
        key = self._cache_key(user, hashed, password)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
        return known, hashed, key, cached

    def _store(self, key: bytes, ok: bool) -> None:
        self._cache[key] = ok
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def check_blocking(self, users: Mapping[str, str], user: bytes, password: bytes) -> bool:
        """`check` without the thread (tests, and callers off the event loop)."""
        known, hashed, key, cached = self._lookup(users, user, password)
        if cached is None:
            cached = _bcrypt_ok(password, hashed)
            self._store(key, cached)
        return cached and known

    async def check(self, users: Mapping[str, str], user: bytes, password: bytes) -> bool:
        """Whether `user:password` matches; the cache is only touched on the loop.

        Raises AuthBusy when BCRYPT_WAITING checks already wait for bcrypt.
        """
        known, hashed, key, cached = self._lookup(users, user, password)
        if cached is None:
            if self._bcrypt_waiting >= BCRYPT_WAITING:
                raise AuthBusy("too many credentials being checked")
            self._bcrypt_waiting += 1
            try:
                async with self._bcrypt_slots:
                    # bcrypt takes tens of milliseconds on purpose: never on the event loop.
                    cached = await asyncio.to_thread(_bcrypt_ok, password, hashed)
            finally:
                self._bcrypt_waiting -= 1
            self._store(key, cached)
        # An unknown user went through the same bcrypt work against DUMMY_HASH.
        return cached and known


# --- the live file ----------------------------------------------------------------


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class WebConfigWatcher:
    """The web config in force, re-read when the file (or a TLS file) changes.

    `refresh()` runs on every request (throttled to one stat per second) and
    from a periodic task. A broken new file is logged once and the last good
    config stays in force. A TLS change (certificate, key, CA, client auth,
    versions) builds a new SSL context and calls `on_tls_change`, which
    replaces the listener; TLS cannot be switched on or off without a restart.
    """

    CHECK_EVERY_S = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self.config = load_web_config(path)
        self.tls_enabled = self.config.tls is not None
        self._tls_stamps = self._tls_file_stamps(self.config)
        self._context = build_ssl_context(self.config.tls, path) if self.config.tls else None
        self._next_check = 0.0
        self.reload_failed = False
        self.on_tls_change: Callable[[], None] | None = None

    @staticmethod
    def _tls_file_stamps(config: WebConfig) -> tuple[tuple[int, int, int] | None, ...]:
        tls = config.tls
        if tls is None:
            return ()
        return tuple(_stamp(p) for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p)

    def refresh(self, force: bool = False) -> WebConfig:
        """The config in force, after re-reading the files if they changed."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return self.config
        self._next_check = now + self.CHECK_EVERY_S
        stamp = _stamp(self.path)
        tls_stamps = self._tls_file_stamps(self.config)
        if stamp == self._stamp and tls_stamps == self._tls_stamps:
            return self.config
        self._stamp = stamp
        self._tls_stamps = tls_stamps
        try:
            new = load_web_config(self.path)
            if (new.tls is not None) != self.tls_enabled:
                raise ConfigError(self.path, "tls_server_config",
                                  "TLS cannot be switched on or off while running",
                                  "restart the exporter to change that")
            context = build_ssl_context(new.tls, self.path) if new.tls else None
        except ConfigError as exc:
            if not self.reload_failed:
                log.error("web config reload failed, keeping the running one: %s", exc)
            self.reload_failed = True
            return self.config
        self.config = new
        self._tls_stamps = self._tls_file_stamps(new)
        self.reload_failed = False
        log.info("web config reloaded file=%s tls=%s users=%d", self.path,
                 new.tls is not None, len(new.users))
        if context is not None:
            self._context = context
            if self.on_tls_change is not None:
                self.on_tls_change()
        return new

    def ssl_context(self) -> ssl.SSLContext | None:
        """The SSL context for a listener (None without TLS)."""
        return self._context
