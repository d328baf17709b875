"""The cross-check of Sigma's GPU figures against NVML (sigma_exporter.agent.crosscheck).

Both sides come from one scenario: Sigma's entries go through the real dump
parser (Sigma's units), NVML's through the FakeBackend's conversion, so the
comparison sees exactly what it sees in production.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_exporter.agent.crosscheck import (
    MIB_PER_MB,
    CrossCheck,
    Result,
    Tolerances,
    crosscheck_samples,
    looks_like_mb_mib,
    names_agree,
    normalize_name,
)
from sigma_exporter.agent.nvml import MIB, GpuReading
from sigma_exporter.collect.samples import Samples
from sigma_exporter.logsetup import plain
from sigma_exporter.sim.scenario import Scenario, parse_scenario
from sigma_exporter.source.parse import parse_dump
from sigma_exporter.source.snapshot import Gpu

TRUTH: dict[str, Any] = {"used_mib": 4096, "gpu": 40, "mem": 12, "enc": 55, "dec": 20,
                         "temp": 50, "power_w": 90.5, "video_mhz": 1410, "sessions": 4,
                         "fps": 30, "latency_us": 1200}


def scenario(sigma: dict[str, Any] | None = None, gpus: int = 2,
             **spec: Any) -> Scenario:
    doc: dict[str, Any] = {
        "gpus": {f"gpu{i}": {"name": "NVIDIA A10", "total_mib": 22731, **spec}
                 for i in range(gpus)},
        "rounds": [{f"gpu{i}": TRUTH for i in range(gpus)}],
    }
    if sigma:
        doc["sigma"] = sigma
    return parse_scenario(doc)


def sigma_gpus(sc: Scenario, r: int = 0) -> tuple[Gpu, ...]:
    """Sigma's side as the exporter parses it from the simulator's answer."""
    entries = [sc.sigma_entry(i, r) for i in sc.sigma_indices()]
    return parse_dump({"System": {"gpu": entries}}).value.gpus


def run_rounds(sc: Scenario, rounds: int = 4, **kw: Any) -> Result:
    check = CrossCheck(**kw)
    result = Result()
    for r in range(rounds):
        result = check.update(sigma_gpus(sc, r), sc.nvml_readings(r))
    return result


def test_agreement_gives_no_mismatch() -> None:
    result = run_rounds(scenario())
    assert result.mismatched() == set()
    assert result.missing_gpus() == set()
    fields = {(g, f) for g, f, _ in result.mismatches}
    assert fields == {(g, f) for g in ("0", "1") for f in (
        "identity", "memory_total", "memory_used", "utilization", "encoder", "decoder",
        "temperature")}
    assert all(abs(d) < 1e-9 for _, _, d in result.differences)
    # count (jobs on the GPU?) against encoder sessions: a difference, never a mismatch.
    assert ("0", "count", 0.0) in result.differences
    assert ("0", "count") not in fields


@pytest.mark.parametrize(("perturbation", "field"), [
    ({"name": "Tesla T4"}, "identity"),
    ({"total_offset": 2}, "memory_total"),
    ({"used_offset": 2048}, "memory_used"),
    ({"gpu_offset": 20}, "utilization"),
    ({"enc_offset": -30}, "encoder"),
    ({"dec_offset": 16}, "decoder"),
    ({"temp_offset": 6}, "temperature"),
])
def test_each_mismatch_kind_is_detected(perturbation: dict[str, Any], field: str) -> None:
    result = run_rounds(scenario({"gpu1": perturbation}))
    assert result.mismatched() == {("1", field)}
    assert result.missing_gpus() == set()


def test_gpu_missing_on_sigma_side() -> None:
    result = run_rounds(scenario({"gpu1": {"missing": True}}))
    assert result.missing_gpus() == {("1", "sigma")}
    assert ("1", "nvml", False) in result.missing
    assert result.mismatched() == set()
    assert not any(g == "1" for g, _, _ in result.mismatches + result.differences)


def test_gpu_missing_on_nvml_side() -> None:
    check = CrossCheck()
    sc = scenario(gpus=2)
    result = check.update(sigma_gpus(sc), sc.nvml_readings(0)[:1])
    assert result.missing_gpus() == {("1", "nvml")}
    assert ("0", "sigma", False) in result.missing and ("0", "nvml", False) in result.missing


def test_missing_gpu_state_is_forgotten() -> None:
    sc = scenario(gpus=2)
    check = CrossCheck(window=2)
    check.update(sigma_gpus(sc), sc.nvml_readings(0))
    check.update(sigma_gpus(sc), sc.nvml_readings(0)[:1])  # gpu1 gone from the driver
    result = check.update(sigma_gpus(sc), sc.nvml_readings(0))  # and back
    # Its window started over: one round is not enough for a windowed verdict.
    assert not any(g == "1" and f == "utilization" for g, f, _ in result.mismatches)
    assert any(g == "0" and f == "utilization" for g, f, _ in result.mismatches)


def test_windowed_fields_wait_for_a_full_window() -> None:
    sc = scenario({"gpu0": {"gpu_offset": 50}}, gpus=1)
    check = CrossCheck(window=4)
    for r in range(3):
        result = check.update(sigma_gpus(sc), sc.nvml_readings(r))
        assert ("0", "utilization") not in {(g, f) for g, f, _ in result.mismatches}
        # The difference is there from the first round.
        diffs = {(g, f): d for g, f, d in result.differences}
        assert diffs[("0", "utilization")] == pytest.approx(0.5)
        # Per-round fields are judged at once.
        assert ("0", "memory_used", False) in result.mismatches
    result = check.update(sigma_gpus(sc), sc.nvml_readings(3))
    assert ("0", "utilization", True) in result.mismatches


def test_median_ignores_a_single_spike() -> None:
    nvml = (GpuReading(0, name="NVIDIA A10", utilization_ratio=0.40),)
    calm = Gpu("0", name="A10", utilization_ratio=0.42)
    spike = Gpu("0", name="A10", utilization_ratio=0.99)
    check = CrossCheck(window=4)
    seq = (calm, spike, calm, calm, calm, spike, calm, calm, calm, spike)  # 1 spike in 4
    verdicts = [check.update([g], nvml).mismatched() for g in seq]
    assert verdicts == [set()] * len(seq)
    # Half the window beyond tolerance: the median (mean of the middle two) is too.
    result = check.update([spike], nvml)
    assert result.mismatched() == {("0", "utilization")}


def test_memory_used_tolerance_is_the_larger_of_bytes_and_ratio() -> None:
    total = 80 * 1024 * MIB  # 5 % of 80 GiB = 4 GiB, larger than 256 MiB
    nvml = (GpuReading(0, memory_total_bytes=total, memory_used_bytes=10 * 1024 * MIB),)

    def verdict(offset_mib: float, total_bytes: float = total) -> bool:
        n = (GpuReading(0, memory_total_bytes=total_bytes,
                        memory_used_bytes=nvml[0].memory_used_bytes),)
        s = Gpu("0", memory_used_bytes=10 * 1024 * MIB + offset_mib * MIB)
        return ("0", "memory_used") in CrossCheck().update([s], n).mismatched()

    assert not verdict(4000)
    assert verdict(4200)
    assert not verdict(-4000)
    small = 1024 * MIB  # 5 % of 1 GiB is 51 MiB: the 256 MiB floor applies
    assert not verdict(250, small)
    assert verdict(260, small)


def test_total_without_the_drivers_reserved_memory_agrees(
        caplog: pytest.LogCaptureFixture) -> None:
    # The documented A10: Sigma says 22731 MiB; NVML 23028 MiB with 297 MiB reserved.
    nvml = (GpuReading(0, memory_total_bytes=23028 * MIB, memory_reserved_bytes=297 * MIB),)
    check = CrossCheck()
    with caplog.at_level(logging.INFO, logger="sigma_exporter.agent.crosscheck"):
        for _ in range(2):
            result = check.update([Gpu("0", memory_total_bytes=22731 * MIB)], nvml)
    assert result.mismatched() == set()
    assert result.differences == (("0", "memory_total", -297.0 * MIB),)  # still shown
    assert len([r for r in caplog.records if "reserved" in r.getMessage()]) == 1
    result = check.update([Gpu("0", memory_total_bytes=22700 * MIB)], nvml)
    assert result.mismatched() == {("0", "memory_total")}


def test_fields_one_side_lacks_are_not_compared() -> None:
    s = Gpu("0", name="A10", temperature_celsius=50.0)
    n = GpuReading(0, name="NVIDIA A10", temperature_celsius=None, encoder_sessions=2.0)
    check = CrossCheck(window=1)
    result = check.update([s], (n,))
    assert {f for _, f, _ in result.mismatches} == {"identity"}
    assert result.differences == ()


def test_tolerances_come_from_config() -> None:
    from sigma_exporter.config import parse_config

    config = parse_config({"targets": [{"url": "http://127.0.0.1:9999"}],
                           "nvml": {"tolerances": {"temperature": 10}, "window": 2}}, "t.yml")
    tol = Tolerances.from_config(config.nvml)
    assert tol.temperature == 10.0
    assert tol.utilization == 0.15
    sc = scenario({"gpu0": {"temp_offset": 8}}, gpus=1)
    assert run_rounds(sc, rounds=2, tolerances=tol, window=2).mismatched() == set()
    assert run_rounds(sc, rounds=2, window=2).mismatched() == {("0", "temperature")}


@pytest.mark.parametrize(("a", "b", "agree"), [
    ("NVIDIA A10", "NVIDIA A10", True),
    ("A10", "NVIDIA A10", True),
    ("nvidia  h100 80GB HBM3", "NVIDIA H100 80GB HBM3", True),
    ("Tesla T4", "NVIDIA Tesla T4", True),
    ("NVIDIA A10", "NVIDIA A10G", False),
    ("NVIDIA L4", "NVIDIA A10", False),
])
def test_names_agree_loosely(a: str, b: str, agree: bool) -> None:
    assert names_agree(a, b) is agree
    assert normalize_name("  NVIDIA  L 4 ") == "l4"


def test_mb_mib_confusion_is_recognised_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    total = 22731 * MIB
    assert looks_like_mb_mib(total * MIB_PER_MB, total)
    assert looks_like_mb_mib(total / MIB_PER_MB, total)
    assert not looks_like_mb_mib(total + MIB, total)
    nvml = (GpuReading(0, uuid="GPU-x", memory_total_bytes=total),)
    sigma = [Gpu("0", memory_total_bytes=round(total * MIB_PER_MB / MIB) * MIB)]
    check = CrossCheck(target="local")
    with caplog.at_level(logging.WARNING, logger="sigma_exporter.agent.crosscheck"):
        for _ in range(3):
            result = check.update(sigma, nvml)
    assert result.mismatched() == {("0", "memory_total")}
    warnings = [r for r in caplog.records if "MB/MiB" in r.getMessage()]
    assert len(warnings) == 1
    assert "gpu=0" in plain(warnings[0])


def test_samples_have_labels_in_definition_order() -> None:
    result = run_rounds(scenario({"gpu0": {"name": "Other"}}, gpus=1))
    samples: Samples = crosscheck_samples("local", result)
    assert (("local", "0", "identity"), 1.0) in samples["sigma_gpu_crosscheck_mismatch"]
    assert (("local", "0", "sigma"), 0.0) in samples["sigma_gpu_crosscheck_gpu_missing"]
    assert (("local", "0", "count"), 0.0) in samples["sigma_gpu_crosscheck_difference"]
    # Series stay bounded: per GPU, 7 verdicts, 2 missing-sides, 7 differences.
    assert len(samples["sigma_gpu_crosscheck_mismatch"]) == 7
    assert len(samples["sigma_gpu_crosscheck_gpu_missing"]) == 2
    assert len(samples["sigma_gpu_crosscheck_difference"]) == 7


# --- noise within tolerance never trips ------------------------------------------

TOL = Tolerances()
TOTAL = 22731 * MIB


@st.composite
def noisy_runs(draw: st.DrawFn) -> list[tuple[Gpu, GpuReading]]:
    """NVML's truth moving in small steps; Sigma reporting it up to `lag` rounds
    late, with jitter, in whole percent / MiB / degrees: always within tolerance."""
    rounds = draw(st.integers(4, 20))
    lag = draw(st.integers(0, 3))
    # Worst case |Sigma - NVML| = lag * step + jitter + rounding (0.005) < tolerance.
    step = draw(st.floats(0.0, 0.03))
    jitter = draw(st.floats(0.0, 0.14 - 3 * 0.03 - 0.006 if lag else 0.14))
    temp_step = draw(st.floats(0.0, 1.0))
    seq = st.lists(st.floats(-1.0, 1.0), min_size=rounds + lag, max_size=rounds + lag)
    moves, noise, temp_moves, temp_noise, mem_noise = (draw(seq) for _ in range(5))
    util = [0.5]
    temp = [50.0]
    for i in range(1, rounds + lag):
        util.append(min(0.95, max(0.05, util[-1] + step * moves[i])))
        temp.append(temp[-1] + temp_step * temp_moves[i])
    out = []
    for r in range(lag, rounds + lag):
        past = r - lag
        s_util = round(100 * (util[past] + jitter * noise[r] * (1 if lag else 0.9))) / 100
        s_temp = round(temp[past] + 1.0 * temp_noise[r])
        used = 4096 * MIB
        s_used = round((used + 200 * MIB * mem_noise[r]) / MIB) * MIB
        sigma = Gpu("0", name="A10", memory_total_bytes=TOTAL, memory_used_bytes=s_used,
                    utilization_ratio=s_util, encoder_utilization_ratio=s_util,
                    decoder_utilization_ratio=s_util, temperature_celsius=s_temp)
        nvml = GpuReading(0, name="NVIDIA A10", memory_total_bytes=TOTAL,
                          memory_used_bytes=used, utilization_ratio=util[r],
                          encoder_utilization_ratio=util[r], decoder_utilization_ratio=util[r],
                          temperature_celsius=temp[r])
        out.append((sigma, nvml))
    return out


@settings(max_examples=200, deadline=None)
@given(noisy_runs())
def test_noise_within_tolerance_never_trips(run: list[tuple[Gpu, GpuReading]]) -> None:
    check = CrossCheck(TOL, window=4)
    for sigma, nvml in run:
        assert check.update([sigma], (nvml,)).mismatched() == set()
