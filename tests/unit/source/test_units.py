"""Every unit quirk of the Sigma API, one named test each."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import load_fixture

from sigma_exporter.source import units

MIB = 1024 * 1024


def test_percent_string_with_sign() -> None:
    assert units.percent_ratio("59.3%") == pytest.approx(0.593)


def test_percent_plain_number() -> None:
    assert units.percent_ratio(8) == pytest.approx(0.08)


def test_percent_zero_with_decimals() -> None:
    assert units.percent_ratio("0.0%") == 0.0


def test_percent_refuses_other_units() -> None:
    assert units.percent_ratio("59MB") is None


def test_size_megabytes_are_mebibytes() -> None:
    assert units.size_bytes("3302MB") == 3302 * MIB


def test_size_gigabytes_are_gibibytes() -> None:
    assert units.size_bytes("1GB") == 1024**3


def test_size_kilobytes_are_kibibytes() -> None:
    assert units.size_bytes("512KB") == 512 * 1024


def test_size_bare_number_defaults_to_mib() -> None:
    # ramTotal 128347 is a 128 GiB host: bare numbers are MiB.
    assert units.size_bytes(128347) == 128347 * MIB


def test_size_lower_case_suffix() -> None:
    assert units.size_bytes("28mb") == 28 * MIB


def test_size_unknown_suffix() -> None:
    assert units.size_bytes("12XB") is None


def test_duration_days_hours_minutes_seconds() -> None:
    assert units.duration_seconds("1D09h31m20s") == 86400 + 9 * 3600 + 31 * 60 + 20


def test_duration_hours_minutes_seconds() -> None:
    assert units.duration_seconds("7h00m50s") == 7 * 3600 + 50


def test_duration_minutes_seconds() -> None:
    assert units.duration_seconds("2m05s") == 125


def test_duration_seconds_only() -> None:
    assert units.duration_seconds("45s") == 45


def test_duration_plain_number_is_seconds() -> None:
    assert units.duration_seconds(604800) == 604800


def test_duration_clock_form() -> None:
    assert units.duration_seconds("01:41:18") == 3600 + 41 * 60 + 18


def test_duration_garbage() -> None:
    assert units.duration_seconds("soon") is None
    assert units.duration_seconds("") is None


def test_number_as_string() -> None:
    assert units.number("42") == 42.0


def test_number_refuses_bool() -> None:
    assert units.number(True) is None


def test_number_refuses_non_finite() -> None:
    assert units.number(float("inf")) is None
    assert units.number("nan") is None


def test_number_huge_int_does_not_raise() -> None:
    assert units.number(10**400) is None


def test_iso_time_utc_with_millis() -> None:
    assert units.iso_timestamp("2024-03-02T16:53:51.624Z") == pytest.approx(1709398431.624)


def test_iso_time_with_offset() -> None:
    assert units.iso_timestamp("2024-03-02T23:53:51+07:00") == pytest.approx(1709398431.0)


def test_iso_time_naive_is_utc() -> None:
    assert units.iso_timestamp("2024-03-02T16:53:51") == pytest.approx(1709398431.0)


def test_iso_time_garbage() -> None:
    assert units.iso_timestamp("yesterday") is None
    assert units.iso_timestamp(1709398431) is None


def test_wall_time_with_zone() -> None:
    wall = units.wall_datetime("2020-08-13 11:50:05")
    assert wall == datetime(2020, 8, 13, 11, 50, 5)
    # Ho Chi Minh City is UTC+7 (no DST): 11:50:05 there is 04:50:05 UTC.
    assert units.wall_to_timestamp(wall, "Asia/Ho_Chi_Minh") == 1597294205.0
    assert units.wall_to_timestamp(wall, "UTC") == 1597319405.0


def test_wall_time_dst_zone() -> None:
    wall = units.wall_datetime("2024-07-01 12:00:00")
    assert wall is not None
    assert units.wall_to_timestamp(wall, "Europe/Berlin") == 1719828000.0  # UTC+2


def test_wall_time_without_zone_is_not_guessed() -> None:
    wall = units.wall_datetime("2020-08-13 11:50:05")
    assert wall is not None
    assert units.wall_to_timestamp(wall, None) is None
    assert units.wall_to_timestamp(wall, "Mars/Olympus") is None


# --- the one rule for wall times without a zone --------------------------------


def test_wall_clock_zone_is_the_configured_one_or_the_servers() -> None:
    assert units.wall_clock_zone("UTC", "Asia/Ho_Chi_Minh") == "UTC"
    assert units.wall_clock_zone("Europe/Berlin", "Asia/Ho_Chi_Minh") == "Europe/Berlin"
    assert units.wall_clock_zone("server", "Asia/Ho_Chi_Minh") == "Asia/Ho_Chi_Minh"
    assert units.wall_clock_zone("server", None) is None  # never guessed


def test_utc_needs_no_tz_database() -> None:
    assert units.zone("UTC") is UTC


def test_the_documented_progress_answer_reads_on_one_clock() -> None:
    """The error line (an input timeout) precedes the restart it caused by 101 s."""
    sample = load_fixture("progress-sample.json")["result"]["$job_name"]
    startup = units.wall_datetime(sample["startup"])
    assert startup is not None
    start = units.wall_to_timestamp(startup, "UTC")
    assert start is not None
    stamp = sample["error"][0][1:15]  # "[08-13 11:48:24] Input timeout ..."
    error = units.month_day_timestamp(stamp, "UTC", near=start + 6078)  # + Life
    assert error is not None and start - error == 101


@pytest.mark.parametrize(("stamp", "zone", "near", "expected"), [
    # 2020-08-13 11:48:24 UTC, read in August 2020.
    ("08-13 11:48:24", "UTC", 1597325483.0, 1597319304.0),
    # The same wall time in Ho Chi Minh City (UTC+7) is 7 hours earlier.
    ("08-13 11:48:24", "Asia/Ho_Chi_Minh", 1597325483.0, 1597319304.0 - 7 * 3600),
    # 31 December read on 1 January is last year's...
    ("12-31 23:59:50", "UTC", 1704067205.0, 1704067190.0),
    # ...and 1 January read on 31 December (a server clock ahead) next year's.
    ("01-01 00:00:05", "UTC", 1704067190.0, 1704067205.0),
    # 29 February only exists in leap years: 2024 here.
    ("02-29 12:00:00", "UTC", 1709294400.0 + 86400, 1709208000.0),
])
def test_month_day_stamps_take_the_nearest_year(stamp: str, zone: str, near: float,
                                                expected: float) -> None:
    assert units.month_day_timestamp(stamp, zone, near) == expected


@pytest.mark.parametrize("stamp", ["13-01 00:00:00", "02-30 00:00:00", "8-13 11:48:24",
                                   "08-13 11:48", "08-13T11:48:24", "", "x" * 100])
def test_month_day_garbage(stamp: str) -> None:
    assert units.month_day_timestamp(stamp, "UTC", 1597325483.0) is None


def test_month_day_without_a_zone_is_not_guessed() -> None:
    assert units.month_day_timestamp("08-13 11:48:24", None, 1597325483.0) is None
    assert units.month_day_timestamp("08-13 11:48:24", "Mars/Olympus", 1597325483.0) is None
    assert units.month_day_timestamp("08-13 11:48:24", "UTC", float("nan")) is None


def test_duration_sigma_spelling_reads_as_any_other() -> None:
    """Sigma's own `1D09h31m20s` (read by one match) and the spellings the general
    reader takes (spaces, fractions, any case) give the same seconds; `5ms` is refused."""
    assert units.duration_seconds("1D09h31m20s") == units.duration_seconds(" 1d 09H 31m 20.0s")
    assert units.duration_seconds("3h") == units.duration_seconds("3 h") == 10800
    assert units.duration_seconds("90s") == 90
    assert units.duration_seconds("5ms") is None
    assert units.duration_seconds("1h1d") is None
    assert units.duration_seconds("1D1D") is None
