"""The TLS material a config names, read and checked before anything uses it.

`check-config`, start-up and every reload read the CA bundle, the
certificate and the key a config names exactly as the exporter will use
them (Python's ssl, OpenSSL underneath), so a file that is empty, not PEM,
encrypted, or a key that does not belong to its certificate is refused with
the file, the key and the fix, instead of failing later inside a listener,
a poll or a reload. Both the config file (targets' `tls`) and the web
config (`tls_server_config`) check through here.

This module knows nothing of config files: a problem is a `TLSFileProblem`
naming which of the files it is about ("ca", "cert" or "key"); the caller
turns it into a ConfigError with its own key names.
"""

from __future__ import annotations

import os
import ssl
import stat

# The first bytes of a DER (binary) certificate or key: an ASN.1 SEQUENCE.
_DER_START = b"\x30\x82"
_CONVERT = {
    "ca": "openssl x509 -inform der -in FILE -out FILE.pem",
    "cert": "openssl x509 -inform der -in FILE -out FILE.pem",
    "key": "openssl pkey -inform der -in FILE -out FILE.pem",
}


class TLSFileProblem(Exception):
    """One TLS file that cannot be used: which one ("ca", "cert", "key"), why, and the fix."""

    def __init__(self, which: str, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.which, self.problem, self.fix = which, problem, fix


class _Encrypted(Exception):
    """Raised by our password callback: OpenSSL asked for a passphrase."""


def _ask_for_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, or fail obscurely.
    raise _Encrypted


def _read(which: str, path: str, what: str) -> bytes:
    try:
        # Non-blocking, and refused unless a regular file: a FIFO in a key's
        # place would otherwise hang the check (and the reload) reading it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(0, "not a regular file")
            os.set_blocking(fd, True)
            data = handle.read()
    except OSError as exc:
        raise TLSFileProblem(which, f"cannot read {path}: {exc.strerror}",
                             "check the path and that the exporter's user may read it") \
            from None
    if not data.strip():
        raise TLSFileProblem(which, f"{path} is empty", f"put {what} in it, in PEM form")
    return data


def _not_pem(which: str, path: str, data: bytes, what: str) -> TLSFileProblem:
    if data.startswith(_DER_START):
        return TLSFileProblem(which, f"{path} is DER (binary), not PEM",
                              f"convert it: {_CONVERT[which].replace('FILE', path)}")
    return TLSFileProblem(which, f"{path} holds no PEM {what}",
                          f"give {what} in PEM form (text starting with -----BEGIN "
                          f"{'PRIVATE KEY' if which == 'key' else 'CERTIFICATE'}-----)")


def check_ca_file(path: str) -> None:
    """A bundle of CA certificates, as the exporter loads it to verify a server or client."""
    data = _read("ca", path, "the CA certificate(s)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise _not_pem("ca", path, data, "CA certificate") from None


def check_cert_and_key(cert_path: str, key_path: str | None) -> None:
    """A certificate and its private key (None: the key follows the certificate in its file).

    Each is checked on its own first, so the message names the file at fault;
    then the pair, so a key of another certificate is refused too.
    """
    cert = _read("cert", cert_path, "the certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_path)
    except ssl.SSLError:
        raise _not_pem("cert", cert_path, cert, "certificate") from None
    key = _read("key", key_path, "the private key") if key_path is not None else cert
    which, shown = ("key", key_path) if key_path is not None else ("cert", cert_path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            cert_path, key_path, password=_ask_for_passphrase)
    except _Encrypted:
        raise TLSFileProblem(which, f"the private key in {shown} is encrypted with a passphrase",
                             f"decrypt it (openssl pkey -in {shown} -out PLAIN.pem) and keep "
                             "the plain key readable by the exporter's user only") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSFileProblem(which, f"the private key in {shown} does not belong to the "
                                        f"certificate in {cert_path}",
                                 "give the key the certificate was made for (their public "
                                 "keys match: compare `openssl x509 -noout -pubkey -in CERT` "
                                 "with `openssl pkey -pubout -in KEY`)") from None
        if key_path is None:
            raise TLSFileProblem("cert", f"{cert_path} holds a certificate but no private key",
                                 "set key_file to the private key's file, or append the PEM "
                                 "key to the certificate's file") from None
        raise _not_pem("key", key_path, key, "private key") from None
