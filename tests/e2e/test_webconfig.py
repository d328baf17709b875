"""--web.config.file: the exporter-toolkit format, TLS, basic auth, headers, reload.

Certificates are made at test time with the openssl CLI (no key material is
committed). Every fixture is also run through `promtool check web-config`, so
a file that works here works for node_exporter and the other way round.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from conftest import FIXTURES, ROOT, Proc, free_port, make_ca, make_cert, require_tool, wait_until

from sigma_exporter.config import ConfigError
from sigma_exporter.web import auth as web_auth
from sigma_exporter.web import webconfig
from sigma_exporter.web.auth import Authenticator, parse_basic
from sigma_exporter.web.webconfig import load_web_config

WEB = FIXTURES / "webconfig"
PASSWORD = "correct horse battery"
USER = "prometheus"


# --- certificates -------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, server.crt/key (127.0.0.1), client.crt/key, and a stranger's client cert."""
    directory = tmp_path_factory.mktemp("certs")
    make_ca(directory, "ca")
    make_cert(directory, "server", "ca", server=True)
    make_cert(directory, "client", "ca", server=False)
    make_ca(directory, "other-ca")
    make_cert(directory, "stranger", "other-ca", server=False)
    return directory


def in_cert_dir(certs: Path, tmp_path: Path, fixture: Path) -> Path:
    """A copy of `fixture` beside copies of the generated certificates."""
    for item in certs.iterdir():
        shutil.copy(item, tmp_path / item.name)
    target = tmp_path / fixture.name
    shutil.copy(fixture, target)
    return target


