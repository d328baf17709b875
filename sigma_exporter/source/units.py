"""Sigma's unit strings to base units.

Sigma writes sizes as `"3302MB"`, percentages as `"59.3%"`, durations as
`"1D09h31m20s"` and times as ISO-8601 UTC or as wall time without a zone
(read by the one rule of `wall_clock_zone`). Its MB,
GB and KB are binary (MiB, GiB, KiB): `ramTotal` 128347 MB is a 128 GiB host
and an A10's 22731 MB is its 24 GB of memory in MiB.

Every function returns `None` for input it cannot read; it never raises.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sigma_exporter.config import SERVER_TIMEZONE

# The one unit table: suffix (lower case) -> factor to bytes.
SIZE_FACTORS: dict[str, float] = {
    "b": 1.0,
    "kb": 1024.0,
    "kib": 1024.0,
    "k": 1024.0,
    "mb": 1024.0**2,
    "mib": 1024.0**2,
    "m": 1024.0**2,
    "gb": 1024.0**3,
    "gib": 1024.0**3,
    "g": 1024.0**3,
    "tb": 1024.0**4,
    "tib": 1024.0**4,
    "t": 1024.0**4,
}
MIB = 1024.0**2

# Every pattern here reads its input in one pass: a value comes from the server,
# and a pattern that backtracks (`\s*` beside `\s*`, `\d+\.?\d*`) lets 64
# bytes of spaces cost a tenth of a second of the poll loop's CPU.
_NUMBER_WITH_SUFFIX = re.compile(
    r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%]*)\s*$"
)
# One `<number><unit>` part of a Sigma duration (`1D09h31m20s`), at a position.
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([dhms])", re.IGNORECASE)
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}  # in this order
# Sigma's own spelling, whole numbers and no spaces (`1D09h31m20s`): read by one
# match instead of the loop below, which reads every other spelling. Uptimes are
# read for every app and job of every poll.
_PLAIN_DURATION = re.compile(r"(?:(\d+)[dD])?(?:(\d+)[hH])?(?:(\d+)[mM])?(?:(\d+)[sS])?",
                             re.ASCII)
_LOCAL_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)", re.ASCII)
_CLOCK = re.compile(r"^\s*(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)\s*$")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _split(value: object) -> tuple[float, str] | None:
    """A JSON number or a numeric string with an optional unit suffix."""
    # Exact types first (no isinstance chain): this runs for most fields of
    # every answer. bool, a subclass of int, takes the slow path and is refused.
    if type(value) is float:
        return (value, "") if math.isfinite(value) else None
    if type(value) is int:
        try:
            return float(value), ""  # finite, or it overflows
        except OverflowError:
            return None
    if isinstance(value, str):
        if len(value) <= 64:
            match = _NUMBER_WITH_SUFFIX.match(value)
            if match:
                digits, suffix = match.groups()
                number = float(digits)
                if math.isfinite(number):
                    return number, suffix.lower()
        return None
    if isinstance(value, bool):
        return None  # JSON true/false is not a number
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None
        return (number, "") if math.isfinite(number) else None
    return None


def number(value: object) -> float | None:
    """A plain number, given as a JSON number or a string such as `"42"`."""
    split = _split(value)
    if split is None or split[1]:
        return None
    return split[0]


_FLAG_TEXT = {"1": True, "0": False, "true": True, "false": False}


def flag(value: object) -> bool | None:
    """A yes/no field: JSON `true`/`false`, the numbers 1 and 0, or those as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _FLAG_TEXT.get(value.strip().lower())
    split = _split(value)
    if split is None or split[0] not in (0.0, 1.0):
        return None
    return split[0] == 1.0


def percent_ratio(value: object) -> float | None:
    """`"59.3%"`, `59.3` or `"59.3"` -> 0.593."""
    split = _split(value)
    if split is None or split[1] not in ("", "%"):
        return None
    return split[0] / 100.0


def size_bytes(value: object, default_unit: str = "mb") -> float | None:
    """`"3302MB"` -> 3302 MiB in bytes; a bare number is in `default_unit`."""
    split = _split(value)
    if split is None:
        return None
    amount, unit = split
    factor = SIZE_FACTORS.get(unit or default_unit)
    if factor is None:
        return None
    return _finite(amount * factor)


def duration_seconds(value: object) -> float | None:
    """`"1D09h31m20s"`, `"7h00m50s"`, `"2m05s"`, `"45s"`, `"01:41:18"` or seconds."""
    if not isinstance(value, str):
        return None if isinstance(value, bool) else number(value)
    if len(value) > 64:
        return None
    seconds = _sigma_duration(value.strip())
    if seconds is not None:
        return seconds
    match = _CLOCK.match(value)
    if match:
        return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))
    return number(value)


