"""The tail of the complete documented dump: licence, control-plane link, `dt`, `now`.

`tests/fixtures/dump-sample-complete.json` is the complete documented answer
(after `APPS`: `nats`, `licenseStatus`, `ec`, `result`, `dt`, `now`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from conftest import load_fixture, samples

from sigma_exporter.collect import exposition
from sigma_exporter.collect.samples import dump_samples
from sigma_exporter.source.parse import parse_dump

RECEIVED_AT = 1709398431.624 + 2.5
LICENSE_KEY = "Y7KI4-HHQX5-0N9QN-X8TLN-VOPE7"  # the documented sample's key

Out = dict[tuple[str, frozenset[tuple[str, str]]], float]


def expose(obj: Any) -> Out:
    parsed = parse_dump(obj)
    rendered = exposition.render(dump_samples("t1", parsed.value, RECEIVED_AT))
    return samples(exposition.merge([rendered], openmetrics=False).decode())


def v(out: Out, metric: str, /, **labels: str) -> float:
    return out[(metric, frozenset({"target": "t1", **labels}.items()))]


def names(out: Out) -> set[str]:
    return {name for name, _ in out}


@pytest.fixture
def dump() -> dict[str, Any]:
    data: dict[str, Any] = load_fixture("dump-sample-complete.json")
    return data


def test_complete_documented_dump_parses_without_errors(dump: dict[str, Any]) -> None:
    assert parse_dump(dump).errors == ()


def test_licence_is_a_state_metric(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_license_status", status="VALID") == 1
    assert [k for k in out if k[0] == "sigma_license_status"] == [
        ("sigma_license_status", frozenset({"target": "t1", "status": "VALID"}.items()))]


def test_control_plane_link_and_its_start(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_control_plane_connected") == 1
    # nats.startup, 136 ms after the server's start.
    assert v(out, "sigma_control_plane_connect_timestamp_seconds") == pytest.approx(
        1709277750.805)
    assert v(out, "sigma_control_plane_connect_timestamp_seconds") - v(
        out, "sigma_server_start_timestamp_seconds") == pytest.approx(0.136, abs=1e-6)


def test_undocumented_numbers_are_reported_as_they_are(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_server_reported_value", field="dt") == 0
    assert v(out, "sigma_server_reported_value", field="nats.hook") == 5000


@pytest.mark.parametrize(("connected", "expected"), [
    (0, 0.0), (1, 1.0), ("0", 0.0), ("1", 1.0), (True, 1.0), (False, 0.0), ("true", 1.0),
    (" FALSE ", 0.0), (1.0, 1.0)])
def test_connected_of_any_spelling(dump: dict[str, Any], connected: object,
                                   expected: float) -> None:
    dump["nats"]["connected"] = connected
    assert v(expose(dump), "sigma_control_plane_connected") == expected


@pytest.mark.parametrize("connected", [2, -1, "yes", "up", [], {}, 0.5])
def test_connected_unreadable_is_a_parse_error_and_no_series(dump: dict[str, Any],
                                                             connected: object) -> None:
    dump["nats"]["connected"] = connected
    parsed = parse_dump(dump)
    assert parsed.errors == ("nats.connected",)
    assert "sigma_control_plane_connected" not in names(expose(dump))


@pytest.mark.parametrize(("reported", "label"), [
    ("VALID", "VALID"), ("valid", "VALID"), (" Expired ", "EXPIRED"),
    ("not valid", "NOT_VALID"), ("trial-expired", "TRIAL_EXPIRED"),
    ("A" * 32, "A" * 32),
    # Too long, digits, symbols, non-ASCII: carried as `other`, never as written.
    ("A" * 33, "other"), (LICENSE_KEY, "other"), ("EXPIRED 2024-03-01", "other"),
    ("VALID!", "other"), ("GÜLTIG", "other"), ("_", "other"), ("x\ud800", "other"),
])
def test_licence_status_is_carried_as_reported_within_bounds(
        dump: dict[str, Any], reported: str, label: str) -> None:
    dump["licenseStatus"] = reported
    parsed = parse_dump(dump)
    assert parsed.errors == ()
    assert parsed.value.license_status == label
    assert v(expose(dump), "sigma_license_status", status=label) == 1


@pytest.mark.parametrize("reported", [5, True, None, "", "   ", ["VALID"], {"VALID": 1}])
def test_licence_status_unreadable_is_a_parse_error(dump: dict[str, Any],
                                                    reported: object) -> None:
    dump["licenseStatus"] = reported
    parsed = parse_dump(dump)
    assert parsed.errors == ("licensestatus",)
    assert "sigma_license_status" not in names(expose(dump))


def test_keys_of_any_case(dump: dict[str, Any]) -> None:
    tail = {"NATS": {"Connected": "0", "STARTUP": dump["nats"]["startup"], "Hook": "5000",
                     "License": LICENSE_KEY},
            "LicenseStatus": "Expired", "DT": "3", "Now": dump["now"]}
    for key in ("nats", "licenseStatus", "dt", "now", "local"):
        del dump[key]
    dump.update(tail)
    out = expose(dump)
    assert parse_dump(dump).errors == ()
    assert v(out, "sigma_license_status", status="EXPIRED") == 1
    assert v(out, "sigma_control_plane_connected") == 0
    assert v(out, "sigma_server_reported_value", field="nats.hook") == 5000
    assert v(out, "sigma_server_reported_value", field="dt") == 3
    # Without `local`, `now` is the server's clock.
    assert v(out, "sigma_server_clock_skew_seconds") == pytest.approx(-2.5)


def test_a_broken_tail_is_counted_by_path_and_the_rest_stays(dump: dict[str, Any]) -> None:
    dump["nats"] = {"ID": dump["nats"]["ID"], "license": LICENSE_KEY, "hook": "5s",
                    "startup": "yesterday", "connected": None}
    dump["dt"] = "fast"
    dump["now"] = 17
    parsed = parse_dump(dump)
    assert sorted(parsed.errors) == ["dt", "nats.connected", "nats.hook", "nats.startup",
                                     "now"]
    out = expose(dump)
    assert v(out, "sigma_license_status", status="VALID") == 1
    assert not {"sigma_control_plane_connected", "sigma_server_reported_value",
                "sigma_control_plane_connect_timestamp_seconds"} & names(out)
    assert v(out, "sigma_jobs") == 6  # the rest of the answer is read as ever


@pytest.mark.parametrize("nats", [[], "up", 1, None])
def test_nats_not_an_object_is_one_parse_error(dump: dict[str, Any], nats: object) -> None:
    dump["nats"] = nats
    parsed = parse_dump(dump)
    assert parsed.errors == ("nats",)
    assert "sigma_control_plane_connected" not in names(expose(dump))


def test_an_answer_without_the_tail_has_no_tail_series() -> None:
    """The documented sample cut inside APPS (dump-sample.json): nothing invented."""
    out = expose(load_fixture("dump-sample.json"))
    assert not {"sigma_license_status", "sigma_control_plane_connected",
                "sigma_control_plane_connect_timestamp_seconds",
                "sigma_server_reported_value"} & names(out)


def test_the_licence_key_is_not_read(dump: dict[str, Any]) -> None:
    """Neither the snapshot nor its samples hold the key, even one that is the status."""
    dump["licenseStatus"] = LICENSE_KEY
    dump["nats"]["hook"] = LICENSE_KEY
    parsed = parse_dump(dump)
    assert LICENSE_KEY not in repr(parsed)
    snapshot = parsed.value
    assert all(LICENSE_KEY not in repr(getattr(snapshot, f.name)) for f in fields(snapshot))
    assert LICENSE_KEY not in repr(dump_samples("t1", snapshot, RECEIVED_AT))
    assert LICENSE_KEY.replace("-", "_") not in repr(dump_samples("t1", snapshot, RECEIVED_AT))
