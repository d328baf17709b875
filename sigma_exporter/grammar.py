"""The grammars of the values a user types: durations, sizes and HOST:PORT.

One parser each. The config file, the web config file, the flags and the
simulator all read these values through here, so `1m30s` or `[::1]:9100`
mean the same thing wherever they are written. Each parser raises
ValueError saying what is wrong; the caller adds the file, key or flag.
"""

from __future__ import annotations

import re

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


# --- sizes ---------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$", re.IGNORECASE)
# KB, MB and GB are read as binary units: that is what people mean by a body limit.
_SIZE_FACTOR = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3,
                "kb": 1024, "mb": 1024**2, "gb": 1024**3}
SIZE_FIX = "write e.g. `8MiB` or `8388608`"


def parse_size(text: str) -> int:
    """Bytes in `8MiB`, `512 KB` or `8388608`; ValueError if it is not a size."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("not a size")
    return int(match.group(1)) * _SIZE_FACTOR[(match.group(2) or "b").lower()]


# --- HOST:PORT -------------------------------------------------------------------

HOST_PORT_FIX = "write e.g. `:19911`, `127.0.0.1:19911` or `[::1]:19911`"
# Letters, digits, dots, dashes and (inside brackets) IPv6 colons and a zone:
# enough for every host name and address, nothing that could split a URL.
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?$")


def parse_host_port(text: str) -> tuple[str | None, int]:
    """(host, port) of `HOST:PORT`; host None for `:PORT` (all interfaces).

    An IPv6 address goes in brackets (`[::1]:9100`), as in a URL: without
    them, `::1:9100` could end anywhere. The port is 0-65535 in ASCII digits
    (0 lets the system choose). ValueError says what is wrong.
    """
    if "/" in text:
        raise ValueError(f"{text!r} is a URL or path, not HOST:PORT")
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} has no :PORT")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"{port!r} is not a port (0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _IPV6.match(host) or ":" not in host:
            raise ValueError(f"[{host}] is not an IPv6 address")
    elif ":" in host:
        raise ValueError(f"{host!r} looks like an IPv6 address: put it in brackets, "
                         f"[{host}]:{port}")
    elif host and not _HOST.match(host):
        raise ValueError(f"{host!r} is not a host name or address")
    return (host or None), int(port)