def _sigma_duration(value: str) -> float | None:
    """`1D09h31m20s`: day, hour, minute, second parts, each at most once, in order."""
    plain = _PLAIN_DURATION.fullmatch(value)
    if plain is not None and plain.lastindex is not None:
        # The same sum, in the same order, as the loop's: the same float.
        total = 0.0
        for number, scale in zip(plain.groups(), _DURATION_UNITS.values(), strict=True):
            if number is not None:
                total += float(number) * scale
        return total
    total, position, last = 0.0, 0, ""
    while position < len(value):
        match = _DURATION_PART.match(value, position)
        if match is None:
            return None
        unit = match.group(2).lower()
        if last and "dhms".index(unit) <= "dhms".index(last):
            return None
        if unit == "m" and value[match.end():match.end() + 1] in ("s", "S"):
            return None  # `5ms` is not five minutes
        total += float(match.group(1)) * _DURATION_UNITS[unit]
        last, position = unit, match.end()
    return total if last else None


def iso_timestamp(value: object) -> float | None:
    """ISO-8601 (`2024-03-02T16:53:51.624Z`) to Unix seconds; naive means UTC."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def wall_datetime(value: object) -> datetime | None:
    """A zone-less `YYYY-MM-DD hh:mm:ss` as a naive datetime (see `wall_clock_zone`)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    value = value.strip()
    # strptime is slow (~3 us, every job of every poll): read Sigma's own
    # zero-padded form directly and leave every other spelling to strptime.
    match = _LOCAL_TIME.fullmatch(value)
    if match:
        try:
            year, month, day, hour, minute, second = map(int, match.groups())
            return datetime(year, month, day, hour, minute, second)
        except ValueError:
            pass  # out of range: strptime says the same, below
    try:
        parsed = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return parsed


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo | None:
    """A time zone by IANA name, or None when the name is unknown.

    UTC, the default zone of wall times, needs no tz database on the host.
    """
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


# --- Wall times without a zone: the one rule ----------------------------------
#
# `progress` writes `created` and `startup` as `YYYY-MM-DD hh:mm:ss`, and its
# error lines begin `[MM-DD hh:mm:ss]`; none carries a zone. Every one of them
# is read in ONE zone per target, the one `wall_clock_zone` returns: the
# target's `timezone` setting, which is UTC unless the config says otherwise.
# The evidence (docs/time.md): Sigma's job monitoring page says error-line
# times are UTC; in the documented progress answer the error line (11:48:24,
# an input timeout) comes 101 s before `startup` (11:50:05, the restart it
# caused), so error lines and `startup` are written on one clock; and every
# time `dump` writes is UTC (`...Z`). Nothing documents `startup` itself, so
# a target can say `timezone: server` (the zone its dump names) or an IANA name.


def wall_clock_zone(configured: str, server_zone: str | None) -> str | None:
    """The zone a target's zone-less wall times are read in.

    `configured` is the target's `timezone` (default UTC); `server` means the
    zone the target's last dump named, None until one did: no time is guessed.
    """
    return server_zone if configured == SERVER_TIMEZONE else configured


def wall_to_timestamp(wall: datetime, zone_name: str | None) -> float | None:
    """Unix seconds of a zone-less wall time read in `zone_name`; None without a zone."""
    if zone_name is None:
        return None
    tz = zone(zone_name)
    if tz is None:
        return None
    try:
        return wall.replace(tzinfo=tz).timestamp()
    except (OverflowError, OSError, ValueError):
        return None


_MONTH_DAY_TIME = re.compile(r"(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)", re.ASCII)


def month_day_timestamp(value: str, zone_name: str | None, near: float) -> float | None:
    """An error line's `MM-DD hh:mm:ss` (no year) in Unix seconds.

    Read in `zone_name` like every wall time (`wall_clock_zone`); the year is
    the one that puts the time nearest to `near` (when the answer arrived), so
    a line of 31 December read on 1 January is last year's.
    """
    match = _MONTH_DAY_TIME.fullmatch(value.strip())
    tz = zone(zone_name) if zone_name is not None else None
    if match is None or tz is None or not math.isfinite(near):
        return None
    month, day, hour, minute, second = map(int, match.groups())
    try:
        year = datetime.fromtimestamp(near, tz).year
    except (OverflowError, OSError, ValueError):
        return None
    best: float | None = None
    for candidate in (year - 1, year, year + 1):
        try:
            ts = datetime(candidate, month, day, hour, minute, second, tzinfo=tz).timestamp()
        except (OverflowError, OSError, ValueError):
            continue  # 29 February of a common year, or out of range
        if best is None or abs(ts - near) < abs(best - near):
            best = ts
    return best
