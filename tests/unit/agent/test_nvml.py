"""NVML reading, scenarios and agent-mode configuration, without a GPU.

The real backend is driven through a stand-in pynvml module (the same error
codes and call shapes), so unit conversion, NotSupported handling and a lost
GPU are checked on any machine. Scenario playback feeds both the FakeBackend
and the simulator's gpu_override.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from sigma_exporter.agent.nvml import (
    MIB,
    THROTTLE_REASONS,
    GpuReading,
    NvmlFailure,
    PynvmlBackend,
    nvml_samples,
)
from sigma_exporter.agent.source import NvmlSource, nvml_source, select_target
from sigma_exporter.config import Config, ConfigError, NvmlConfig, TargetConfig, parse_config
from sigma_exporter.logsetup import plain
from sigma_exporter.sim.dump import render_dump
from sigma_exporter.sim.fake_nvml import FakeBackend
from sigma_exporter.sim.gpu_override import (
    apply_mirror_to_simulator,
    apply_to_simulator,
    mirror_override,
)
from sigma_exporter.sim.model import SimServer
from sigma_exporter.sim.scenario import (
    ManualClock,
    Perturbation,
    ScenarioError,
    TimeClock,
    parse_scenario,
)
from sigma_exporter.source.parse import parse_dump

SCENARIO: dict[str, Any] = {
    "gpus": {
        "gpu0": {"name": "NVIDIA A10", "total_mib": 22731, "not_supported": ["power_w", "enc"]},
        "gpu1": {"name": "NVIDIA A10", "total_mib": 22731, "nvml_missing": [2]},
    },
    "rounds": [
        {"gpu0": {"used_mib": 1024, "gpu": 40, "mem": 10, "enc": 30, "dec": 20, "temp": 50,
                  "power_w": 80, "video_mhz": 1410, "sessions": 3, "fps": 29.5,
                  "latency_us": 1500},
         "gpu1": {"used_mib": 2048, "gpu": 10, "temp": 40}},
        {"gpu0": {"gpu": 45}},
        {},
        {"gpu1": {"used_mib": 3000}},
    ],
    "nvml_fail_rounds": [3],
}


# --- scenarios and the fake backend ----------------------------------------------


def test_fake_backend_reads_scenario_in_base_units() -> None:
    clock = ManualClock()
    backend = FakeBackend(parse_scenario(SCENARIO), clock)
    assert backend.init().gpu_count == 2
    g0, g1 = backend.read()
    assert g0.index == 0 and g0.name == "NVIDIA A10"
    assert g0.memory_total_bytes == 22731 * MIB
    assert g0.memory_used_bytes == 1024 * MIB
    assert g0.utilization_ratio == pytest.approx(0.40)
    assert g0.memory_utilization_ratio == pytest.approx(0.10)
    assert g0.decoder_utilization_ratio == pytest.approx(0.20)
    assert g0.temperature_celsius == 50
    assert g0.video_clock_hz == 1410e6
    assert g0.encoder_sessions == 3 and g0.encoder_fps == 29.5
    assert g0.encoder_latency_seconds == pytest.approx(0.0015)
    assert g0.uuid and g0.pci_bus_id and g0.uuid != g1.uuid
    # NotSupported: left out, not zeroed.
    assert g0.power_watts is None and g0.encoder_utilization_ratio is None
    # Never given: absent too.
    assert g1.power_watts is None and g1.encoder_sessions is None
    clock.advance()
    assert backend.read()[0].utilization_ratio == pytest.approx(0.45)  # changed
    assert backend.read()[1].memory_used_bytes == 2048 * MIB  # carried over


def test_gpu_vanishes_and_nvml_fails_mid_run() -> None:
    clock = ManualClock(2)
    backend = FakeBackend(parse_scenario(SCENARIO), clock)
    assert [r.index for r in backend.read()] == [0]
    clock.advance()
    with pytest.raises(NvmlFailure):
        backend.read()
    clock.advance()  # past the last round: the last one holds
    with pytest.raises(NvmlFailure):
        backend.read()


def test_repeat_and_time_clock() -> None:
    sc = parse_scenario({**SCENARIO, "repeat": True, "round_seconds": 10})
    assert [sc.effective_round(r) for r in range(6)] == [0, 1, 2, 3, 0, 1]
    clock = TimeClock(start=1000.0, seconds=sc.round_seconds)
    assert [clock.round_at(t) for t in (999.0, 1000.0, 1009.9, 1010.0, 1035.0)] == [0, 0, 0, 1, 3]


def test_not_supported_fields_have_no_series() -> None:
    readings = FakeBackend(parse_scenario(SCENARIO), ManualClock()).read()
    samples = nvml_samples("local", readings)
    assert ("local", "0") not in {labels for labels, _ in samples["sigma_nvml_gpu_power_watts"]}
    assert ("local", "0") not in {
        labels for labels, _ in samples["sigma_nvml_gpu_encoder_utilization_ratio"]}
    assert (("local", "0"), 1410e6) in samples["sigma_nvml_gpu_video_clock_hz"]
    info = samples["sigma_nvml_gpu_info"]
    assert len(info) == 2
    assert info[0][0][:4] == ("local", "0", readings[0].uuid, "NVIDIA A10")


@pytest.mark.parametrize(("doc", "message"), [
    ({"gpus": {}}, "gpus: list at least one GPU"),
    ({"gpus": {"card0": {}}}, "is not a GPU key"),
    ({"gpus": {"gpu0": {"colour": 1}}}, "gpus.gpu0.colour: unknown key"),
    ({"gpus": {"gpu0": {"gpu": "lots"}}}, "gpus.gpu0.gpu: 'lots' is not a number"),
    ({"gpus": {"gpu0": {}}, "rounds": [{"gpu1": {}}]}, "not listed under gpus"),
    ({"gpus": {"gpu0": {}}, "sigma": {"gpu0": {"used_offset_mib": 1}}}, "unknown key"),
    ({"gpus": {"gpu0": {}}, "nvml_fail_rounds": [-1]}, "list of round numbers"),
    ({"gpus": {f"gpu{i}": {} for i in range(9)}}, "at most 8 GPUs"),
])
def test_scenario_errors_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(doc, "s.yml")


def test_simulator_reports_the_scenario_in_sigma_units() -> None:
    doc = {**SCENARIO, "sigma": {"gpu0": {"used_offset": 2048, "name": "Tesla T4",
                                          "from_round": 1},
                                 "gpu1": {"missing": True}}}
    sc = parse_scenario(doc)
    server = SimServer(index=0, gpus=1, epoch=1_717_000_000.0)
    clock = apply_to_simulator([server], sc, ManualClock())
    assert server.gpus == 1  # gpu1 hidden from Sigma
    entry = render_dump(server, 1_717_000_100.0)["System"]["gpu"][0]
    assert entry["index"] == 0 and entry["name"] == "NVIDIA A10"
    assert (entry["total"], entry["used"], entry["gpu"], entry["enc"], entry["dec"],
            entry["temp"], entry["count"]) == (22731, 1024, 40, 30, 20, 50, 3)
    assert isinstance(clock, ManualClock)
    clock.advance()  # the perturbation starts at round 1
    entry = render_dump(server, 1_717_000_100.0)["System"]["gpu"][0]
    assert entry["used"] == 1024 + 2048 and entry["name"] == "Tesla T4" and entry["gpu"] == 45
    gpu = parse_dump(render_dump(server, 1_717_000_100.0)).value.gpus[0]
    assert gpu.memory_used_bytes == 3072 * MIB


def test_mirror_override_reports_the_driver_as_sigma_would() -> None:
    backend = FakeBackend(parse_scenario(SCENARIO), ManualClock())
    override = mirror_override(backend)
    assert override(0, 0.0) == {"index": 0, "name": "NVIDIA A10", "total": 22731, "used": 1024,
                                "gpu": 40, "dec": 20, "temp": 50, "count": 3}
    server = SimServer(index=0, gpus=1, epoch=1_717_000_000.0)
    apply_mirror_to_simulator([server], backend, {
        0: Perturbation(missing=True),
        1: Perturbation(name="Renamed", offset=(("used", 100.0),)),
        5: Perturbation(name="Phantom", absolute=(("total", 1000.0),)),
    })
    gpus = render_dump(server, 1_717_000_100.0)["System"]["gpu"]
    assert [(g["index"], g["name"]) for g in gpus] == [(1, "Renamed"), (5, "Phantom")]
    assert gpus[0]["used"] == 2048 + 100 and gpus[1]["total"] == 1000


# --- the real backend, through a stand-in pynvml -------------------------------


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_pynvml(lost: set[int] | None = None, unsupported: set[str] | None = None,
                fail_count: bool = False, memory_v2: bool = True,
                xids: list[tuple[int, int]] | None = None) -> SimpleNamespace:
    lost = lost or set()
    unsupported = unsupported or set()

    def call(name: str, value: Any) -> Any:
        def fn(handle: int, *args: Any, **kwargs: Any) -> Any:
            if handle in lost:
                raise FakeNVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            if name in unsupported:
                raise FakeNVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return value(handle, **kwargs) if callable(value) else value
        return fn

    def memory(handle: int, version: int | None = None) -> SimpleNamespace:
        total = 80 * 1024 * MIB
        if version is None:  # v1: `used` includes the driver's reserved memory
            return SimpleNamespace(total=total, used=(512 + 600) * MIB, free=0)
        if not memory_v2:  # an old driver
            raise FakeNVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return SimpleNamespace(total=total, used=512 * MIB, reserved=600 * MIB, free=0)

    def count() -> int:
        if fail_count:
            raise FakeNVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        return 2

    pending = list(xids or [])  # (gpu, Xid code) events the driver has queued

    def xid_wait(event_set: object, timeout_ms: int) -> SimpleNamespace:
        if not pending:
            raise FakeNVMLError(pynvml.NVML_ERROR_TIMEOUT)
        gpu, code = pending.pop(0)
        return SimpleNamespace(device=gpu, eventType=0x8, eventData=code)

    calls: list[str] = []

    def event_set() -> str:
        calls.append("event_set")
        return "set"

    return SimpleNamespace(
        calls=calls,
        NVMLError=FakeNVMLError,
        NVML_ERROR_NOT_SUPPORTED=pynvml.NVML_ERROR_NOT_SUPPORTED,
        NVML_ERROR_NO_PERMISSION=pynvml.NVML_ERROR_NO_PERMISSION,
        NVML_ERROR_FUNCTION_NOT_FOUND=pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        NVML_ERROR_NOT_FOUND=pynvml.NVML_ERROR_NOT_FOUND,
        NVML_ERROR_GPU_IS_LOST=pynvml.NVML_ERROR_GPU_IS_LOST,
        NVML_TEMPERATURE_GPU=pynvml.NVML_TEMPERATURE_GPU,
        NVML_CLOCK_VIDEO=pynvml.NVML_CLOCK_VIDEO,
        NVML_ERROR_TIMEOUT=pynvml.NVML_ERROR_TIMEOUT,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        NVML_VOLATILE_ECC=pynvml.NVML_VOLATILE_ECC,
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",
        nvmlDeviceGetCount=count,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlMemory_v2=pynvml.nvmlMemory_v2,
        nvmlDeviceGetMemoryInfo=call("mem", memory),
        nvmlDeviceGetUtilizationRates=call("util", SimpleNamespace(gpu=37, memory=5)),
        nvmlDeviceGetEncoderUtilization=call("enc", [12, 167000]),
        nvmlDeviceGetDecoderUtilization=call("dec", [7, 167000]),
        nvmlDeviceGetEncoderStats=call("stats", (2, 59, 2500)),
        nvmlDeviceGetTemperature=call("temp", 41),
        nvmlDeviceGetPowerUsage=call("power", 71234),
        nvmlDeviceGetClockInfo=call("clock", 1755),
        nvmlDeviceGetUUID=call("uuid", lambda h: f"GPU-{h:04d}"),
        nvmlDeviceGetName=call("name", b"NVIDIA H100 80GB HBM3"),
        nvmlDeviceGetPciInfo=call("pci", lambda h: SimpleNamespace(busId=f"00000000:{h:02X}:00.0")),
        nvmlDeviceGetEnforcedPowerLimit=call("limit", 300000),
        nvmlDeviceGetTotalEccErrors=call("ecc", 0),
        nvmlDeviceGetRemappedRows=call("remap", (0, 0, 1, 0)),
        nvmlDeviceGetCurrentClocksThrottleReasons=call("throttle", 0x40 | 0x1),
        nvmlEventSetCreate=event_set,
        nvmlDeviceRegisterEvents=call("events", None),
        nvmlEventSetWait_v2=xid_wait,
        nvmlEventSetFree=lambda s: calls.append("event_set_free"),
        nvmlDeviceGetIndex=lambda h: h,
    )


def backend_with(module: SimpleNamespace) -> PynvmlBackend:
    backend = PynvmlBackend()
    backend._pynvml = module
    return backend


def test_pynvml_backend_converts_units() -> None:
    backend = backend_with(fake_pynvml())
    info = backend.init()
    assert (info.driver_version, info.gpu_count) == ("550.54.15", 2)
    g = backend.read()[1]
    assert g == GpuReading(
        index=1, uuid="GPU-0001", name="NVIDIA H100 80GB HBM3", pci_bus_id="00000000:01:00.0",
        memory_total_bytes=80 * 1024 * MIB, memory_used_bytes=512 * MIB,
        memory_reserved_bytes=600 * MIB, utilization_ratio=0.37, memory_utilization_ratio=0.05,
        encoder_utilization_ratio=0.12, decoder_utilization_ratio=0.07, encoder_sessions=2,
        encoder_fps=59, encoder_latency_seconds=0.0025, temperature_celsius=41, power_watts=71.234,
        video_clock_hz=1755e6, power_limit_watts=300.0, xid_errors=0.0, last_xid=0.0,
        ecc_uncorrected_errors=0.0, row_remap_pending=1.0, row_remap_failure=0.0,
        throttle_reasons=float(0x41))


def test_pynvml_backend_counts_xid_events_per_gpu() -> None:
    module = fake_pynvml(xids=[(1, 79), (1, 48), (0, 13)])
    backend = backend_with(module)
    first = {g.index: g for g in backend.read()}
    assert (first[0].xid_errors, first[0].last_xid) == (1.0, 13.0)
    assert (first[1].xid_errors, first[1].last_xid) == (2.0, 48.0)
    module.nvmlEventSetWait_v2 = lambda s, t: (_ for _ in ()).throw(
        FakeNVMLError(pynvml.NVML_ERROR_TIMEOUT))
    again = {g.index: g for g in backend.read()}  # no new events: counts stay
    assert again[1].xid_errors == 2.0 and module.calls.count("event_set") == 1


def test_pynvml_backend_leaves_out_health_fields_a_gpu_does_not_support() -> None:
    unsupported = {"limit", "ecc", "remap", "throttle", "events"}
    g = backend_with(fake_pynvml(unsupported=unsupported)).read()[0]
    assert (g.power_limit_watts, g.ecc_uncorrected_errors, g.row_remap_pending,
            g.row_remap_failure, g.throttle_reasons, g.xid_errors, g.last_xid) == (None,) * 7
    assert g.power_watts == 71.234  # the rest still read
    samples = nvml_samples("t", (g,))
    assert not samples["sigma_nvml_gpu_throttle_active"]
    assert not samples["sigma_nvml_gpu_xid_errors_total"]


def test_nvml_samples_give_every_throttle_reason() -> None:
    g = backend_with(fake_pynvml()).read()[0]
    samples = nvml_samples("t", (g,))["sigma_nvml_gpu_throttle_active"]
    active = {labels[2]: v for labels, v in samples}
    assert active == {r: (1.0 if r in {"gpu_idle", "hw_thermal_slowdown"} else 0.0)
                      for r, _ in THROTTLE_REASONS}


def test_pynvml_backend_falls_back_to_memory_v1_on_old_drivers() -> None:
    g = backend_with(fake_pynvml(memory_v2=False)).read()[0]
    assert g.memory_used_bytes == (512 + 600) * MIB and g.memory_reserved_bytes is None
    g = backend_with(fake_pynvml(unsupported={"mem"})).read()[0]
    assert g.memory_used_bytes is None and g.memory_total_bytes is None
    assert g.utilization_ratio == pytest.approx(0.37)


def test_pynvml_backend_leaves_unsupported_fields_out() -> None:
    g = backend_with(fake_pynvml(unsupported={"power", "stats", "enc"})).read()[0]
    assert g.power_watts is None and g.encoder_sessions is None and g.encoder_fps is None
    assert g.encoder_utilization_ratio is None
    assert g.decoder_utilization_ratio == pytest.approx(0.07)  # the rest is there


def test_pynvml_backend_drops_a_lost_gpu_and_fails_on_driver_loss() -> None:
    assert [g.index for g in backend_with(fake_pynvml(lost={0})).read()] == [1]
    module = fake_pynvml(fail_count=True)
    backend = backend_with(module)
    with pytest.raises(NvmlFailure, match="FakeNVMLError"):
        backend.read()
    # NVML is shut down so that the next round initialises it again.
    assert module.calls == ["init", "shutdown"]
    with pytest.raises(NvmlFailure):
        backend.read()
    assert module.calls == ["init", "shutdown", "init", "shutdown"]


def test_real_pynvml_backend_on_this_machine() -> None:
    backend = PynvmlBackend()
    try:
        info = backend.init()
    except NvmlFailure as exc:  # no GPU (CI, laptops): a clear reason, no crash
        assert str(exc)
        return
    try:
        readings = backend.read()
        assert len(readings) == info.gpu_count
        assert all(r.memory_total_bytes for r in readings)
    finally:
        backend.close()


# --- agent-mode configuration ---------------------------------------------------


def config(*urls: str, **nvml: Any) -> Config:
    targets = tuple(TargetConfig(name=f"t{i}", url=u) for i, u in enumerate(urls))
    return Config(targets, NvmlConfig(**nvml), source="sigma.yml")


def no_library() -> FakeBackend:
    return FakeBackend(parse_scenario(SCENARIO), ManualClock(),
                       init_error="NVMLError_LibraryNotFound: NVML Shared Library Not Found")


def test_enabled_true_without_library_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as err:
        nvml_source(config("http://127.0.0.1:9999", enabled="true"), no_library())
    assert err.value.key == "nvml.enabled"
    assert "LibraryNotFound" in str(err.value)
    assert "nvml.enabled: false" in err.value.fix


def test_enabled_true_on_this_machine_matches_its_library() -> None:
    # The real library: refused here (no GPU), accepted on a GPU host.
    try:
        nvml = nvml_source(config("http://127.0.0.1:9999", enabled="true"))
    except ConfigError as exc:
        assert exc.key == "nvml.enabled"
    else:
        assert isinstance(nvml, NvmlSource)
        nvml.close()


def test_auto_without_library_is_off_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="sigma_exporter"):
        assert nvml_source(config("http://127.0.0.1:9999"), no_library()) is None
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert "agent mode off" in lines[0].getMessage()
    assert "LibraryNotFound" in plain(lines[0])


def test_auto_with_library_is_on_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend(parse_scenario(SCENARIO), ManualClock())
    with caplog.at_level(logging.DEBUG, logger="sigma_exporter"):
        nvml = nvml_source(config("http://127.0.0.1:9999"), backend)
    assert isinstance(nvml, NvmlSource) and nvml.target == "t0"
    (line,) = [plain(r) for r in caplog.records if r.levelno >= logging.INFO]
    assert "agent mode on" in line and "driver=550.54.15" in line and "gpus=2" in line


def test_disabled_never_touches_nvml() -> None:
    backend = no_library()
    assert nvml_source(config("http://127.0.0.1:9999", enabled="false"), backend) is None
    assert backend.reads == 0


@pytest.mark.parametrize(("urls", "chosen"), [
    (("http://sigma.example.net:9999",), "t0"),  # the only target, wherever it is
    (("http://sigma.example.net:9999", "http://127.0.0.1:9999"), "t1"),
    (("http://[::1]:9999", "http://sigma.example.net:9999"), "t0"),
    (("http://other:9999", "https://LOCALHOST:9999"), "t1"),
    (("http://other:9999", "http://gpu-box-7.dc1.example.net:9999"), "t1"),  # our FQDN
    (("http://other:9999", "http://gpu-box-7:9999"), "t1"),  # our short name
    (("http://other:9999", "http://else:9999"), None),
    (("http://127.0.0.1:9999", "http://localhost:9998"), None),  # ambiguous
])
def test_target_selection(urls: tuple[str, ...], chosen: str | None) -> None:
    names = {"gpu-box-7", "gpu-box-7.dc1.example.net", "localhost"}
    target, why = select_target(config(*urls), names)
    assert (target.name if target else None) == chosen
    assert why


def test_explicit_target_wins() -> None:
    cfg = config("http://127.0.0.1:9999", "http://other:9999", target="t1")
    target, _ = select_target(cfg, {"localhost"})
    assert target is not None and target.name == "t1"


def test_no_local_target_auto_is_off_true_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    urls = ("http://a.example.net:9999", "http://b.example.net:9999")
    backend = FakeBackend(parse_scenario(SCENARIO), ManualClock())
    with caplog.at_level(logging.INFO, logger="sigma_exporter"):
        assert nvml_source(config(*urls), backend, names={"me"}) is None
    (line,) = [plain(r) for r in caplog.records]
    assert "agent mode off" in line and "nvml.target" in line
    assert backend.closed
    with pytest.raises(ConfigError) as err:
        nvml_source(config(*urls, enabled="true"), backend, names={"me"})
    assert err.value.key == "nvml.target"


def test_yaml_config_reaches_the_nvml_source() -> None:
    cfg = parse_config({"targets": [{"name": "edge", "url": "http://10.0.0.5:9999"},
                                    {"name": "local", "url": "http://127.0.0.1:9999"}],
                        "nvml": {"enabled": "auto", "window": 6}}, "sigma.yml")
    nvml = nvml_source(cfg, FakeBackend(parse_scenario(SCENARIO), ManualClock()),
                           names={"me"})
    assert isinstance(nvml, NvmlSource)
    assert nvml.target == "local" and nvml.crosscheck.window == 6