def promtool_web(path: Path) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run([promtool, "check", "web-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


# --- the format -----------------------------------------------------------------

# Good files with keys newer than promtool 2.42's exporter-toolkit (v0.8): they
# load here, and that promtool refuses exactly the newer key.
NEWER = {"good-allowed-sans.yml": "client_allowed_sans", "good-rate-limit.yml": "rate_limit"}
GOOD = sorted(p.name for p in WEB.glob("good-*.yml") if p.name not in NEWER)
# file -> (a fragment of our message, whether promtool 2.42 refuses it too)
BAD = {
    "bad-unknown-top-key.yml": ("tls_config: unknown key", True),
    "bad-unknown-tls-key.yml": ("tls_server_config.ca_file: unknown key", True),
    "bad-client-auth-type.yml": ("'RequireCert' is not known", True),
    "bad-tls-version.yml": ("'TLS9' is not known", True),
    "bad-missing-key-file.yml": ("tls_server_config.key_file: missing", True),
    "bad-ca-without-policy.yml": ("without a client auth policy", True),
    "bad-missing-cert.yml": ("file missing.crt does not exist", True),
    "bad-header-name.yml": ("headers.Server: this header cannot be configured", True),
    "bad-header-value.yml": ("invalid value 'allow'", True),
    "bad-http-key.yml": ("http_server_config.http3: unknown key", True),
    "bad-plain-password.yml": ("basic_auth_users.prometheus: not a bcrypt hash", True),
    "bad-not-mapping.yml": ("must be a mapping", True),
    # Stricter than the toolkit, on purpose (see docs/security.md):
    "bad-cipher-suites.yml": ("cipher_suites: accepted by exporter-toolkit v0.17 but not", False),
    "bad-verify-without-ca.yml": ("needs the CA that signs client certificates", False),
    "bad-max-below-min.yml": ("lower than min_version", False),
    # Keys of the current toolkit (promtool 2.42's older one refuses them as unknown):
    "bad-sans-without-required-cert.yml": (
        "client_allowed_sans: needs a required client certificate", True),
    "bad-cert-and-cert-file.yml": ("tls_server_config.cert: given together with cert_file",
                                   True),
    "bad-rate-limit-interval.yml": ("rate_limit.interval: 'fast' is not a duration", True),
    "bad-rate-limit-no-burst.yml": ("rate_limit.burst: 0 with an interval", True),
    "bad-duplicate-user.yml": ("line 3: the key 'prometheus' is written twice", True),
}


def test_every_bad_fixture_is_listed() -> None:
    assert sorted(BAD) == sorted(p.name for p in WEB.glob("bad-*.yml"))


@pytest.mark.parametrize("name", GOOD)
def test_good_fixture_loads_and_promtool_agrees(name: str, certs: Path, tmp_path: Path) -> None:
    path = in_cert_dir(certs, tmp_path, WEB / name)
    config = load_web_config(str(path))
    assert config.source == str(path)
    result = promtool_web(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(NEWER))
def test_newer_toolkit_keys_load_here(name: str, certs: Path, tmp_path: Path) -> None:
    path = in_cert_dir(certs, tmp_path, WEB / name)
    config = load_web_config(str(path))
    assert config.rate_limit is not None or (
        config.tls is not None and config.tls.client_allowed_sans)
    result = promtool_web(path)
    assert result.returncode != 0 and f"field {NEWER[name]} not found" in result.stdout + \
        result.stderr, result.stdout + result.stderr


def test_keys_of_the_toolkit_are_accepted_or_refused_by_name() -> None:
    """Every key of exporter-toolkit v0.17's web config is known here; the two we do
    not implement are refused naming the toolkit version."""
    toolkit = {
        "tls_server_config": {"cert", "key", "client_ca", "cert_file", "key_file",
                              "client_auth_type", "client_ca_file", "cipher_suites",
                              "curve_preferences", "min_version", "max_version",
                              "prefer_server_cipher_suites", "client_allowed_sans"},
        "http_server_config": {"http2", "headers"},
        "rate_limit": {"burst", "interval"},
        "basic_auth_users": None,
    }
    assert webconfig.TOOLKIT_VERSION == "v0.17"
    assert set(toolkit) == webconfig._TOP_KEYS
    assert toolkit["tls_server_config"] == webconfig._TLS_KEYS
    assert toolkit["http_server_config"] == webconfig._HTTP_KEYS
    assert toolkit["rate_limit"] == webconfig._RATE_KEYS
    for key in ("cipher_suites", "curve_preferences"):
        data = {"tls_server_config": {"cert_file": "x", "key_file": "y", key: ["a"]}}
        with pytest.raises(ConfigError, match=f"{key}: accepted by exporter-toolkit v0.17"):
            webconfig.parse_web_config(data, "web.yml")
    documented = (ROOT / "docs" / "security.md").read_text()
    for block, keys in toolkit.items():
        for key in sorted(keys or ()):
            assert f"| `{block}.{key}` |" in documented, key
    assert "exporter-toolkit v0.17" in documented


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_fixture_is_refused_with_file_key_and_fix(name: str, certs: Path,
                                                      tmp_path: Path) -> None:
    fragment, promtool_refuses = BAD[name]
    path = in_cert_dir(certs, tmp_path, WEB / name)
    with pytest.raises(ConfigError) as caught:
        load_web_config(str(path))
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert fragment in message
    assert "Fix: " in message
    result = promtool_web(path)
    assert (result.returncode != 0) == promtool_refuses, result.stdout + result.stderr


def test_shipped_example_passes_promtool_and_loads(certs: Path, tmp_path: Path) -> None:
    example = ROOT / "docs" / "examples" / "web-config.yml"
    text = example.read_text()
    assert "/etc/sigma-exporter/tls/" in text
    for item in certs.iterdir():
        shutil.copy(item, tmp_path / item.name)
    local = tmp_path / "web-config.yml"
    local.write_text(text.replace("/etc/sigma-exporter/tls/", f"{tmp_path}/"))
    config = load_web_config(str(local))
    assert config.tls is not None and config.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert config.users and config.headers
    result = promtool_web(local)
    assert result.returncode == 0, result.stdout + result.stderr
    documented = (ROOT / "docs" / "security.md").read_text()
    assert "docs/examples/web-config.yml" in documented


# --- basic auth, in process -------------------------------------------------------


def _hash(password: bytes, rounds: int = 4) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode()


def test_parse_basic() -> None:
    def header(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode()

    assert parse_basic(header(b"u:p:q")) == (b"u", b"p:q")
    assert parse_basic(header(b"u:")) == (b"u", b"")
    assert parse_basic("basic " + base64.b64encode(b"u:p").decode()) == (b"u", b"p")
    assert parse_basic(header(b"no-colon")) is None
    assert parse_basic("Bearer abc") is None
    assert parse_basic("Basic !!!not base64") is None
    assert parse_basic("") is None


def test_a_hash_is_not_a_password_and_the_cache_keys_on_all_three() -> None:
    """CVE-2022-46146: the cache must not let a hash (or an old password) in."""
    auth = Authenticator()
    first = _hash(b"first")
    users = {"alice": first}
    assert auth.check_blocking(users, b"alice", b"first")
    assert not auth.check_blocking(users, b"alice", first.encode())  # the hash as password
    # Same user, new hash: the cached success of the old password must not count.
    users = {"alice": _hash(b"second")}
    assert not auth.check_blocking(users, b"alice", b"first")
    assert auth.check_blocking(users, b"alice", b"second")
    # Another user with the same password and hash must not ride on alice's entry.
    assert not auth.check_blocking({"alice": users["alice"]}, b"bob", b"second")


def test_unknown_user_pays_for_a_dummy_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    real = web_auth._bcrypt_ok

    def spy(password: bytes, hashed: bytes) -> bool:
        seen.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(web_auth, "_bcrypt_ok", spy)
    auth = Authenticator()
    assert not auth.check_blocking({"alice": _hash(b"pw")}, b"mallory", b"pw")
    assert seen == [web_auth.DUMMY_HASH]
    # Even if someone guessed the dummy hash's password, an unknown user stays out.
    monkeypatch.setattr(web_auth, "_bcrypt_ok", lambda password, hashed: True)
    assert not Authenticator().check_blocking({}, b"mallory", b"anything")
    assert not Authenticator().check_blocking({}, b"\xff\xfe", b"x")  # not UTF-8


def test_long_password_and_malformed_hash_are_refusals_not_errors() -> None:
    auth = Authenticator()
    hashed = _hash(b"x" * 72)
    assert auth.check_blocking({"a": hashed}, b"a", b"x" * 72)
    assert not auth.check_blocking({"a": hashed}, b"a", b"x" * 73)
    assert not auth.check_blocking({"a": hashed}, b"a", b"x" * 10_000)
    assert not auth.check_blocking({"a": "$2b$04$short"}, b"a", b"x")
    assert not auth.check_blocking({"a": "not a hash at all"}, b"a", b"x")


def test_cache_is_bounded() -> None:
    auth = Authenticator(cache_size=8)
    users = {"a": _hash(b"pw")}
    for i in range(30):
        auth.check_blocking(users, b"a", f"wrong-{i}".encode())
    assert len(auth._cache) == 8


def test_async_check_runs_bcrypt_off_the_loop() -> None:
    auth = Authenticator()
    users = {"a": _hash(b"pw", rounds=10)}

    async def main() -> tuple[bool, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        ok = await auth.check(users, b"a", b"pw")
        task.cancel()
        return ok, ticks

    ok, ticks = asyncio.run(main())
    assert ok
    assert ticks > 3  # the loop kept running while bcrypt (cost 10) worked


# --- the exporter process ------------------------------------------------------------


class Served:
    def __init__(self, proc: Proc, base: str, web_config: Path) -> None:
        self.proc, self.base, self.web_config = proc, base, web_config


def tls_client(certs: Path, client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if client is not None:
        context.load_cert_chain(str(certs / f"{client}.crt"), str(certs / f"{client}.key"))
    return context


@pytest.fixture
def serve_with(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Proc] = []

    def start(web_config_text: str, *extra: str) -> Served:
        from conftest import sigma_exporter_cmd

        path = tmp_path / "web.yml"
        path.write_text(web_config_text)
        port = free_port()
        proc = Proc(sigma_exporter_cmd(
            "--target", "http://127.0.0.1:9", "--web.listen-address", f"127.0.0.1:{port}",
            "--web.config.file", str(path), "--log.level", "debug", *extra))
        started.append(proc)
        return Served(proc, f"127.0.0.1:{port}", path)

    yield start
    for proc in started:
        proc.stop()


def _auth_config(certs: Path, password: str = PASSWORD, tls: str = "", headers: str = "") -> str:
    return (tls + f"basic_auth_users:\n  {USER}: '{_hash(password.encode())}'\n" + headers)


HEADERS = ("http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
           "    X-Content-Type-Options: nosniff\n")
ENDPOINTS = ("/metrics", "/probe?target=127.0.0.1:9", "/", "/-/healthy", "/-/ready", "/nope")


def test_tls_auth_and_headers_on_every_endpoint(certs: Path, serve_with: Callable[..., Served],
                                                tmp_path: Path) -> None:
    tls = (f"tls_server_config:\n  cert_file: {certs}/server.crt\n"
           f"  key_file: {certs}/server.key\n")
    served = serve_with(_auth_config(certs, tls=tls, headers=HEADERS))
    base = f"https://{served.base}"
    client = httpx.Client(verify=tls_client(certs), trust_env=False, timeout=5)
    with client:
        wait_until(lambda: client.get(base + "/-/healthy").status_code == 401, 30, "TLS up")
        for path in ENDPOINTS:
            refused = client.get(base + path)
            assert refused.status_code == 401, path
            assert refused.headers["WWW-Authenticate"] == "Basic"
            assert refused.headers["X-Frame-Options"] == "deny"
            wrong = client.get(base + path, auth=(USER, "wrong"))
            assert wrong.status_code == 401, path
            ok = client.get(base + path, auth=(USER, PASSWORD))
            assert ok.status_code in (200, 404, 503), (path, ok.status_code)
            assert (ok.status_code == 404) == (path == "/nope")
            assert ok.headers["X-Content-Type-Options"] == "nosniff"
        assert client.get(base + "/metrics", auth=("nobody", PASSWORD)).status_code == 401
        assert client.get(base + "/metrics", auth=(USER, "x" * 100)).status_code == 401
        assert client.get(base + "/metrics", headers={"Authorization": "Basic %%%"}
                          ).status_code == 401
    # Plain HTTP on the TLS port gets no answer with metrics in it.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{served.base}/metrics", auth=(USER, PASSWORD), timeout=5,
                  trust_env=False)
    assert served.proc.proc.poll() is None


def test_tls_versions_are_enforced(certs: Path, serve_with: Callable[..., Served]) -> None:
    served = serve_with(f"tls_server_config:\n  cert_file: {certs}/server.crt\n"
                        f"  key_file: {certs}/server.key\n  min_version: TLS13\n")
    base = f"https://{served.base}"
    wait_until(lambda: httpx.get(base + "/-/healthy", verify=tls_client(certs),
                                 trust_env=False, timeout=5).status_code == 200, 30, "TLS up")
    old = tls_client(certs)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/-/healthy", verify=old, trust_env=False, timeout=5)


def test_client_certificates(certs: Path, serve_with: Callable[..., Served]) -> None:
    served = serve_with(
        f"tls_server_config:\n  cert_file: {certs}/server.crt\n  key_file: {certs}/server.key\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs}/ca.crt\n")
    base = f"https://{served.base}/-/healthy"

    def get(client: str | None) -> int:
        return httpx.get(base, verify=tls_client(certs, client), trust_env=False,
                         timeout=5).status_code

    wait_until(lambda: get("client") == 200, 30, "mTLS up")
    for client in (None, "stranger"):
        with pytest.raises(httpx.HTTPError):  # refused in the handshake (or right after it)
            get(client)


def _indented(path: Path) -> str:
    return "".join(f"    {line}\n" for line in path.read_text().splitlines())


def test_inline_certificate_key_and_client_ca(certs: Path, serve_with: Callable[..., Served],
                                              tmp_path: Path) -> None:
    """`cert`, `key` and `client_ca` as PEM text in the file, on a read-only cwd."""
    served = serve_with(
        "tls_server_config:\n"
        f"  cert: |\n{_indented(certs / 'server.crt')}"
        f"  key: |\n{_indented(certs / 'server.key')}"
        f"  client_ca: |\n{_indented(certs / 'ca.crt')}"
        "  client_auth_type: RequireAndVerifyClientCert\n")
    base = f"https://{served.base}/-/healthy"

    def get(client: str | None) -> int:
        return httpx.get(base, verify=tls_client(certs, client), trust_env=False,
                         timeout=5).status_code

    wait_until(lambda: get("client") == 200, 30, "mTLS from inline PEM up")
    for client in (None, "stranger"):
        with pytest.raises(httpx.HTTPError):
            get(client)
    assert not list(tmp_path.glob("*.pem")) and not list(tmp_path.glob("*.key"))


@pytest.fixture(scope="module")
def san_client(certs: Path) -> str:
    """A client certificate (from the test CA) whose subjectAltName is prometheus.example."""
    make_cert(certs, "named", "ca", server=False, san="DNS:prometheus.example")
    return "named"


def test_client_allowed_sans(certs: Path, san_client: str,
                             serve_with: Callable[..., Served]) -> None:
    served = serve_with(
        f"tls_server_config:\n  cert_file: {certs}/server.crt\n  key_file: {certs}/server.key\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs}/ca.crt\n"
        "  client_allowed_sans: [prometheus.example]\n")
    base = f"https://{served.base}/-/healthy"

    def get(client: str) -> int:
        return httpx.get(base, verify=tls_client(certs, client), trust_env=False,
                         timeout=5).status_code

    wait_until(lambda: get(san_client) == 200, 30, "allowed SAN admitted")
    # Signed by the right CA, but without an allowed SAN: closed before any answer.
    with pytest.raises(httpx.HTTPError):
        get("client")
    wait_until(lambda: b"no SAN in client_allowed_sans" in _stderr_so_far(served), 10,
               "refusal logged")
    # The list is re-read with the file: once it names another host, this client goes too.
    served.web_config.write_text(served.web_config.read_text().replace(
        "prometheus.example", "other.example"))
    wait_until(lambda: _refused(lambda: get(san_client)), 20, "new SAN list in force")
    assert served.proc.proc.poll() is None


def _refused(call: Callable[[], int]) -> bool:
    try:
        call()
    except httpx.HTTPError:
        return True
    return False


def test_rate_limit_answers_429_before_auth(serve_with: Callable[..., Served],
                                            certs: Path) -> None:
    served = serve_with("rate_limit:\n  interval: 1m\n  burst: 3\n"
                        + _auth_config(certs))
    base = f"http://{served.base}/metrics"
    client = httpx.Client(trust_env=False, timeout=5)
    with client:
        first = wait_until(lambda: client.get(base, auth=(USER, PASSWORD)), 30, "started")
        assert first.status_code == 200
        codes = [client.get(base).status_code for _ in range(3)]
        # Two tokens were left; the third request finds none, credentials or not.
        assert codes == [401, 401, 429]
        assert client.get(base, auth=(USER, PASSWORD)).status_code == 429
        # A reload that lifts the limit lifts it at once.
        served.web_config.write_text(_auth_config(certs))
        wait_until(lambda: client.get(base, auth=(USER, PASSWORD)).status_code == 200, 20,
                   "limit lifted")


def test_auth_file_is_reread_and_a_broken_one_keeps_the_old(
        certs: Path, serve_with: Callable[..., Served]) -> None:
    served = serve_with(_auth_config(certs))
    base = f"http://{served.base}/metrics"

    def status(password: str) -> int:
        return httpx.get(base, auth=(USER, password), trust_env=False, timeout=5).status_code

    wait_until(lambda: status(PASSWORD) == 200, 30, "started")
    served.web_config.write_text(_auth_config(certs, password="new password"))
    wait_until(lambda: status("new password") == 200, 20, "new password accepted")
    assert status(PASSWORD) == 401
    served.web_config.write_text("basic_auth_users:\n  prometheus: [broken\n")
    wait_until(lambda: b"web config reload failed" in _stderr_so_far(served), 20, "error logged")
    assert status("new password") == 200  # the last good file stays in force
    assert served.proc.proc.poll() is None
    code, _, err = served.proc.stop()
    assert code == 0, err


def _stderr_so_far(served: Served) -> bytes:
    """Read what the exporter logged so far without blocking (non-blocking pipe)."""
    import os

    stream = served.proc.proc.stderr
    assert stream is not None
    os.set_blocking(stream.fileno(), False)
    chunk = stream.read() or b""
    buffer: bytes = getattr(served, "_err", b"") + chunk
    served._err = buffer  # type: ignore[attr-defined]
    return buffer


def test_certificate_is_reloaded_without_restart(
        certs: Path, serve_with: Callable[..., Served], tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    for name in ("server.crt", "server.key"):
        shutil.copy(certs / name, live / name)
    served = serve_with(f"tls_server_config:\n  cert_file: {live}/server.crt\n"
                        f"  key_file: {live}/server.key\n")
    host, port = served.base.split(":")

    def serial() -> str:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                tls_client(certs).wrap_socket(raw, server_hostname=host) as tls:
            cert = tls.getpeercert()
        assert cert is not None
        return str(cert["serialNumber"])

    before = wait_until(serial, 30, "TLS up")
    shutil.copy(certs / "ca.crt", live / "ca.crt")
    shutil.copy(certs / "ca.key", live / "ca.key")
    make_cert(live, "renewed", "ca", server=True)
    (live / "renewed.key").replace(live / "server.key")
    (live / "renewed.crt").replace(live / "server.crt")
    after = wait_until(lambda: (s := serial()) != before and s, 20, "new certificate served")
    assert after != before
    assert served.proc.proc.poll() is None


def test_unknown_key_exits_2_with_file_key_and_fix(tmp_path: Path) -> None:
    from conftest import sigma_exporter_cmd

    path = tmp_path / "web.yml"
    path.write_text("basic_auth_user:\n  a: b\n")
    result = subprocess.run(sigma_exporter_cmd("--target", "http://127.0.0.1:9",
                                               "--web.config.file", str(path),
                                               "--web.listen-address", f"127.0.0.1:{free_port()}"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"{path}: basic_auth_user: unknown key" in result.stderr
    assert "Fix: use one of: basic_auth_users" in result.stderr
    env_result = subprocess.run(
        sigma_exporter_cmd("--target", "http://127.0.0.1:9", "--web.listen-address",
                           f"127.0.0.1:{free_port()}"),
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={**__import__("os").environ, "SIGMA_EXPORTER_WEB_CONFIG_FILE": str(path)})
    assert env_result.returncode == 2
    assert "unknown key" in env_result.stderr


def test_check_config_validates_the_web_config(tmp_path: Path, certs: Path) -> None:
    from conftest import sigma_exporter_cmd

    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - url: http://127.0.0.1:9\n")
    good = in_cert_dir(certs, tmp_path, WEB / "good-auth-headers.yml")
    ok = subprocess.run(sigma_exporter_cmd("check-config", str(config), "--web.config.file",
                                           str(good)),
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "1 basic auth user(s), 4 header(s)" in ok.stdout
    bad = in_cert_dir(certs, tmp_path, WEB / "bad-header-name.yml")
    refused = subprocess.run(sigma_exporter_cmd("check-config", str(config),
                                                "--web.config.file", str(bad)),
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "cannot be configured" in refused.stderr
