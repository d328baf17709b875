"""The dump parser: every conversion of the metric table and every quirk."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import load_fixture, samples

from sigma_exporter.collect import exposition
from sigma_exporter.collect.samples import dump_samples
from sigma_exporter.source import fields, units
from sigma_exporter.source.fields import text
from sigma_exporter.source.parse import parse_dump

MIB = 1024 * 1024
RECEIVED_AT = 1709398431.624 + 2.5  # exporter clock 2.5 s ahead of the server


def expose(obj: Any, target: str = "t1") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    parsed = parse_dump(obj)
    rendered = exposition.render(dump_samples(target, parsed.value, RECEIVED_AT))
    return samples(exposition.merge([rendered], openmetrics=False).decode())


def v(out: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /,
      **labels: str) -> float:
    return out[(metric, frozenset({"target": "t1", **labels}.items()))]


@pytest.fixture
def dump() -> dict[str, Any]:
    data: dict[str, Any] = load_fixture("dump-sample.json")
    return data


def test_documented_dump_parses_without_errors(dump: dict[str, Any]) -> None:
    assert parse_dump(dump).errors == ()


def test_server_info_labels(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_server_info", name="sigma-server-01", version="3.0.12",
             branch="Commercial", hostname="sigma-media-server-01",
             timezone="Asia/Ho_Chi_Minh") == 1


def test_build_and_start_iso_to_unix(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_server_build_timestamp_seconds") == pytest.approx(1709188209.65)
    assert v(out, "sigma_server_start_timestamp_seconds") == pytest.approx(1709277750.669)


def test_clock_skew_is_server_minus_exporter(dump: dict[str, Any]) -> None:
    assert v(expose(dump), "sigma_server_clock_skew_seconds") == pytest.approx(-2.5)


def test_speed_queue_total(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_server_speed") == 1
    assert v(out, "sigma_jobs_queued") == 0
    assert v(out, "sigma_jobs") == 6


def test_tasks_by_lower_case_state(dump: dict[str, Any]) -> None:
    dump["task"] = {"Started": 6, "STOPPED": "2"}
    out = expose(dump)
    assert v(out, "sigma_tasks", state="started") == 6
    assert v(out, "sigma_tasks", state="stopped") == 2


def test_codecs_encode_and_decode(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_codec_info", device="NVIDIA A10", direction="encode",
             codec="hevc@yuv444p10le") == 1
    assert v(out, "sigma_codec_info", device="NVIDIA A10", direction="decode",
             codec="h264@yuv420p") == 1
    encoders = [k for k in out if k[0] == "sigma_codec_info" and ("direction", "encode") in k[1]]
    assert len(encoders) == 8


def test_host_figures(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_host_info", os="Ubuntu 22.04.4 LTS") == 1
    assert v(out, "sigma_host_cpu_cores") == 64
    assert v(out, "sigma_host_cpu_utilization_ratio") == 0
    assert v(out, "sigma_server_threads") == 39


def test_host_cpu_percent_to_ratio(dump: dict[str, Any]) -> None:
    dump["System"]["cpu"] = 37.5
    assert v(expose(dump), "sigma_host_cpu_utilization_ratio") == pytest.approx(0.375)


def test_memory_mib_to_bytes(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_host_memory_total_bytes") == 128347 * MIB
    assert v(out, "sigma_host_memory_used_bytes") == 13564 * MIB
    assert v(out, "sigma_host_swap_total_bytes") == 16383 * MIB
    assert v(out, "sigma_host_swap_used_bytes") == 0


def test_stats_update_time(dump: dict[str, Any]) -> None:
    assert v(expose(dump), "sigma_host_stats_timestamp_seconds") == pytest.approx(1709398431.0)


def test_network_interfaces(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_host_network_info", interface="bond1.901", address="172.16.10.15",
             cidr="172.16.10.0/24") == 1


def test_storage_retention_delay_and_folders(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_storage_retention_seconds", storage="0") == 604800
    assert v(out, "sigma_storage_cleanup_delay_seconds", storage="0") == 360
    assert v(out, "sigma_storage_folder_info", storage="0", folder="/data/mediahub") == 1


def test_log_used_mib_to_bytes(dump: dict[str, Any]) -> None:
    assert v(expose(dump), "sigma_log_used_bytes", folder="/var/log/sigma-machine/") == 255 * MIB


def test_gpu_figures(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_gpu_info", gpu="0", name="NVIDIA A10") == 1
    assert v(out, "sigma_gpu_memory_total_bytes", gpu="0") == 22731 * MIB
    assert v(out, "sigma_gpu_memory_used_bytes", gpu="0") == 705 * MIB
    assert v(out, "sigma_gpu_utilization_ratio", gpu="0") == pytest.approx(0.02)
    assert v(out, "sigma_gpu_encoder_utilization_ratio", gpu="0") == pytest.approx(0.08)
    assert v(out, "sigma_gpu_decoder_utilization_ratio", gpu="0") == pytest.approx(0.02)
    assert v(out, "sigma_gpu_temperature_celsius", gpu="0") == 42


def test_undocumented_gpu_fields_exported_as_reported(dump: dict[str, Any]) -> None:
    dump["System"]["gpu"][0]["NewField"] = 7
    out = expose(dump)
    for field, expected in (("soft", 3), ("speed", 1), ("percent", 25), ("count", 3),
                            ("newfield", 7)):
        assert v(out, "sigma_gpu_reported_value", gpu="0", field=field) == expected


def test_process_percent_and_ram_string(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_process_cpu_ratio") == pytest.approx(0.593)
    assert v(out, "sigma_process_resident_memory_bytes") == 3302 * MIB
    assert v(out, "sigma_process_children") == 14


def test_apps(dump: dict[str, Any]) -> None:
    out = expose(dump)
    assert v(out, "sigma_app_up", app="nginx") == 1
    assert v(out, "sigma_app_state", app="nginx", state="running") == 1
    assert v(out, "sigma_app_uptime_seconds", app="nginx") == 7 * 3600 + 50
    assert v(out, "sigma_app_uptime_seconds", app="origin") == 86400 + 9 * 3600 + 31 * 60 + 20
    assert v(out, "sigma_app_cpu_ratio", app="origin") == pytest.approx(0.005)
    assert v(out, "sigma_app_resident_memory_bytes", app="nginx") == 346 * MIB
    assert v(out, "sigma_app_children", app="nginx") == 64


def test_app_state_any_case(dump: dict[str, Any]) -> None:
    dump["APPS"][1]["state"] = "RUNNING"
    dump["APPS"][2]["state"] = "Stopped"
    out = expose(dump)
    assert v(out, "sigma_app_up", app="nginx") == 1
    assert v(out, "sigma_app_up", app="prometheus-nginxlog-exporter") == 0
    assert v(out, "sigma_app_state", app="prometheus-nginxlog-exporter", state="stopped") == 1


# --- quirks -------------------------------------------------------------------


def test_quirk_key_case_varies_cpu_and_child(dump: dict[str, Any]) -> None:
    # CPU/cpu and Child/child both appear in the documented answer.
    out = expose(dump)
    assert v(out, "sigma_app_cpu_ratio", app="prometheus-nginxlog-exporter") == \
        pytest.approx(0.001)  # "CPU"
    assert v(out, "sigma_app_cpu_ratio", app="portal-local") == 0  # "cpu"


def test_quirk_key_case_system_storage_apps(dump: dict[str, Any]) -> None:
    dump["system"] = dump.pop("System")
    dump["system"]["STORAGE"] = dump["system"].pop("Storage")
    dump["apps"] = dump.pop("APPS")
    parsed = parse_dump(dump)
    assert parsed.errors == ()
    assert parsed.value.storages[0].retention_seconds == 604800
    assert len(parsed.value.apps) == 6


def test_quirk_encoder_decoder_case(dump: dict[str, Any]) -> None:
    supported = dump["supported"][0]
    supported["ENCODER"] = supported.pop("Encoder")
    supported["Decoder"] = supported.pop("decoder")
    assert len(parse_dump(dump).value.codecs) == 11


def test_quirk_numbers_as_plain_strings(dump: dict[str, Any]) -> None:
    dump["queue"] = "3"
    dump["System"]["cores"] = "64"
    dump["System"]["gpu"][0]["temp"] = "55"
    out = expose(dump)
    assert v(out, "sigma_jobs_queued") == 3
    assert v(out, "sigma_host_cpu_cores") == 64
    assert v(out, "sigma_gpu_temperature_celsius", gpu="0") == 55


def test_quirk_null_field_is_left_out_and_counted(dump: dict[str, Any]) -> None:
    dump["System"]["gpu"][0]["temp"] = None
    dump["queue"] = None
    parsed = parse_dump(dump)
    assert set(parsed.errors) == {"system.gpu[].temp", "queue"}
    out = expose(dump)
    assert ("sigma_gpu_temperature_celsius", frozenset({"target": "t1", "gpu": "0"}.items())) \
        not in out
    assert v(out, "sigma_gpu_memory_used_bytes", gpu="0") == 705 * MIB  # the rest stays


def test_quirk_unparsable_field_is_left_out_and_counted(dump: dict[str, Any]) -> None:
    dump["System"]["process"]["CPU"] = "lots"
    dump["System"]["ramUsed"] = "12 apples"
    parsed = parse_dump(dump)
    assert set(parsed.errors) == {"system.process.cpu", "system.ramused"}
    assert parsed.value.process is not None and parsed.value.process.cpu_ratio is None
    assert parsed.value.memory_total_bytes == 128347 * MIB


def test_quirk_missing_optional_fields_are_not_errors() -> None:
    parsed = parse_dump({"name": "x", "version": "1", "start": "2024-01-01T00:00:00Z",
                         "System": {}})
    assert parsed.errors == ()
    assert parsed.value.gpus == () and parsed.value.apps == ()


def test_quirk_missing_required_fields_are_errors() -> None:
    assert set(parse_dump({}).errors) == {"name", "version", "start", "system"}


def test_quirk_empty_and_missing_lists(dump: dict[str, Any]) -> None:
    dump["System"]["gpu"] = []
    dump["supported"] = []
    del dump["APPS"]
    parsed = parse_dump(dump)
    assert parsed.errors == ()
    out = expose(dump)
    assert not any(k[0].startswith("sigma_gpu_") for k in out)
    assert not any(k[0].startswith("sigma_app_") for k in out)


def test_quirk_gpu_without_index_uses_position(dump: dict[str, Any]) -> None:
    gpu = dump["System"]["gpu"][0]
    del gpu["index"]
    dump["System"]["gpu"].append(dict(gpu, name="NVIDIA T4"))
    assert [g.index for g in parse_dump(dump).value.gpus] == ["0", "1"]


def test_quirk_duplicate_entries_do_not_duplicate_series(dump: dict[str, Any]) -> None:
    dump["APPS"].append(copy.deepcopy(dump["APPS"][0]))
    dump["System"]["gpu"].append(copy.deepcopy(dump["System"]["gpu"][0]))
    parsed = parse_dump(dump)
    assert len(parsed.value.apps) == 6 and len(parsed.value.gpus) == 1


def test_quirk_wrong_types_everywhere_never_raise() -> None:
    weird: list[Any] = [
        {"System": []}, {"System": {"gpu": {"0": 1}}}, {"System": {"gpu": [1, "x", None]}},
        {"APPS": "nginx"}, {"APPS": [{"process": 5}]}, {"task": [1]}, {"supported": [{"Encoder":
        "h264"}]}, {"name": {"a": 1}}, {"System": {"network": [{"name": None}]}},
        {"System": {"log": []}}, {"System": {"Storage": [{"folder": "x", "time": "1h"}]}},
        {1: 2}, {"start": 10**400},
    ]
    for obj in weird:
        parsed = parse_dump(obj)
        dump_samples("t", parsed.value, 0.0)  # the collector takes it too


def test_quirk_non_object_is_one_error() -> None:
    assert parse_dump([1, 2]).errors == ("dump",)


def test_quirk_unknown_timezone_is_a_parse_error(dump: dict[str, Any]) -> None:
    dump["timezone"] = "Mars/Olympus"
    parsed = parse_dump(dump)
    assert parsed.errors == ("timezone",)
    assert parsed.value.timezone is None


def test_quirk_label_values_are_valid_utf8_and_bounded(dump: dict[str, Any]) -> None:
    dump["name"] = "bad\ud800surrogate" + "x" * 1000
    parsed = parse_dump(dump)
    assert parsed.value.name is not None
    parsed.value.name.encode("utf-8")
    assert len(parsed.value.name) <= 256


def test_shapes_kept_to_fold_keys_are_bounded() -> None:
    """A server inventing object shapes (many keys, long keys, a new shape every
    poll) cannot grow the exporter's memory of shapes past its caps; past them
    each object is still read case-insensitively, the first of a case pair winning."""
    fields._KEY_MAPS.clear()
    wide = {f"k{i}": i for i in range(fields.MAX_SHAPE_KEYS + 1)}
    long_keys = {"x" * 1500: 1, "y" * 1500: 2}
    for obj in (wide, long_keys):
        fields.Fields(obj, "", [], fields.Budget(None))
    assert fields._KEY_MAPS == {}
    for n in range(fields.MAX_SHAPES + 10):
        fields.Fields({f"junk{n}": 1}, "", [], fields.Budget(None))
    assert len(fields._KEY_MAPS) == fields.MAX_SHAPES
    late = fields.Fields({"Name": "first", "NAME": "second", "cpu": "5%"}, "", [],
                         fields.Budget(None))
    assert late.get("name", text) == "first"
    assert late.get("cpu", units.percent_ratio) == 0.05
    fields._KEY_MAPS.clear()
