"""The local NVIDIA driver's view of its GPUs (agent mode), behind a small interface.

`NvmlBackend` is what the agent hook needs: `init()` once, `read()` each round
(blocking: the hook runs it in a worker thread), `close()` at the end.
`PynvmlBackend` talks to the real driver through nvidia-ml-py; tests, the
simulator and CI, which have no GPU, use `sigma_exporter.sim.fake_nvml.FakeBackend`
(the runtime never imports `sim`).

A reading is a frozen snapshot in base units (bytes, ratio 0-1, celsius,
watts, hertz, seconds). A field the GPU does not support is None, never 0: a
zero would claim a measurement that was not made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sigma_exporter.collect.samples import Samples, new_samples
from sigma_exporter.logsetup import fields
from sigma_exporter.source.gpufields import GPU_FIELDS

log = logging.getLogger("sigma_exporter.agent.nvml")

MIB = 1024 * 1024
T = TypeVar("T")

# NVML's clocks-event (throttle) reason bits, as the `reason` label says them.
# The bits are NVML's ABI (nvmlClocksEventReason*), stable across drivers.
THROTTLE_REASONS: tuple[tuple[str, int], ...] = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
)
XID_CRITICAL_EVENT = 0x8  # nvmlEventTypeXidCriticalError


class NvmlFailure(Exception):
    """NVML as a whole did not answer (library missing, driver gone, ...)."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU as the driver sees it, in base units; None: not supported/readable."""

    index: int
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: float | None = None
    memory_used_bytes: float | None = None
    # Memory the driver keeps for itself (NVML v2 `reserved`); not in `used`,
    # and some tools (perhaps Sigma) leave it out of the total.
    memory_reserved_bytes: float | None = None
    utilization_ratio: float | None = None
    memory_utilization_ratio: float | None = None
    encoder_utilization_ratio: float | None = None
    decoder_utilization_ratio: float | None = None
    encoder_sessions: float | None = None
    encoder_fps: float | None = None
    encoder_latency_seconds: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    video_clock_hz: float | None = None
    # Health (alerted on in tiers, see alerts/sigma-alerts.yml).
    power_limit_watts: float | None = None  # the enforced power limit
    xid_errors: float | None = None  # Xid events seen since the exporter started
    last_xid: float | None = None  # the last Xid code seen (0: none yet)
    ecc_uncorrected_errors: float | None = None  # volatile count, since the driver loaded
    row_remap_pending: float | None = None  # 1: a remap waits for a GPU reset
    row_remap_failure: float | None = None  # 1: a row could not be remapped
    throttle_reasons: float | None = None  # NVML's clocks-event bitmask (THROTTLE_REASONS)


Readings = tuple[GpuReading, ...]


@dataclass(frozen=True, slots=True)
class DriverInfo:
    driver_version: str
    gpu_count: int


class NvmlBackend(Protocol):
    def init(self) -> DriverInfo:
        """Load the library and initialise NVML; raises NvmlFailure. Idempotent."""
        ...

    def read(self) -> Readings:
        """Read every GPU once (blocking); raises NvmlFailure when NVML fails."""
        ...

    def close(self) -> None:
        ...


# --- the real driver ----------------------------------------------------------


