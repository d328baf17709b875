"""Every unit quirk of the Sigma API, one named test each."""

from __future__ import annotations

from datetime import datetime

import pytest

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


def test_local_time_with_zone() -> None:
    local = units.local_datetime("2020-08-13 11:50:05")
    assert local == datetime(2020, 8, 13, 11, 50, 5)
    # Ho Chi Minh City is UTC+7 (no DST): 11:50:05 local is 04:50:05 UTC.
    assert units.local_to_timestamp(local, "Asia/Ho_Chi_Minh") == 1597294205.0


def test_local_time_dst_zone() -> None:
    local = units.local_datetime("2024-07-01 12:00:00")
    assert local is not None
    assert units.local_to_timestamp(local, "Europe/Berlin") == 1719828000.0  # UTC+2


def test_local_time_without_zone_is_not_guessed() -> None:
    local = units.local_datetime("2020-08-13 11:50:05")
    assert local is not None
    assert units.local_to_timestamp(local, None) is None
    assert units.local_to_timestamp(local, "Mars/Olympus") is None
