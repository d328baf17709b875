"""Who may ask: basic auth, the rate limit and client certificates' SANs.

The rules come from `--web.config.file` (sigma_exporter.web.webconfig); this
module applies them to requests, as the exporter-toolkit does:

* an unknown user is checked against a dummy bcrypt hash, so the answer takes
  as long as for a known user with a wrong password;
* verified credentials are cached under a digest of user, hash AND password
  together (a cache keyed on less is how CVE-2022-46146 let a hash itself be
  used as a password);
* a password over 72 bytes or a malformed hash is a plain 401, never a 500;
* `rate_limit` is one token bucket for every request, checked before auth;
* `client_allowed_sans` compares a verified client certificate's SANs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import bcrypt

from sigma_exporter.web.webconfig import RateLimit

# A fixed, valid bcrypt hash (cost 10) to compare unknown users against. The
# password it hashes does not matter; nobody is meant to know it.
DUMMY_HASH = b"$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
CACHE_SIZE = 1024


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
