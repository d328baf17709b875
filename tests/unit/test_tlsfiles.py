"""Every file a config names is read as the exporter will use it, and refused with the
key and the fix: a target's CA, client certificate and key, its secrets, and the web
config's certificate, key and client CA (files or inline PEM).

The certificates are real (made with the openssl CLI); the bad files are the mistakes
operators make: empty, junk, DER instead of PEM, an encrypted key, a key of another
certificate, a certificate file without its key.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import make_ca, make_cert, require_tool

from sigma_exporter.config import ConfigError, parse_config
from sigma_exporter.web.webconfig import check_tls_material, parse_web_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A CA, a client certificate and its key, another key, and the usual bad files."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_cert(d, "client", "ca", server=False)
    make_cert(d, "other", "ca", server=False)
    openssl = require_tool("openssl")
    subprocess.run([openssl, "x509", "-in", "ca.crt", "-outform", "der", "-out", "ca.der"],
                   cwd=d, check=True, capture_output=True)
    subprocess.run([openssl, "pkey", "-in", "client.key", "-aes256", "-passout", "pass:x",
                    "-out", "encrypted.key"], cwd=d, check=True, capture_output=True)
    (d / "empty.pem").write_text("")
    (d / "junk.pem").write_text("this is not a certificate\n")
    (d / "both.pem").write_text((d / "client.crt").read_text() + (d / "client.key").read_text())
    yield d


def config_error(tls: str, pki: Path) -> ConfigError:
    data = yaml.safe_load(f"targets:\n  - name: edge\n    url: https://127.0.0.1:9\n"
                          f"    tls: {tls}\n".replace("PKI", str(pki)))
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "sigma.yml")
    return caught.value


@pytest.mark.parametrize(("tls", "key", "problem", "fix"), [
    ("{ca_file: PKI/junk.pem}", "ca_file", "PKI/junk.pem holds no PEM CA certificate",
     "-----BEGIN CERTIFICATE-----"),
    ("{ca_file: PKI/empty.pem}", "ca_file", "PKI/empty.pem is empty", "CA certificate(s)"),
    ("{ca_file: PKI/client.key}", "ca_file", "holds no PEM CA certificate", "PEM form"),
    ("{ca_file: PKI/ca.der}", "ca_file", "PKI/ca.der is DER (binary), not PEM",
     "openssl x509 -inform der -in PKI/ca.der"),
    ("{cert_file: PKI/junk.pem, key_file: PKI/client.key}", "cert_file",
     "holds no PEM certificate", "BEGIN CERTIFICATE"),
    ("{cert_file: PKI/client.crt, key_file: PKI/junk.pem}", "key_file",
     "PKI/junk.pem holds no PEM private key", "BEGIN PRIVATE KEY"),
    ("{cert_file: PKI/client.crt, key_file: PKI/empty.pem}", "key_file", "is empty",
     "the private key"),
    ("{cert_file: PKI/client.crt, key_file: PKI/other.key}", "key_file",
     "the private key in PKI/other.key does not belong to the certificate in PKI/client.crt",
     "openssl pkey -pubout"),
    ("{cert_file: PKI/client.crt, key_file: PKI/encrypted.key}", "key_file",
     "encrypted with a passphrase", "openssl pkey -in PKI/encrypted.key"),
    ("{cert_file: PKI/client.crt}", "cert_file", "holds a certificate but no private key",
     "set key_file"),
])
def test_a_bad_tls_file_is_refused_with_its_key_and_the_fix(
        pki: Path, tls: str, key: str, problem: str, fix: str) -> None:
    error = config_error(tls, pki)
    assert error.key == f"targets[0].tls.{key}" and error.target == "edge"
    assert problem.replace("PKI", str(pki)) in error.problem
    assert fix.replace("PKI", str(pki)) in error.fix
    assert "Traceback" not in str(error) and "_ssl.c" not in str(error)


def test_good_tls_material_passes(pki: Path) -> None:
    for tls in ("{ca_file: PKI/ca.crt, cert_file: PKI/client.crt, key_file: PKI/client.key}",
                "{cert_file: PKI/both.pem}"):
        data = yaml.safe_load(f"targets:\n  - {{name: e, url: 'https://h:9', tls: {tls}}}\n"
                              .replace("PKI", str(pki)))
        assert parse_config(data, "sigma.yml").targets[0].tls.cert_file


def test_defaults_tls_is_checked_once_and_named_there(pki: Path) -> None:
    data = yaml.safe_load(f"defaults: {{tls: {{ca_file: {pki}/junk.pem}}}}\n"
                          "targets:\n  - {name: a, url: 'https://a:9'}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "sigma.yml")
    assert caught.value.key == "defaults.tls.ca_file"


def test_an_unreadable_or_empty_secret_file_is_refused(pki: Path) -> None:
    data = yaml.safe_load(f"targets:\n  - name: a\n    url: http://a:9\n"
                          f"    auth: {{bearer_token_file: {pki}/empty.pem}}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "sigma.yml")
    assert caught.value.key == "targets[0].auth.bearer_token_file"
    assert caught.value.problem == f"{pki}/empty.pem is empty"
    assert caught.value.fix == "write the bearer token in it, on one line"


def web_error(tls: dict[str, str], pki: Path) -> ConfigError:
    data = {"tls_server_config": {k: v.replace("PKI", str(pki)) for k, v in tls.items()}}
    with pytest.raises(ConfigError) as caught:
        config = parse_web_config(data, "web.yml", str(pki))
        assert config.tls is not None
        check_tls_material(config.tls, "web.yml")
    return caught.value


@pytest.mark.parametrize(("tls", "key", "problem"), [
    ({"cert_file": "PKI/junk.pem", "key_file": "PKI/client.key"},
     "tls_server_config.cert_file", "PKI/junk.pem holds no PEM certificate"),
    ({"cert_file": "PKI/client.crt", "key_file": "PKI/other.key"},
     "tls_server_config.key_file", "does not belong to the certificate in PKI/client.crt"),
    ({"cert_file": "PKI/client.crt", "key_file": "PKI/client.key",
      "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "PKI/empty.pem"},
     "tls_server_config.client_ca_file", "PKI/empty.pem is empty"),
])
def test_the_web_configs_tls_files_name_the_key_at_fault(
        pki: Path, tls: dict[str, str], key: str, problem: str) -> None:
    error = web_error(tls, pki)
    assert (error.key, error.source) == (key, "web.yml")
    assert problem.replace("PKI", str(pki)) in error.problem


def test_inline_pem_is_named_by_its_key_not_a_proc_path(pki: Path) -> None:
    other_key = (pki / "other.key").read_text()
    data = {"tls_server_config": {"cert": (pki / "client.crt").read_text(), "key": other_key}}
    config = parse_web_config(data, "web.yml", str(pki))
    assert config.tls is not None
    with pytest.raises(ConfigError) as caught:
        check_tls_material(config.tls, "web.yml")
    assert caught.value.key == "tls_server_config.key"
    assert "the private key in the inline `key` does not belong" in caught.value.problem
    assert "/proc/self/fd" not in str(caught.value)
