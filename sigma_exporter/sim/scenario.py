"""GPU scenarios: one script of GPU figures, played by both sides of the cross-check.

A scenario says, per round and per GPU, what the hardware is doing.
`sim.fake_nvml.FakeBackend` turns it into NVML readings (base units);
`sim.gpu_override.apply_to_simulator` makes the simulated servers report it
as Sigma's `System.gpu[]` fields (MiB, integer percent, celsius).
Perturbations change only Sigma's side, so a test can produce each kind of
mismatch on purpose. File format (YAML; JSON is YAML too)::

    round_seconds: 15      # time-based rounds (simulator CLI); tests step rounds by hand
    repeat: false          # past the last round: hold it (false) or start over (true)
    gpus:                  # key gpuN: N is the NVML index
      gpu0:
        name: NVIDIA A10
        uuid: GPU-0000...          # optional (derived from the index)
        pci_bus_id: 00000000:17:00.0   # optional (derived from the index)
        total_mib: 22731
        not_supported: [power_w]   # NVML answers NotSupported for these fields
        nvml_missing: [4, 5]       # the driver does not see it in these rounds (or true)
    rounds:                # each round changes some fields; the rest carry over
      - gpu0: {used_mib: 4096, gpu: 40, mem: 12, enc: 55, dec: 20, temp: 50,
               power_w: 90.5, video_mhz: 1410, sessions: 4, fps: 30, latency_us: 1200}
      - gpu0: {gpu: 42}
    nvml_fail_rounds: [3]  # NVML as a whole fails in these rounds
    sigma:                 # what Sigma reports differently (its units)
      gpu0: {used_offset: 2048, enc_offset: 30, name: Tesla T4, from_round: 2}
      gpu1: {missing: true}        # Sigma does not list this GPU

GPU fields: name, uuid, pci_bus_id, total_mib, used_mib, reserved_mib (NVML
only: the driver's reserved memory), gpu, mem, enc, dec (percent), temp
(celsius), power_w, video_mhz, sessions, fps, latency_us, and the health
fields power_limit_w, xid (Xid events so far), last_xid, ecc_uncorrected,
remap_pending, remap_failure (0/1) and throttle (NVML's clocks-event bitmask,
sigma_exporter.agent.nvml.THROTTLE_REASONS).
Sigma perturbation keys: missing, from_round, name, and for each of Sigma's
fields total, used, gpu, enc, dec, temp, count either an absolute value or
`<field>_offset`. Sigma's `count` follows NVML's encoder sessions unless set.
A field the scenario never gives is absent from NVML; on Sigma's side the
simulator keeps its own made-up value for it.

Round numbers count from 0 and index `rounds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sigma_exporter.agent.nvml import MIB, GpuReading, NvmlFailure, Readings
from sigma_exporter.strictyaml import ConfigError, read_yaml

GpuOverride = Callable[[int, float], dict[str, Any] | None]

# Truth fields: name -> (GpuReading attribute, factor to base units).
_NUMERIC: dict[str, tuple[str, float]] = {
    "total_mib": ("memory_total_bytes", float(MIB)),
    "used_mib": ("memory_used_bytes", float(MIB)),
    "reserved_mib": ("memory_reserved_bytes", float(MIB)),
    "gpu": ("utilization_ratio", 0.01),
    "mem": ("memory_utilization_ratio", 0.01),
    "enc": ("encoder_utilization_ratio", 0.01),
    "dec": ("decoder_utilization_ratio", 0.01),
    "temp": ("temperature_celsius", 1.0),
    "power_w": ("power_watts", 1.0),
    "video_mhz": ("video_clock_hz", 1e6),
    "sessions": ("encoder_sessions", 1.0),
    "fps": ("encoder_fps", 1.0),
    "latency_us": ("encoder_latency_seconds", 1e-6),
    "power_limit_w": ("power_limit_watts", 1.0),
    "xid": ("xid_errors", 1.0),
    "last_xid": ("last_xid", 1.0),
    "ecc_uncorrected": ("ecc_uncorrected_errors", 1.0),
    "remap_pending": ("row_remap_pending", 1.0),
    "remap_failure": ("row_remap_failure", 1.0),
    "throttle": ("throttle_reasons", 1.0),
}
_TEXT = ("name", "uuid", "pci_bus_id")
_GPU_KEYS = {*_NUMERIC, *_TEXT}
# Sigma's gpu[] field <- truth field (Sigma reports integers).
SIGMA_FROM_TRUTH: dict[str, str] = {
    "total": "total_mib", "used": "used_mib", "gpu": "gpu", "enc": "enc", "dec": "dec",
    "temp": "temp", "count": "sessions",
}
_SIGMA_NUMERIC = tuple(SIGMA_FROM_TRUTH)
_PERTURB_KEYS = {"missing", "from_round", "name", *_SIGMA_NUMERIC,
                 *(f"{k}_offset" for k in _SIGMA_NUMERIC)}
_TOP_KEYS = {"round_seconds", "repeat", "gpus", "rounds", "nvml_fail_rounds", "sigma"}
_SPEC_KEYS = {*_GPU_KEYS, "not_supported", "nvml_missing"}
MAX_SIM_GPUS = 8  # the simulator's limit


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message names the key."""


