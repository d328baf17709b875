"""Sigma's GPU figures checked against the driver's (agent mode).

Pure functions compare one Sigma `System.gpu[]` entry with one NVML reading;
`CrossCheck` adds the only state needed: a short window of differences per
GPU and field, so that utilisation and temperature (sampled by the two sides
at different instants) are judged on a median, not on one noisy round.

Rules (docs/agent-mode.md explains them to operators):

* GPUs are matched by index (Sigma's `index`, NVML's enumeration index).
* difference = Sigma minus NVML in the base unit, from the latest round.
* mismatch = |difference| beyond tolerance (strictly greater). memory_total
  and memory_used are judged on the latest round; utilization, encoder,
  decoder and temperature on the median of the last `window` rounds, and
  only once the window is full (no mismatch series before: nothing can page
  on the first, noisiest samples).
* memory_total also agrees when Sigma's total equals NVML's total less the
  driver's reserved memory (NVML v2 `reserved`): the documented A10 figure
  (22731 MiB) looks like such a "usable" total. The difference series still
  shows Sigma minus NVML's full total.
* identity: the names must agree, loosely (case, spaces and a leading
  "NVIDIA" ignored).
* count (Sigma's undocumented per-GPU `count`) minus NVML's encoder
  sessions: a difference only, never a mismatch (its meaning is unknown).
* gpu_missing{side}: for every GPU either side lists, 1 on the side that
  lacks it, else 0 (two series per GPU: bounded, and an alert can tell "all
  matched" from "cross-check not running").
* A field either side lacks is not compared: no series for it.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sigma_exporter.agent.nvml import GpuReading
from sigma_exporter.collect.samples import Samples, new_samples
from sigma_exporter.config import DEFAULT_TOLERANCES, NvmlConfig
from sigma_exporter.logsetup import fields
from sigma_exporter.source.gpufields import BY_CROSSCHECK, GPU_FIELDS
from sigma_exporter.source.snapshot import Gpu

log = logging.getLogger("sigma_exporter.agent.crosscheck")

MIB_PER_MB = 1024 * 1024 / 1_000_000  # 1.048576: MiB / MB
_MB_MIB_SLACK = 0.002  # relative; totals differ by a few MiB between tools anyway

# Fields with a difference series: the shared figures, and count (no mismatch
# series). Identity (the names) has a mismatch series only.
DIFFERENCE_FIELDS = (*(f.crosscheck for f in GPU_FIELDS), "count")
MISMATCH_FIELDS = ("identity", *(f.crosscheck for f in GPU_FIELDS))
WINDOWED = frozenset(f.crosscheck for f in GPU_FIELDS if f.windowed)


@dataclass(frozen=True, slots=True)
class Tolerances:
    utilization: float = DEFAULT_TOLERANCES["utilization"]  # ratio
    temperature: float = DEFAULT_TOLERANCES["temperature"]  # celsius
    memory_used_bytes: float = DEFAULT_TOLERANCES["memory_used_bytes"]
    memory_used_ratio: float = DEFAULT_TOLERANCES["memory_used_ratio"]  # of total
    memory_total_bytes: float = DEFAULT_TOLERANCES["memory_total_bytes"]

    @classmethod
    def from_config(cls, nvml: NvmlConfig) -> Tolerances:
        return cls(**{k: nvml.tolerance(k) for k in DEFAULT_TOLERANCES})

    def limit(self, field: str, total_bytes: float | None) -> float:
        """The largest |difference| that still agrees, for this cross-check field."""
        tolerance: float = getattr(self, BY_CROSSCHECK[field].tolerance)
        if field == "memory_used":  # the larger of a fixed and a relative slack
            return max(tolerance, self.memory_used_ratio * (total_bytes or 0.0))
        return tolerance


def beyond(difference: float, limit: float) -> bool:
    # A hair of slack: 0.55 - 0.40 is 0.15000000000000002 in floating point.
    return abs(difference) > limit * (1 + 1e-9) + 1e-12


_LEADING_NVIDIA = re.compile(r"^\s*nvidia\s+", re.IGNORECASE)


def normalize_name(name: str) -> str:
    return re.sub(r"\s+", "", _LEADING_NVIDIA.sub("", name)).lower()


def names_agree(sigma: str, nvml: str) -> bool:
    return normalize_name(sigma) == normalize_name(nvml)


def sigma_count(gpu: Gpu) -> float | None:
    for key, value in gpu.reported:
        if key == "count":
            return value
    return None


def differences(sigma: Gpu, nvml: GpuReading) -> dict[str, float]:
    """Sigma minus NVML per field, for the fields both sides have."""
    out: dict[str, float] = {}
    for figure in GPU_FIELDS:
        s, n = getattr(sigma, figure.attr), getattr(nvml, figure.attr)
        if s is not None and n is not None:
            out[figure.crosscheck] = float(s) - float(n)
    count = sigma_count(sigma)
    if count is not None and nvml.encoder_sessions is not None:
        out["count"] = count - nvml.encoder_sessions
    return out


def looks_like_mb_mib(sigma_total: float, nvml_total: float) -> bool:
    """True when the totals differ by the MB/MiB factor (either way round)."""
    if sigma_total <= 0 or nvml_total <= 0:
        return False
    ratio = sigma_total / nvml_total
    return any(abs(ratio / f - 1.0) < _MB_MIB_SLACK for f in (MIB_PER_MB, 1 / MIB_PER_MB))


def _gpu_order(gpu: str) -> tuple[int, str]:
    # isdigit() alone admits "²", which int() refuses: ASCII digits only.
    return (int(gpu), "") if gpu.isascii() and gpu.isdigit() else (1 << 30, gpu)


@dataclass(frozen=True, slots=True)
class Result:
    """One round of the cross-check, ready to become samples."""

    differences: tuple[tuple[str, str, float], ...] = ()  # (gpu, field, Sigma - NVML)
    mismatches: tuple[tuple[str, str, bool], ...] = ()  # (gpu, field, beyond tolerance)
    missing: tuple[tuple[str, str, bool], ...] = ()  # (gpu, side lacking it, missing)

    def mismatched(self) -> set[tuple[str, str]]:
        return {(gpu, field) for gpu, field, bad in self.mismatches if bad}

    def missing_gpus(self) -> set[tuple[str, str]]:
        return {(gpu, side) for gpu, side, gone in self.missing if gone}


class CrossCheck:
    """The cross-check of one target, with its window of recent differences."""

    def __init__(self, tolerances: Tolerances | None = None, window: int = 4,
                 target: str = "") -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.tolerances = tolerances or Tolerances()
        self.window = window
        self.target = target
        self._history: dict[tuple[str, str], deque[float]] = {}
        self._warned_units: set[str] = set()
        self._noted_reserved: set[str] = set()

    def update(self, sigma_gpus: Iterable[Gpu], readings: Sequence[GpuReading]) -> Result:
        sigma: dict[str, Gpu] = {}
        for entry in sigma_gpus:
            sigma.setdefault(entry.index, entry)  # a repeated index: the first entry counts
        nvml = {str(r.index): r for r in readings}
        diffs: list[tuple[str, str, float]] = []
        verdicts: list[tuple[str, str, bool]] = []
        missing: list[tuple[str, str, bool]] = []
        for gpu in sorted(set(sigma) | set(nvml), key=_gpu_order):
            missing.append((gpu, "sigma", gpu not in sigma))
            missing.append((gpu, "nvml", gpu not in nvml))
        matched = sorted(set(sigma) & set(nvml), key=_gpu_order)
        for gpu in matched:
            s, n = sigma[gpu], nvml[gpu]
            if s.name is not None and n.name is not None:
                verdicts.append((gpu, "identity", not names_agree(s.name, n.name)))
            found = differences(s, n)
            total = n.memory_total_bytes if n.memory_total_bytes is not None \
                else s.memory_total_bytes
            for field in DIFFERENCE_FIELDS:
                if field not in found:
                    continue
                d = found[field]
                diffs.append((gpu, field, d))
                if field == "count":
                    continue
                limit = self.tolerances.limit(field, total)
                if field in WINDOWED:
                    history = self._history.setdefault((gpu, field),
                                                       deque(maxlen=self.window))
                    history.append(d)
                    if len(history) == self.window:
                        verdicts.append((gpu, field, beyond(statistics.median(history), limit)))
                elif field == "memory_total":
                    verdicts.append((gpu, field, beyond(d, limit)
                                     and not self._total_without_reserved(gpu, s, n, limit)))
                else:
                    verdicts.append((gpu, field, beyond(d, limit)))
            self._check_units(gpu, s, n)
        # Forget GPUs not seen on both sides: the state stays bounded.
        keep = set(matched)
        for key in [k for k in self._history if k[0] not in keep]:
            del self._history[key]
        order = {f: i for i, f in enumerate(MISMATCH_FIELDS)}
        verdicts.sort(key=lambda v: (_gpu_order(v[0]), order[v[1]]))
        return Result(tuple(diffs), tuple(verdicts), tuple(missing))

    def _total_without_reserved(self, gpu: str, s: Gpu, n: GpuReading, limit: float) -> bool:
        """Sigma's total equals NVML's less the driver's reserved memory: agreement."""
        if s.memory_total_bytes is None or n.memory_total_bytes is None \
                or not n.memory_reserved_bytes:
            return False
        usable = n.memory_total_bytes - n.memory_reserved_bytes
        if beyond(s.memory_total_bytes - usable, limit):
            return False
        if gpu not in self._noted_reserved:
            self._noted_reserved.add(gpu)
            log.info("GPU memory total agrees without the driver's reserved memory: "
                     "Sigma reports usable memory, not the card's total", extra=fields(
                         target=self.target, gpu=gpu, sigma_bytes=s.memory_total_bytes,
                         nvml_total_bytes=n.memory_total_bytes,
                         nvml_reserved_bytes=n.memory_reserved_bytes))
        return True

    def _check_units(self, gpu: str, s: Gpu, n: GpuReading) -> None:
        if s.memory_total_bytes is None or n.memory_total_bytes is None:
            return
        key = f"{gpu}/{n.uuid or ''}"
        if key not in self._warned_units and looks_like_mb_mib(s.memory_total_bytes,
                                                                n.memory_total_bytes):
            self._warned_units.add(key)
            log.warning(
                "GPU memory total differs by the MB/MiB factor: Sigma's `total` looks like "
                "megabytes (10^6) read as MiB (2^20) or the reverse; memory figures from "
                "Sigma are off by 4.9%", extra=fields(
                    target=self.target, gpu=gpu, sigma_bytes=s.memory_total_bytes,
                    nvml_bytes=n.memory_total_bytes,
                    ratio=round(s.memory_total_bytes / n.memory_total_bytes, 6)))


def crosscheck_samples(target: str, result: Result) -> Samples:
    out = new_samples()
    for gpu, field, value in result.differences:
        out["sigma_gpu_crosscheck_difference"].append(((target, gpu, field), value))
    for gpu, field, bad in result.mismatches:
        out["sigma_gpu_crosscheck_mismatch"].append(((target, gpu, field), 1.0 if bad else 0.0))
    for gpu, side, gone in result.missing:
        out["sigma_gpu_crosscheck_gpu_missing"].append(((target, gpu, side),
                                                        1.0 if gone else 0.0))
    return out
