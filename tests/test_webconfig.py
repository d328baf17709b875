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

from sigma_exporter import webconfig
from sigma_exporter.config import ConfigError
from sigma_exporter.webconfig import Authenticator, load_web_config, parse_basic

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

GOOD = sorted(p.name for p in WEB.glob("good-*.yml"))
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
    "bad-cipher-suites.yml": ("cipher_suites: not supported", False),
    "bad-verify-without-ca.yml": ("needs the CA that signs client certificates", False),
    "bad-max-below-min.yml": ("lower than min_version", False),
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
    real = webconfig._bcrypt_ok

    def spy(password: bytes, hashed: bytes) -> bool:
        seen.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webconfig, "_bcrypt_ok", spy)
    auth = Authenticator()
    assert not auth.check_blocking({"alice": _hash(b"pw")}, b"mallory", b"pw")
    assert seen == [webconfig.DUMMY_HASH]
    # Even if someone guessed the dummy hash's password, an unknown user stays out.
    monkeypatch.setattr(webconfig, "_bcrypt_ok", lambda password, hashed: True)
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
