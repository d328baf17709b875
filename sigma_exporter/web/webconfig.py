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
* the file and its TLS files are re-read when they change (checked at most
  once a second, on requests and by a periodic task; a new handshake uses
  the new certificate once that check ran); a broken new file is logged and
  the last good one stays.

One deliberate difference: `rate_limit.interval` is a Go duration in the
toolkit; here it is read with the one duration grammar of the exporter
(Prometheus': `100ms`, `1s`, `1m30s`), which covers the usual values but
not fractions (`1.5s`) or µs/ns. Requests are checked in
sigma_exporter.web.auth.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sigma_exporter.logsetup import fields
from sigma_exporter.strictyaml import ConfigError, Reader, read_yaml
from sigma_exporter.tlsfiles import TLSFileProblem, check_ca_file, check_cert_and_key

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


def _pem(r: Reader, value: object, key: str, marker: str) -> str:
    """An inline PEM block (`cert`, `key`, `client_ca`), checked for its marker."""
    if not isinstance(value, str) or f"-----BEGIN {marker}" not in value.replace(
            "RSA PRIVATE", "PRIVATE").replace("EC PRIVATE", "PRIVATE"):
        raise r.error(key, f"must be PEM text ({marker})",
                      f"write `{key.rsplit('.', 1)[-1]}: |` followed by the indented PEM block, "
                      "or use the _file key with a path")
    return value


def _file_or_inline(r: Reader, block: Mapping[str, Any], name: str,
                    marker: str) -> tuple[str | None, str | None]:
    """(path, inline PEM) of `<name>_file` / `<name>`; at most one of them is given."""
    file_key, inline_key = f"{name}_file", name
    if file_key in block and inline_key in block:
        raise r.error(f"tls_server_config.{inline_key}", f"given together with {file_key}",
                      f"keep one: the inline PEM `{inline_key}` or the path `{file_key}`")
    if file_key in block:
        return r.file(block[file_key], f"tls_server_config.{file_key}"), None
    if inline_key in block:
        return None, _pem(r, block[inline_key], f"tls_server_config.{inline_key}", marker)
    return None, None


def _sans(r: Reader, raw: object, auth: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    key = "tls_server_config.client_allowed_sans"
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(s, str) and s for s in raw)):
        raise r.error(key, "must be a non-empty list of names",
                      "list the DNS names, IP addresses, e-mail addresses or URIs a client "
                      "certificate may carry, e.g. `client_allowed_sans: [prometheus.example]`")
    if auth not in _SAN_AUTH_TYPES:
        raise r.error(key, f"needs a required client certificate, not {auth}",
                      "set client_auth_type: RequireAndVerifyClientCert (as the exporter-toolkit "
                      f"{TOOLKIT_VERSION} requires)")
    return tuple(raw)


def _tls(r: Reader, raw: object) -> TLSServerConfig | None:
    block = r.mapping(raw, "tls_server_config", _TLS_KEYS)
    if not block:
        return None
    for unsupported in ("cipher_suites", "curve_preferences"):
        if unsupported in block:
            raise r.error(f"tls_server_config.{unsupported}",
                          f"accepted by exporter-toolkit {TOOLKIT_VERSION} but not supported by "
                          "sigma-exporter (Python's TLS stack picks the suites and curves of its "
                          "OpenSSL defaults)",
                          f"remove `{unsupported}`; use min_version: TLS13 to restrict suites")
    cert, cert_pem = _file_or_inline(r, block, "cert", "CERTIFICATE")
    key, key_pem = _file_or_inline(r, block, "key", "PRIVATE KEY")
    for name, found in (("cert", cert or cert_pem), ("key", key or key_pem)):
        if not found:
            raise r.error(f"tls_server_config.{name}_file", "missing",
                          "set the certificate and its key: cert_file and key_file (PEM files), "
                          "or cert and key (inline PEM)")
    auth = r.choice(block.get("client_auth_type", "NoClientCert"),
                    "tls_server_config.client_auth_type", CLIENT_AUTH_TYPES)
    ca, ca_pem = _file_or_inline(r, block, "client_ca", "CERTIFICATE")
    if ca or ca_pem:
        if auth == "NoClientCert":
            raise r.error("tls_server_config.client_ca_file",
                          "client CAs are configured without a client auth policy",
                          "set client_auth_type: RequireAndVerifyClientCert (or remove "
                          "client_ca_file)")
    elif auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert",
                  "RequireAnyClientCert", "RequireClientCert"):
        raise r.error("tls_server_config.client_ca_file",
                      f"client_auth_type {auth} needs the CA that signs client certificates",
                      "set client_ca_file: /path/to/ca.pem (or client_ca: inline PEM)")
    sans = _sans(r, block.get("client_allowed_sans"), auth)
    minimum = r.choice(block.get("min_version", "TLS12"), "tls_server_config.min_version",
                       TLS_VERSIONS)
    maximum = None
    if "max_version" in block:
        maximum = r.choice(block["max_version"], "tls_server_config.max_version", TLS_VERSIONS)
        if TLS_VERSIONS[maximum] < TLS_VERSIONS[minimum]:
            raise r.error("tls_server_config.max_version",
                          f"{maximum} is lower than min_version {minimum}",
                          "raise max_version or lower min_version")
    prefer = r.boolean(block.get("prefer_server_cipher_suites", True),
                       "tls_server_config.prefer_server_cipher_suites")
    return TLSServerConfig(cert, key, ca, auth, minimum, maximum, prefer, cert_pem, key_pem,
                           ca_pem, sans)