def _text(value: object) -> str:
    # nvidia-ml-py returns str in recent versions, bytes in old ones.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class PynvmlBackend:
    """NVML through nvidia-ml-py.

    One read at a time: `read` keeps state between rounds (the Xid event set
    and counts) without a lock, and the NVML source never starts a read while
    one is in flight. `init` and the reset after a failure are locked, as
    `close` may run on another thread at shutdown.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._initialised = False
        self._pynvml: Any = None
        # Xid events: one event set for every GPU that supports them; counts
        # per NVML index since the exporter started (the driver keeps none).
        self._events: Any = None
        self._xid_gpus: set[int] = set()
        self._xid: dict[int, tuple[int, int]] = {}  # index -> (count, last Xid)

    def _module(self) -> Any:
        if self._pynvml is None:
            try:
                import pynvml
            except ImportError as exc:  # the dependency is declared; be clear anyway
                raise NvmlFailure(f"the nvidia-ml-py package is not installed: {exc}") from None
            self._pynvml = pynvml
        return self._pynvml

    def init(self) -> DriverInfo:
        nv = self._module()
        with self._lock:
            if not self._initialised:
                try:
                    nv.nvmlInit()
                except nv.NVMLError as exc:
                    raise NvmlFailure(f"{type(exc).__name__}: {exc}") from None
                self._initialised = True
        try:
            return DriverInfo(_text(nv.nvmlSystemGetDriverVersion()),
                              int(nv.nvmlDeviceGetCount()))
        except nv.NVMLError as exc:
            self._reset()
            raise NvmlFailure(f"{type(exc).__name__}: {exc}") from None

    def _reset(self) -> None:
        # After a driver reload NVML must be initialised again: the next read does it.
        nv = self._module()
        with self._lock:
            if self._initialised:
                self._free_events(nv)
                try:
                    nv.nvmlShutdown()
                except nv.NVMLError:
                    log.debug("nvmlShutdown failed", exc_info=True)
                self._initialised = False

    def close(self) -> None:
        if self._pynvml is not None:
            self._reset()

    def _free_events(self, nv: Any) -> None:
        if self._events is not None:
            try:
                nv.nvmlEventSetFree(self._events)
            except nv.NVMLError:
                log.debug("nvmlEventSetFree failed", exc_info=True)
        self._events = None
        self._xid_gpus = set()

    def _drain_xid(self, nv: Any, count: int) -> None:
        """Count the Xid events that arrived since the last round (never raises
        for a GPU or a driver without events: those GPUs get no Xid series)."""
        try:
            if self._events is None:
                self._events = nv.nvmlEventSetCreate()
                for i in range(count):
                    try:
                        h = nv.nvmlDeviceGetHandleByIndex(i)
                        nv.nvmlDeviceRegisterEvents(h, XID_CRITICAL_EVENT, self._events)
                    except nv.NVMLError as exc:
                        log.debug("no Xid events", extra=fields(gpu=i, error=str(exc)))
                        continue
                    self._xid_gpus.add(i)
                    self._xid.setdefault(i, (0, 0))
            for _ in range(10_000):  # a storm must not hold the round forever
                try:
                    data = nv.nvmlEventSetWait_v2(self._events, 0)
                except nv.NVMLError as exc:
                    if exc.value != nv.NVML_ERROR_TIMEOUT:
                        log.debug("nvmlEventSetWait failed", extra=fields(error=str(exc)))
                    break
                i = int(nv.nvmlDeviceGetIndex(data.device))
                n, _ = self._xid.get(i, (0, 0))
                self._xid[i] = (n + 1, int(data.eventData))
        except nv.NVMLError as exc:
            log.debug("Xid events unavailable", extra=fields(error=str(exc)))
            self._free_events(nv)

    def read(self) -> Readings:
        self.init()
        nv = self._pynvml
        try:
            count = int(nv.nvmlDeviceGetCount())
            self._drain_xid(nv, count)
            out = []
            for i in range(count):
                reading = self._read_gpu(nv, i)
                if reading is not None:
                    out.append(reading)
            return tuple(out)
        except nv.NVMLError as exc:
            self._reset()
            raise NvmlFailure(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _memory(nv: Any, h: Any, get: Callable[[Callable[[], Any]], Any]) -> tuple[Any, Any]:
        # v2 is what nvidia-smi shows: `used` without the driver's reserved
        # memory (615 MiB on an H200, driver 580). Old drivers lack v2: use v1.
        version = getattr(nv, "nvmlMemory_v2", None)
        if version is not None:
            try:
                mem = nv.nvmlDeviceGetMemoryInfo(h, version=version)
                return mem, mem.reserved
            except nv.NVMLError as exc:
                if exc.value not in {nv.NVML_ERROR_FUNCTION_NOT_FOUND,
                                     nv.NVML_ERROR_NOT_SUPPORTED,
                                     getattr(nv, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", -1)}:
                    raise
        return get(lambda: nv.nvmlDeviceGetMemoryInfo(h)), None

    def _read_gpu(self, nv: Any, i: int) -> GpuReading | None:
        # Per-field errors that mean "this value is not available here" leave
        # the field out; a lost GPU is left out (the cross-check reports it
        # missing); anything else fails the whole round (NvmlFailure).
        skip = {nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_NO_PERMISSION,
                nv.NVML_ERROR_FUNCTION_NOT_FOUND, nv.NVML_ERROR_NOT_FOUND}
        lost = {nv.NVML_ERROR_GPU_IS_LOST}

        def get(fn: Callable[[], T]) -> T | None:
            try:
                return fn()
            except nv.NVMLError as exc:
                if exc.value in skip:
                    return None
                raise

        try:
            h = nv.nvmlDeviceGetHandleByIndex(i)
            mem, reserved = self._memory(nv, h, get)
            util = get(lambda: nv.nvmlDeviceGetUtilizationRates(h))
            enc = get(lambda: nv.nvmlDeviceGetEncoderUtilization(h))
            dec = get(lambda: nv.nvmlDeviceGetDecoderUtilization(h))
            stats = get(lambda: nv.nvmlDeviceGetEncoderStats(h))
            temp = get(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
            power = get(lambda: nv.nvmlDeviceGetPowerUsage(h))
            clock = get(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_VIDEO))
            uuid = get(lambda: nv.nvmlDeviceGetUUID(h))
            name = get(lambda: nv.nvmlDeviceGetName(h))
            pci = get(lambda: nv.nvmlDeviceGetPciInfo(h))
            limit = get(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
            ecc = get(lambda: nv.nvmlDeviceGetTotalEccErrors(
                h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC))
            remap = get(lambda: nv.nvmlDeviceGetRemappedRows(h))
            throttle = get(lambda: nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))
        except nv.NVMLError as exc:
            if exc.value in lost:
                log.debug("GPU lost", extra=fields(gpu=i, error=str(exc)))
                return None
            raise
        sessions, fps, latency_us = stats if stats is not None else (None, None, None)
        xid = self._xid.get(i) if i in self._xid_gpus else None
        return GpuReading(
            index=i,
            uuid=_text(uuid) if uuid is not None else None,
            name=_text(name) if name is not None else None,
            pci_bus_id=_text(pci.busId) if pci is not None else None,
            memory_total_bytes=float(mem.total) if mem is not None else None,
            memory_used_bytes=float(mem.used) if mem is not None else None,
            memory_reserved_bytes=float(reserved) if reserved is not None else None,
            utilization_ratio=util.gpu / 100.0 if util is not None else None,
            memory_utilization_ratio=util.memory / 100.0 if util is not None else None,
            encoder_utilization_ratio=enc[0] / 100.0 if enc is not None else None,
            decoder_utilization_ratio=dec[0] / 100.0 if dec is not None else None,
            encoder_sessions=float(sessions) if sessions is not None else None,
            encoder_fps=float(fps) if fps is not None else None,
            encoder_latency_seconds=latency_us / 1e6 if latency_us is not None else None,
            temperature_celsius=float(temp) if temp is not None else None,
            power_watts=power / 1000.0 if power is not None else None,  # mW
            video_clock_hz=clock * 1e6 if clock is not None else None,  # MHz
            power_limit_watts=limit / 1000.0 if limit is not None else None,  # mW
            xid_errors=float(xid[0]) if xid is not None else None,
            last_xid=float(xid[1]) if xid is not None else None,
            ecc_uncorrected_errors=float(ecc) if ecc is not None else None,
            row_remap_pending=float(bool(remap[2])) if remap is not None else None,
            row_remap_failure=float(bool(remap[3])) if remap is not None else None,
            throttle_reasons=float(throttle) if throttle is not None else None,
        )


# --- samples --------------------------------------------------------------------

# The figures Sigma reports too come from the shared table; the rest are NVML's own.
_GAUGES: tuple[tuple[str, str], ...] = (
    *((f.nvml_metric, f.attr) for f in GPU_FIELDS),
    ("sigma_nvml_gpu_memory_utilization_ratio", "memory_utilization_ratio"),
    ("sigma_nvml_gpu_encoder_sessions", "encoder_sessions"),
    ("sigma_nvml_gpu_encoder_fps", "encoder_fps"),
    ("sigma_nvml_gpu_encoder_latency_seconds", "encoder_latency_seconds"),
    ("sigma_nvml_gpu_power_watts", "power_watts"),
    ("sigma_nvml_gpu_video_clock_hz", "video_clock_hz"),
    ("sigma_nvml_gpu_power_limit_watts", "power_limit_watts"),
    ("sigma_nvml_gpu_xid_errors_total", "xid_errors"),
    ("sigma_nvml_gpu_last_xid", "last_xid"),
    ("sigma_nvml_gpu_ecc_uncorrected_errors_total", "ecc_uncorrected_errors"),
    ("sigma_nvml_gpu_row_remap_pending", "row_remap_pending"),
    ("sigma_nvml_gpu_row_remap_failure", "row_remap_failure"),
)


def nvml_samples(target: str, readings: Readings) -> Samples:
    """The sigma_nvml_gpu_* samples of one round; an unsupported field has none."""
    out = new_samples()
    for r in readings:
        gpu = str(r.index)
        out["sigma_nvml_gpu_info"].append(
            ((target, gpu, r.uuid or "", r.name or "", r.pci_bus_id or ""), 1.0))
        for metric, attr in _GAUGES:
            value = getattr(r, attr)
            if value is not None:
                out[metric].append(((target, gpu), float(value)))
        if r.throttle_reasons is not None:  # every reason, active or not: a closed set
            mask = int(r.throttle_reasons)
            for reason, bit in THROTTLE_REASONS:
                out["sigma_nvml_gpu_throttle_active"].append(
                    ((target, gpu, reason), 1.0 if mask & bit else 0.0))
    return out