# --- round clocks ---------------------------------------------------------------


class RoundClock(Protocol):
    def round_at(self, now: float) -> int: ...


@dataclass
class ManualClock:
    """Rounds advance only when told: deterministic tests, no sleeping."""

    round: int = 0

    def round_at(self, now: float) -> int:
        return self.round

    def advance(self, rounds: int = 1) -> None:
        self.round += rounds


@dataclass(frozen=True)
class TimeClock:
    """A new round every `seconds` from `start` (the simulator run from the CLI)."""

    start: float
    seconds: float

    def round_at(self, now: float) -> int:
        return max(0, math.floor((now - self.start) / self.seconds))


# --- the scenario -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Perturbation:
    """How Sigma's report of one GPU differs from the truth (Sigma's units)."""

    missing: bool = False
    from_round: int = 0
    name: str | None = None
    absolute: tuple[tuple[str, float], ...] = ()
    offset: tuple[tuple[str, float], ...] = ()

    def apply(self, entry: dict[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        if self.name is not None:
            out["name"] = self.name
        for key, value in self.absolute:
            out[key] = _sigma_number(value)
        for key, delta in self.offset:
            if key in out:  # an offset of a field Sigma does not report stays absent
                out[key] = _sigma_number(float(out[key]) + delta)
        return out


def _sigma_number(value: float) -> int:
    return round(value)  # Sigma reports whole MiB, percent and degrees


@dataclass(frozen=True, slots=True)
class GpuSpec:
    index: int
    not_supported: frozenset[str] = frozenset()
    nvml_missing: frozenset[int] | None = None  # None: never; empty set: always


@dataclass(frozen=True)
class Scenario:
    gpus: tuple[GpuSpec, ...]
    # states[r][index] = every truth field known at round r (cumulative).
    states: tuple[dict[int, dict[str, Any]], ...]
    round_seconds: float = 15.0
    repeat: bool = False
    nvml_fail_rounds: frozenset[int] = frozenset()
    sigma: dict[int, Perturbation] = field(default_factory=dict)

    # -- rounds ------------------------------------------------------------------

    def effective_round(self, r: int) -> int:
        n = len(self.states)
        return r % n if self.repeat else min(max(r, 0), n - 1)

    def truth(self, r: int, index: int) -> dict[str, Any]:
        return self.states[self.effective_round(r)][index]

    # -- the driver's side ---------------------------------------------------------

    def nvml_readings(self, r: int) -> Readings:
        e = self.effective_round(r)
        if e in self.nvml_fail_rounds:
            raise NvmlFailure(f"NVMLError_Unknown: scenario round {e} fails")
        out = []
        for spec in self.gpus:
            if spec.nvml_missing is not None and (not spec.nvml_missing or e in spec.nvml_missing):
                continue
            truth = self.states[e][spec.index]
            values: dict[str, Any] = {}
            for key, (attr, factor) in _NUMERIC.items():
                if key in truth and key not in spec.not_supported:
                    values[attr] = float(truth[key]) * factor
            for key in _TEXT:
                if key not in spec.not_supported:
                    values[key] = truth.get(key)
            out.append(GpuReading(index=spec.index, **values))
        return tuple(out)

    # -- Sigma's side --------------------------------------------------------------

    def sigma_indices(self) -> list[int]:
        """The GPUs Sigma lists, in order (a Sigma-side absence is for the whole run)."""
        return [s.index for s in self.gpus
                if not (s.index in self.sigma and self.sigma[s.index].missing)]

    def sigma_entry(self, index: int, r: int) -> dict[str, Any]:
        """Sigma's gpu[] fields for this GPU in round r, perturbation applied."""
        truth = self.truth(r, index)
        entry: dict[str, Any] = {"index": index}
        if "name" in truth:
            entry["name"] = truth["name"]
        for key, source in SIGMA_FROM_TRUTH.items():
            if source in truth:
                entry[key] = round(float(truth[source]))
        p = self.sigma.get(index)
        if p is not None and self.effective_round(r) >= p.from_round:
            entry = p.apply(entry)
        return entry

    def sigma_override(self, clock: RoundClock) -> GpuOverride:
        visible = self.sigma_indices()

        def override(position: int, now: float) -> dict[str, Any] | None:
            if position >= len(visible):
                return None
            return self.sigma_entry(visible[position], clock.round_at(now))

        return override


# --- parsing --------------------------------------------------------------------


def _gpu_key(key: object, where: str) -> int:
    text = str(key)
    if not text.startswith("gpu") or not text[3:].isdigit():
        raise ScenarioError(f"{where}: {key!r} is not a GPU key; write gpu0, gpu1, ...")
    return int(text[3:])


def _mapping(value: object, where: str, allowed: Iterable[str] | None = None) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: must be a mapping")
    if allowed is not None:
        allowed = set(allowed)
        for k in value:
            if k not in allowed:
                raise ScenarioError(f"{where}.{k}: unknown key; use one of: "
                                    f"{', '.join(sorted(allowed))}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise ScenarioError(f"{where}: {value!r} is not a number")
    return float(value)


def _rounds_set(value: object, where: str) -> frozenset[int]:
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ScenarioError(f"{where}: must be a list of round numbers (0, 1, ...)")
    return frozenset(value)


def _truth_fields(raw: Mapping[Any, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in _GPU_KEYS:
            continue
        if k in _TEXT:
            if not isinstance(v, str):
                raise ScenarioError(f"{where}.{k}: must be a string")
            out[k] = v
        else:
            out[k] = _number(v, f"{where}.{k}")
    return out


def parse_perturbation(raw: object, where: str) -> Perturbation:
    block = _mapping(raw, where, _PERTURB_KEYS)
    missing = block.get("missing", False)
    if not isinstance(missing, bool):
        raise ScenarioError(f"{where}.missing: must be true or false")
    from_round = block.get("from_round", 0)
    if isinstance(from_round, bool) or not isinstance(from_round, int) or from_round < 0:
        raise ScenarioError(f"{where}.from_round: must be a round number (0, 1, ...)")
    name = block.get("name")
    if name is not None and not isinstance(name, str):
        raise ScenarioError(f"{where}.name: must be a string")
    absolute = tuple((k, _number(block[k], f"{where}.{k}"))
                     for k in _SIGMA_NUMERIC if k in block)
    offset = tuple((k, _number(block[f"{k}_offset"], f"{where}.{k}_offset"))
                   for k in _SIGMA_NUMERIC if f"{k}_offset" in block)
    return Perturbation(missing, from_round, name, absolute, offset)


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    top = _mapping(data, source, _TOP_KEYS)
    round_seconds = _number(top.get("round_seconds", 15), f"{source}: round_seconds")
    if round_seconds <= 0:
        raise ScenarioError(f"{source}: round_seconds: must be greater than zero")
    repeat = top.get("repeat", False)
    if not isinstance(repeat, bool):
        raise ScenarioError(f"{source}: repeat: must be true or false")
    gpus_raw = _mapping(top.get("gpus"), f"{source}: gpus")
    if not gpus_raw:
        raise ScenarioError(f"{source}: gpus: list at least one GPU (gpu0: {{...}})")
    specs: list[GpuSpec] = []
    base: dict[int, dict[str, Any]] = {}
    for key, raw in gpus_raw.items():
        where = f"{source}: gpus.{key}"
        index = _gpu_key(key, f"{source}: gpus")
        block = _mapping(raw, where, _SPEC_KEYS)
        fields = {"name": "NVIDIA A10", "total_mib": 22731.0,
                  "uuid": f"GPU-5ca1ab1e-0000-4000-8000-{index:012x}",
                  "pci_bus_id": f"00000000:{0x17 + index:02X}:00.0"}
        fields.update(_truth_fields(block, where))
        unsupported = block.get("not_supported", [])
        if not isinstance(unsupported, list) or not all(u in _GPU_KEYS for u in unsupported):
            raise ScenarioError(f"{where}.not_supported: must list GPU fields "
                                f"({', '.join(sorted(_GPU_KEYS))})")
        missing_raw = block.get("nvml_missing", False)
        nvml_missing: frozenset[int] | None
        if missing_raw is True:
            nvml_missing = frozenset()
        elif missing_raw is False:
            nvml_missing = None
        else:
            nvml_missing = _rounds_set(missing_raw, f"{where}.nvml_missing")
        specs.append(GpuSpec(index, frozenset(unsupported), nvml_missing))
        base[index] = fields
    rounds_raw = top.get("rounds", [])
    if not isinstance(rounds_raw, list):
        raise ScenarioError(f"{source}: rounds: must be a list")
    states: list[dict[int, dict[str, Any]]] = []
    current = {i: dict(f) for i, f in base.items()}
    for n, round_raw in enumerate(rounds_raw):
        where = f"{source}: rounds[{n}]"
        for key, raw in _mapping(round_raw, where).items():
            index = _gpu_key(key, where)
            if index not in current:
                raise ScenarioError(f"{where}.{key}: not listed under gpus")
            current[index].update(_truth_fields(_mapping(raw, f"{where}.{key}", _GPU_KEYS),
                                                f"{where}.{key}"))
        states.append({i: dict(f) for i, f in current.items()})
    if not states:
        states.append(current)
    sigma: dict[int, Perturbation] = {}
    for key, raw in _mapping(top.get("sigma"), f"{source}: sigma").items():
        index = _gpu_key(key, f"{source}: sigma")
        if index not in base:
            raise ScenarioError(f"{source}: sigma.{key}: not listed under gpus")
        sigma[index] = parse_perturbation(raw, f"{source}: sigma.{key}")
    fail = _rounds_set(top.get("nvml_fail_rounds", []), f"{source}: nvml_fail_rounds")
    scenario = Scenario(tuple(sorted(specs, key=lambda s: s.index)), tuple(states),
                        round_seconds, repeat, fail, sigma)
    if len(scenario.sigma_indices()) > MAX_SIM_GPUS:
        raise ScenarioError(f"{source}: gpus: the simulator serves at most {MAX_SIM_GPUS} GPUs")
    return scenario


def load_scenario(path: str) -> Scenario:
    """Read a YAML or JSON scenario file; raises ScenarioError."""
    try:
        data = read_yaml(path, "--gpu-scenario")
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None
    return parse_scenario(data, path)
