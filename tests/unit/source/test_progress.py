"""Per-channel metrics from `progress`, and counters across a sequence of polls."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import load_fixture, samples
from feed import Fed

from sigma_exporter.collect.counters import ErrorLineCounter, error_code
from sigma_exporter.collect.samples import UP_STATES_JOB
from sigma_exporter.collect.sigma import ProgressSource
from sigma_exporter.config import JobsConfig, TargetConfig
from sigma_exporter.source.client import PollError
from sigma_exporter.source.jobstates import DOCUMENTED_STATES, state_meaning
from sigma_exporter.source.parse import parse_progress

JOB = "$job_name"
Exposed = dict[tuple[str, frozenset[tuple[str, str]]], float]


def progress_with(jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"total": len(jobs), "ec": 0, "result": jobs, "Tel": 2}


def base_job() -> dict[str, Any]:
    job: dict[str, Any] = copy.deepcopy(load_fixture("progress-sample.json")["result"][JOB])
    return job


class Target:
    """A target fed with literal answers, one round per call (tests/feed.py)."""

    def __init__(self, **config: Any) -> None:
        self.fed = Fed(TargetConfig(name="t1", url="http://127.0.0.1:9"), **config)
        self.state = self.fed.state
        self.dump = load_fixture("dump-sample.json")

    def round(self, progress: Any, dump: Any = None) -> Exposed:
        self.fed.round(dump or self.dump, progress, received_at=1709398433.0)
        return samples(self.fed.text())


def v(out: Exposed, metric: str, /, **labels: str) -> float | None:
    return out.get((metric, frozenset({"target": "t1", **labels}.items())))


# --- conversions ---------------------------------------------------------------


def test_documented_progress_sample_conversions() -> None:
    out = Target().round(load_fixture("progress-sample.json"))
    assert v(out, "sigma_progress_up") == 1
    assert v(out, "sigma_job_up", job_name=JOB) == 1
    assert v(out, "sigma_job_state", job_name=JOB, state="started") == 1
    assert v(out, "sigma_job_speed", job_name=JOB) == 1.0
    assert v(out, "sigma_job_uptime_seconds", job_name=JOB) == 3600 + 41 * 60 + 18
    assert v(out, "sigma_job_media_time_seconds", job_name=JOB) == 3600 + 41 * 60 + 19
    # startup 2020-08-13 11:50:05 in Asia/Ho_Chi_Minh (UTC+7) = 04:50:05 UTC.
    # startup 2020-08-13 11:50:05, read in UTC (the default `timezone`).
    assert v(out, "sigma_job_start_timestamp_seconds", job_name=JOB) == 1597319405
    assert v(out, "sigma_job_input_bytes_per_second", job_name=JOB, input="0") == 2390646 / 8
    assert v(out, "sigma_job_input_info", job_name=JOB, input="0", url="udp://234.5.6.7:8888") == 1
    assert v(out, "sigma_job_profile_bytes_per_second", job_name=JOB, profile="128K") == 128760 / 8
    assert v(out, "sigma_job_profile_bytes_per_second", job_name=JOB, profile="480") == 962192 / 8
    assert v(out, "sigma_job_output_bytes_per_second", job_name=JOB, output="0",
             format="hls") == 5211223 / 8
    assert v(out, "sigma_job_errors_listed", job_name=JOB) == 1
    assert v(out, "sigma_job_errors_total", job_name=JOB, code="INPUT_TIMEOUT") == 1
    assert v(out, "sigma_job_weight", job_name=JOB) == 1
    assert v(out, "sigma_jobs_dropped") == 0


def test_as_documented_progress_keeps_dump_metrics() -> None:
    out = Target().round(PollError("invalid_json", "Expecting ',' delimiter"))
    assert v(out, "sigma_progress_up") == 0
    assert v(out, "sigma_poll_errors_total", source="progress", reason="invalid_json") == 1
    assert v(out, "sigma_up") == 1
    assert v(out, "sigma_host_memory_total_bytes") is not None
    assert not any(k[0].startswith("sigma_job_") for k in out)


def test_failed_dump_keeps_progress_metrics() -> None:
    target = Target()
    target.round(load_fixture("progress-sample.json"))
    out = target.round(load_fixture("progress-sample.json"), PollError("connect", "refused"))
    assert v(out, "sigma_up") == 0 and v(out, "sigma_progress_up") == 1
    assert v(out, "sigma_job_speed", job_name=JOB) == 1.0
    assert v(out, "sigma_host_memory_total_bytes") is None


def test_progress_without_result_is_invalid_schema() -> None:
    out = Target().round({"ec": 0, "total": 0})
    assert v(out, "sigma_poll_errors_total", source="progress", reason="invalid_schema") == 1


def test_mixed_case_keys_id_and_url() -> None:
    job = base_job()
    job["INPUT"] = [{"url": "rtmp://user:pw@cdn.example/live?token=abc", "BITRATE": "800000"}]
    del job["input"]
    job["Profile"] = [{"Id": "720", "Bitrate": 2000000}]
    del job["profile"]
    del job["speed"]
    job["SPEED"] = "0.95"
    out = Target().round(progress_with({"VTV3": job}))
    assert v(out, "sigma_job_input_info", job_name="VTV3", input="0",
             url="rtmp://cdn.example/live") == 1
    assert v(out, "sigma_job_input_bytes_per_second", job_name="VTV3", input="0") == 100000
    assert v(out, "sigma_job_profile_bytes_per_second", job_name="VTV3", profile="720") == 250000
    assert v(out, "sigma_job_speed", job_name="VTV3") == 0.95


def test_state_any_case_and_not_running() -> None:
    job = base_job()
    job["state"] = "Running"
    stopped = base_job()
    stopped["state"] = "STOPPED"
    out = Target().round(progress_with({"a": job, "b": stopped}))
    assert v(out, "sigma_job_up", job_name="a") == 1
    assert v(out, "sigma_job_up", job_name="b") == 0
    assert v(out, "sigma_job_state", job_name="b", state="stopped") == 1


def test_wall_times_are_utc_whatever_zone_the_dump_names() -> None:
    target = Target()
    target.dump = dict(target.dump, timezone="Europe/Berlin")
    job = base_job()
    job["startup"] = "2024-07-01 12:00:00"
    out = target.round(progress_with({"a": job}))
    assert v(out, "sigma_job_start_timestamp_seconds", job_name="a") == 1719835200  # as UTC


def test_timezone_server_follows_the_dump() -> None:
    target = Target(timezone="server")
    target.dump = dict(target.dump, timezone="Europe/Berlin")
    job = base_job()
    job["startup"] = "2024-07-01 12:00:00"
    out = target.round(progress_with({"a": job}))
    assert v(out, "sigma_job_start_timestamp_seconds", job_name="a") == 1719828000  # UTC+2


def test_timezone_named_in_the_config_wins_over_the_dump() -> None:
    target = Target(timezone="Asia/Ho_Chi_Minh")
    target.dump = dict(target.dump, timezone="Europe/Berlin")
    out = target.round(load_fixture("progress-sample.json"))
    # 11:50:05 in Ho Chi Minh City (UTC+7) is 04:50:05 UTC.
    assert v(out, "sigma_job_start_timestamp_seconds", job_name=JOB) == 1597294205


def test_timezone_server_without_a_zone_gives_no_start_timestamp() -> None:
    target = Target(timezone="server")
    target.dump = {k: val for k, val in target.dump.items() if k != "timezone"}
    out = target.round(load_fixture("progress-sample.json"))
    assert v(out, "sigma_job_start_timestamp_seconds", job_name=JOB) is None
    assert v(out, "sigma_job_speed", job_name=JOB) == 1.0
    # The default needs no zone from the server.
    out = Target().round(load_fixture("progress-sample.json"),
                         dump={k: val for k, val in target.dump.items()})
    assert v(out, "sigma_job_start_timestamp_seconds", job_name=JOB) == 1597319405


def test_error_line_with_and_without_code() -> None:
    assert error_code("[08-13 11:48:24] Input timeout (code: INPUT_TIMEOUT)") == "INPUT_TIMEOUT"
    assert error_code("[08-13 11:48:24] Decoder stalled (code:DECODE_ERROR)") == "DECODE_ERROR"
    assert error_code("[08-13 11:48:24] something odd happened") == "unknown"


def test_unparsable_job_fields_are_counted_and_bounded() -> None:
    job = base_job()
    job["speed"] = "fast"
    job["input"][0]["bitrate"] = None
    parsed = parse_progress(progress_with({"a": job, "b": job}))
    assert parsed is not None
    assert sorted(set(parsed.errors)) == ["job.input[].bitrate", "job.speed"]
    out = Target().round(progress_with({"a": job}))
    assert v(out, "sigma_parse_errors_total", field="progress.job.speed") == 1


# --- filters and cardinality -------------------------------------------------------


def test_include_exclude_and_max() -> None:
    jobs = {name: base_job() for name in ("VTV1", "VTV2", "VTV3-test", "HTV7", "VTV4")}
    target = Target(jobs=JobsConfig(include=__import__("re").compile("^VTV"),
                                    exclude=__import__("re").compile("-test$"), max=2))
    out = target.round(progress_with(jobs))
    kept = sorted(dict(k[1])["job_name"] for k in out if k[0] == "sigma_job_up")
    assert kept == ["VTV1", "VTV2"]
    assert v(out, "sigma_jobs_dropped") == 3


def test_disabled_jobs_poll_nothing() -> None:
    target = Target(jobs=JobsConfig(enabled=False))
    out = target.round(None)
    assert target.fed.client.asked == ["dump"]
    assert v(out, "sigma_progress_up") is None
    assert not any(k[0].startswith(("sigma_job_", "sigma_jobs_dropped")) for k in out)


def test_vanished_job_takes_its_series_and_memory() -> None:
    target = Target()
    target.round(progress_with({"a": base_job(), "b": base_job()}))
    out = target.round(progress_with({"a": base_job()}))
    assert v(out, "sigma_job_up", job_name="b") is None
    progress = target.state.sources[1]
    assert isinstance(progress, ProgressSource)
    assert "b" not in progress.job_errors and "b" not in progress.job_uptimes


# --- counters over a sequence of polls ---------------------------------------------

L1 = "[08-13 11:48:24] Input timeout (code: INPUT_TIMEOUT)"
L2 = "[08-13 11:49:01] Decode error (code: DECODE_ERROR)"
L3 = "[08-13 11:50:13] Input timeout (code: INPUT_TIMEOUT)"
L4 = "[08-13 11:51:00] Output stalled"


def job_with(errors: list[str], life: str = "1h41m18s") -> dict[str, Any]:
    job = base_job()
    job["error"] = errors
    job["Life"] = life
    return job


def errors(out: Exposed, code: str) -> float | None:
    return v(out, "sigma_job_errors_total", job_name="a", code=code)


def test_steady_list_does_not_increase() -> None:
    target = Target()
    for _ in range(5):
        out = target.round(progress_with({"a": job_with([L1, L2])}))
    assert errors(out, "INPUT_TIMEOUT") == 1 and errors(out, "DECODE_ERROR") == 1


def test_sliding_window_counts_exactly_the_new_lines() -> None:
    target = Target()
    target.round(progress_with({"a": job_with([L1, L2])}))
    out = target.round(progress_with({"a": job_with([L2, L3])}))  # L1 slid out, L3 new
    assert errors(out, "INPUT_TIMEOUT") == 2 and errors(out, "DECODE_ERROR") == 1
    out = target.round(progress_with({"a": job_with([L3, L4])}))
    assert errors(out, "unknown") == 1 and errors(out, "INPUT_TIMEOUT") == 2
    out = target.round(progress_with({"a": job_with([])}))  # list emptied: no change
    assert errors(out, "INPUT_TIMEOUT") == 2
    assert v(out, "sigma_job_errors_listed", job_name="a") == 0


def test_duplicate_lines_count_once() -> None:
    out = Target().round(progress_with({"a": job_with([L1, L1, L1])}))
    assert errors(out, "INPUT_TIMEOUT") == 1
    assert v(out, "sigma_job_errors_listed", job_name="a") == 3


def test_exporter_restart_counts_lines_already_listed() -> None:
    first = Target()
    first.round(progress_with({"a": job_with([L1, L2])}))
    out = Target().round(progress_with({"a": job_with([L1, L2])}))  # a fresh exporter
    assert errors(out, "INPUT_TIMEOUT") == 1 and errors(out, "DECODE_ERROR") == 1


def test_seen_lines_memory_is_bounded() -> None:
    counter = ErrorLineCounter(max_remembered=8)
    for i in range(100):
        counter.observe((f"[{i}] x (code: C)", f"[{i + 1}] x (code: C)"))
    assert len(counter.seen) <= 8
    assert counter.by_code["C"] == 101  # still exact for a sliding window


def test_job_restart_counts_when_life_goes_down() -> None:
    target = Target()
    target.round(progress_with({"a": job_with([], life="1h00m00s")}))
    out = target.round(progress_with({"a": job_with([], life="1h00m15s")}))
    assert v(out, "sigma_job_restarts_total", job_name="a") == 0  # first sight, growing
    out = target.round(progress_with({"a": job_with([], life="12s")}))
    assert v(out, "sigma_job_restarts_total", job_name="a") == 1


def test_app_restart_counts_when_uptime_goes_down() -> None:
    target = Target()
    progress = load_fixture("progress-sample.json")
    out = target.round(progress)
    assert v(out, "sigma_app_restarts_total", app="nginx") == 0
    dump = copy.deepcopy(target.dump)
    dump["APPS"][1]["Life"] = "5s"
    out = target.round(progress, dump)
    assert v(out, "sigma_app_restarts_total", app="nginx") == 1
    assert v(out, "sigma_app_restarts_total", app="origin") == 0


def test_server_restart_counts_when_start_moves() -> None:
    target = Target()
    progress = load_fixture("progress-sample.json")
    out = target.round(progress)
    assert v(out, "sigma_server_restarts_total") == 0
    out = target.round(progress)
    assert v(out, "sigma_server_restarts_total") == 0
    dump = dict(target.dump, start="2024-03-02T17:00:00.000Z")
    out = target.round(progress, dump)
    assert v(out, "sigma_server_restarts_total") == 1
    # The counter survives a failed poll (it is a health series).
    out = target.round(progress, PollError("connect", "refused"))
    assert v(out, "sigma_server_restarts_total") == 1


@pytest.mark.parametrize("junk", [None, 5, "x", [], [1, None, {"a": 1}], {"a": "b"}])
def test_junk_error_lists_never_raise(junk: Any) -> None:
    job = base_job()
    job["error"] = junk
    Target().round(progress_with({"a": job}))


# --- job states and error classes --------------------------------------------------


def test_each_documented_state_is_mapped_on_purpose() -> None:
    """Sigma's five states as it spells them: only `started` is up; the others are 0
    (coming up, error and stop alike); the rules tell coming up from down."""
    reported = {"starting": "starting", "preparing": "preparing", "started": "started",
                "error": "error", "Stop": "stop", "running": "running"}
    jobs = {}
    for name, state in reported.items():
        jobs[name] = base_job()
        jobs[name]["state"] = state
    out = Target().round(progress_with(jobs))
    up = {name: v(out, "sigma_job_up", job_name=name) for name in reported}
    assert up == {"starting": 0, "preparing": 0, "started": 1, "error": 0, "Stop": 0,
                  "running": 1}
    for name, label in reported.items():
        assert v(out, "sigma_job_state", job_name=name, state=label) == 1
    states = [k for k in out if k[0] == "sigma_job_state"]
    assert len(states) == len(reported)  # one series per job: its current state


def test_an_unknown_state_is_carried_bounded() -> None:
    odd, long_state, ok = base_job(), base_job(), base_job()
    odd["state"] = 'Läuft {x="1"}'
    long_state["state"] = "re-trying." + "x" * 100
    ok["state"] = "paused_2"
    out = Target().round(progress_with({"odd": odd, "long": long_state, "ok": ok}))
    assert v(out, "sigma_job_state", job_name="odd", state="l_uft__x__1__") == 1
    assert v(out, "sigma_job_state", job_name="long",
             state="re-trying." + "x" * 22) == 1
    assert v(out, "sigma_job_state", job_name="ok", state="paused_2") == 1
    assert all(v(out, "sigma_job_up", job_name=n) == 0 for n in ("odd", "long", "ok"))


IN_LINE = "[05-26 02:32:55] Input timeout (code: INPUT_TIMEOUT)"
OUT_LINE = "[05-26 02:33:10] Output timeout (code: OUTPUT_TIMEOUT)"
BOTH_LINE = "[05-26 02:33:12] Read or write error (code: IO_ERROR)"
CONFIG_LINE = "[05-26 02:33:14] Wrong parameter (code: INVALID_ARGUMENT)"
HOST_LINE = "[05-26 02:33:15] Out of RAM (code: MEMORY_IS_FULL)"


def by_class(out: Exposed, job: str = "a") -> dict[str, float | None]:
    return {c: v(out, "sigma_job_errors_by_class_total", job_name=job, **{"class": c})
            for c in ("input", "output", "processing", "config", "unknown")}


def test_every_class_exists_at_zero_for_a_job_without_errors() -> None:
    out = Target().round(progress_with({"a": job_with([])}))
    assert by_class(out) == dict.fromkeys(("input", "output", "processing", "config",
                                           "unknown"), 0)


def test_errors_count_by_their_documented_class() -> None:
    """Input trouble (the feed) and output trouble (CDN, disk) are told apart; IO_ERROR
    is both and counts in both; an undocumented code and a line without one are unknown."""
    target = Target()
    target.round(progress_with({"a": job_with([IN_LINE, OUT_LINE])}))
    out = target.round(progress_with({"a": job_with([OUT_LINE, BOTH_LINE, CONFIG_LINE,
                                                     HOST_LINE, L2, L4])}))
    assert by_class(out) == {"input": 2, "output": 2, "processing": 1, "config": 1,
                             "unknown": 2}
    assert errors(out, "IO_ERROR") == 1  # by code, the line counts once
    out = target.round(progress_with({"a": job_with([OUT_LINE, BOTH_LINE])}))  # nothing new
    assert by_class(out)["output"] == 2


def test_a_line_over_the_code_cap_keeps_its_class() -> None:
    counter = ErrorLineCounter(max_codes=1)
    counter.observe((IN_LINE, OUT_LINE, CONFIG_LINE))
    assert counter.by_code == {"INPUT_TIMEOUT": 1, "other": 2}
    assert counter.by_class == {"input": 1, "output": 1, "processing": 0, "config": 1,
                                "unknown": 0}


def test_each_state_means_one_thing() -> None:
    meanings = {s: state_meaning(s) for s in (*DOCUMENTED_STATES, "running", "paused", None)}
    assert meanings == {"starting": "coming up", "preparing": "coming up", "started": "up",
                        "error": "down", "stop": "stopped", "running": "up", "paused": "down",
                        None: None}
    assert {s for s, m in meanings.items() if m == "up"} == UP_STATES_JOB