def _users(r: Reader, raw: object) -> tuple[tuple[str, str], ...]:
    out = []
    for user, hashed in r.mapping(raw, "basic_auth_users", None).items():
        key = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user:
            raise r.error(key, "user name must be text", "quote the user name")
        if ":" in user:
            raise r.error(key, "a user name cannot contain ':'",
                          "pick a name without ':' (basic auth splits on it)")
        match = _BCRYPT.match(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match.group(1)) <= 31:
            # The toolkit refuses these at start too (promtool: "hashedSecret too short").
            raise r.error(key, "not a bcrypt hash",
                          "generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'` or "
                          "python -c 'import bcrypt; print(bcrypt.hashpw(b\"PASSWORD\", "
                          "bcrypt.gensalt()).decode())'")
        out.append((user, hashed))
    return tuple(out)


def _http(r: Reader, raw: object) -> tuple[tuple[tuple[str, str], ...], bool]:
    block = r.mapping(raw, "http_server_config", _HTTP_KEYS)
    http2 = r.boolean(block.get("http2", True), "http_server_config.http2",
                      " (HTTP/2 is accepted and ignored: the exporter speaks HTTP/1.1)")
    headers = []
    for name, value in r.mapping(block.get("headers"), "http_server_config.headers",
                                 None).items():
        key = f"http_server_config.headers.{name}"
        if name not in ALLOWED_HEADERS:
            raise r.error(key, "this header cannot be configured",
                          f"use one of: {', '.join(sorted(ALLOWED_HEADERS))}")
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise r.error(key, "the value must be one line of text", "quote the value")
        allowed = ALLOWED_HEADERS[name]
        if allowed and value not in allowed:
            raise r.error(key, f"invalid value {value!r}", f"use one of: {', '.join(allowed)}")
        headers.append((name, value))
    return tuple(headers), http2


def _rate_limit(r: Reader, raw: object) -> RateLimit | None:
    block = r.mapping(raw, "rate_limit", _RATE_KEYS)
    interval = r.duration(block.get("interval", 0), "rate_limit.interval", allow_zero=True)
    burst = r.integer(block.get("burst", 0), "rate_limit.burst", minimum=0)
    if interval == 0:
        return None  # the toolkit's default: no limit
    if burst == 0:
        # The toolkit would start and then refuse every request (a bucket of 0).
        raise r.error("rate_limit.burst", "0 with an interval refuses every request",
                      "set burst to the requests allowed at once, e.g. `burst: 20`")
    return RateLimit(interval, burst)


def parse_web_config(data: object, source: str, base: str = ".") -> WebConfig:
    """A validated WebConfig; relative paths start in `base`. Raises ConfigError."""
    r = Reader(source, f" (the format is exporter-toolkit {TOOLKIT_VERSION}'s)", base)
    top = r.mapping(data, "", _TOP_KEYS)
    tls = _tls(r, top.get("tls_server_config"))
    users = _users(r, top.get("basic_auth_users"))
    headers, http2 = _http(r, top.get("http_server_config"))
    rate = _rate_limit(r, top.get("rate_limit"))
    return WebConfig(tls, users, headers, http2, source, rate)


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web config file; raises ConfigError."""
    data = read_yaml(path, "--web.config.file")
    config = parse_web_config(data, path, os.path.dirname(os.path.abspath(path)))
    if config.tls is not None:
        check_tls_material(config.tls, path)  # the key at fault, named
        build_ssl_context(config.tls, path)  # refuse unusable certificates now
    return config


def check_tls_material(tls: TLSServerConfig, source: str) -> None:
    """Certificate, key and client CA read as the listener will; ConfigError names the one
    at fault (`cert_file`, or `cert` for inline PEM) and the fix."""
    try:
        with _pem_path(tls.cert_file, tls.cert_pem) as cert, \
                _pem_path(tls.key_file, tls.key_pem) as key:
            check_cert_and_key(cert, key)
        if tls.client_ca_file is not None or tls.client_ca_pem is not None:
            with _pem_path(tls.client_ca_file, tls.client_ca_pem) as ca:
                check_ca_file(ca)
    except TLSFileProblem as exc:
        name = {"ca": "client_ca", "cert": "cert", "key": "key"}[exc.which]
        path = getattr(tls, f"{name}_file")
        if path is not None:
            raise ConfigError(source, f"tls_server_config.{name}_file", exc.problem,
                              exc.fix) from None
        # Inline PEM was checked through /proc/self/fd/N: name the key instead.
        inline = re.compile(r"/proc/self/fd/\d+")
        raise ConfigError(source, f"tls_server_config.{name}",
                          inline.sub(f"the inline `{name}`", exc.problem),
                          inline.sub("FILE", exc.fix)) from None


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
                log.error("web config reload failed, keeping the running one",
                          extra=fields(file=self.path, error=str(exc)))
            self.reload_failed = True
            return self.config
        self.config = new
        self._tls_stamps = self._tls_file_stamps(new)
        self.reload_failed = False
        log.info("web config reloaded", extra=fields(
            file=self.path, tls=new.tls is not None, users=len(new.users)))
        if context is not None:
            self._context = context
            if self.on_tls_change is not None:
                self.on_tls_change()
        return new

    def ssl_context(self) -> ssl.SSLContext | None:
        """The SSL context for a listener (None without TLS)."""
        return self._context
