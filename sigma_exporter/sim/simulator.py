"""A simulated Sigma Media Server for tests, the demo and benchmarks.

Two layers:

* pure rendering (`render_dump`, `render_progress`, `emitted_errors`): every
  value is a deterministic function of the server's configuration (seed,
  index, epoch, overrides) and the time asked for, so tests can predict what
  an exporter must report without sleeping;
* an aiohttp front (`Simulator`, `run_simulator`, `main_simulate`) that serves
  N servers on consecutive ports, with fault modes that reproduce the ways
  real servers and the proxies in front of them misbehave, and an optional
  control API to change faults, job speeds and job states, and to freeze a
  job's media time (PTS), at run time.

The answers copy the quirks of the real API on purpose (mixed key case, units
in strings, numbers as plain strings, server-local times in `progress`), so
the exporter's parser is exercised by every test that polls the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import signal
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Final, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from aiohttp import web

__all__ = [
    "ERROR_CODES",
    "FAULT_MODES",
    "NO_CODE",
    "PROGRESS_AS_DOCUMENTED",
    "SimServer",
    "Simulator",
    "emitted_errors",
    "error_lines",
    "job_names",
    "job_speed",
    "main_simulate",
    "make_servers",
    "render_dump",
    "render_progress",
    "run_simulator",
]

JSON = dict[str, Any]

FAULT_MODES: Final[tuple[str, ...]] = (
    "none",
    "refuse",
    "slow",
    "http-502-html",
    "truncated",
    "invalid-json",
    "non-object",
    "huge",
    "flap",
    "progress-invalid",
    "trickle",
    "invalid-utf8",
    "redirect",
)

# Codes that error lines carry as "(code: X)"; NO_CODE counts lines without one.
ERROR_CODES: Final[tuple[str, ...]] = ("INPUT_TIMEOUT", "DECODE_ERROR", "OUTPUT_FAIL")
NO_CODE: Final = ""

ERROR_WINDOW: Final = 5  # the server keeps only the last few lines per job
ERROR_BUCKET_S: Final = 30  # at most 2 lines per bucket, so a 15 s poll never misses one

SLOW_DELAY_S: Final = 30.0
TRICKLE_INTERVAL_S: Final = 0.5
HUGE_BYTES: Final = 20 * 1024 * 1024
REDIRECT_TARGET: Final = "http://169.254.169.254/latest/meta-data/"

JOB_NAMES: Final[tuple[str, ...]] = (
    "VTV1",
    "VTV3",
    "HTV7",
    "SPORT-HD",
    "VTV2",
    "HTV9",
    "VTC1",
    "THVL1",
    "MOVIE-4K",
    "NEWS-24",
)

# The documented progress answer, byte for byte: a comma is missing between the
# two `profile` objects, so it is not valid JSON (fault mode `progress-invalid`).
PROGRESS_AS_DOCUMENTED: Final = """{
  "total": 1,
  "ec": 0,
  "result": {
    "$job_name": {
      "speed": 1.0,
      "created": "2020-08-13 11:23:39",
      "startup": "2020-08-13 11:50:05",
      "state": "started",
      "Life": "1h41m18s",
      "PTS": "1h41m19s",
      "error": [
        "[08-13 11:48:24] Input timeout (code: INPUT_TIMEOUT)"
      ],
      "input": [
        {
          "URL": "udp://234.5.6.7:8888",
          "profile": [
            "aac stereo@48000 137Kbps lc",
            "H264 1280x720p@25 VBR Yuv420P High 3.1"
          ],
          "bitrate": 2390646
        }
      ],
      "profile": [
        {
          "ID": "128K",
          "bitrate": 128760
        }
        {
          "id": "480",
          "bitrate": 962192
        }
      ],
      "target": [
        {
          "format": "hls",
          "url": "/mnt/ramdisk/origin04/source/",
          "select": [
            "128k",
            "480"
          ],
          "bitrate": 5211223
        }
      ],
      "weight": 1,
      "_id": ""
    }
  },
  "Tel": 2
}"""

NGINX_502_HTML: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)

# ---------------------------------------------------------------------------
# Deterministic noise. Python's hash() is salted per process, so use splitmix64
# and crc32: the same seed gives the same values in every process.

_M64: Final = (1 << 64) - 1


def _mix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _h(*parts: int) -> int:
    x = 0x243F6A8885A308D3
    for p in parts:
        x = _mix(x ^ (p & _M64))
    return x


def _u(*parts: int) -> float:
    """Uniform in [0, 1) from the integer key."""
    return _h(*parts) / 18446744073709551616.0


def _k(text: str) -> int:
    return zlib.crc32(text.encode())


def _smooth(t: float, period: float, *parts: int) -> float:
    """Value noise in [0, 1): random at each multiple of period, eased between."""
    x = t / period
    i = math.floor(x)
    a = _u(*parts, i)
    b = _u(*parts, i + 1)
    s = (1.0 - math.cos(math.pi * (x - i))) / 2.0
    return a + (b - a) * s


def _clamp(v: float, lo: float = 0.0, hi: float = 100.0) -> float:
    return lo if v < lo else hi if v > hi else v


_S_LOAD, _S_LOAD2, _S_PHASE, _S_MEM, _S_TEMP = (_k(s) for s in ("load", "load2", "ph", "mem", "t"))
_S_CPU, _S_RAM, _S_SWAP, _S_UP, _S_MODEL = (_k(s) for s in ("cpu", "ram", "swap", "up", "model"))
_S_DIP, _S_DIPV, _S_JIT, _S_ERRN, _S_ERRO = (_k(s) for s in ("dip", "dipv", "jit", "en", "eo"))
_S_ERRC, _S_BR, _S_QUEUE, _S_APP, _S_PID = (_k(s) for s in ("ec", "br", "q", "app", "pid"))

# ---------------------------------------------------------------------------
# Static tables.


@dataclass(frozen=True, slots=True)
class _GpuModel:
    name: str
    total_mib: int
    encoder: tuple[str, ...]
    decoder: tuple[str, ...]


_GPU_MODELS: Final[tuple[_GpuModel, ...]] = (
    _GpuModel(
        "NVIDIA A10",
        22731,
        (
            "h264@yuv420p",
            "h264@yuv444p",
            "hevc@yuv420p",
            "hevc@yuv444p",
            "hevc@yuv420p10le",
            "hevc@yuv444p10le",
            "h264@bframe",
            "hevc@bframe",
        ),
        ("h264@yuv420p", "hevc@yuv420p", "hevc@yuv420p10le"),
    ),
    _GpuModel(
        "Tesla T4",
        15360,
        ("h264@yuv420p", "h264@yuv444p", "hevc@yuv420p", "hevc@yuv420p10le", "h264@bframe"),
        ("h264@yuv420p", "hevc@yuv420p", "hevc@yuv420p10le", "vp9@yuv420p"),
    ),
    _GpuModel(
        "NVIDIA L4",
        23034,
        (
            "h264@yuv420p",
            "hevc@yuv420p",
            "hevc@yuv420p10le",
            "av1@yuv420p",
            "av1@yuv420p10le",
            "hevc@bframe",
        ),
        ("h264@yuv420p", "hevc@yuv420p", "hevc@yuv420p10le", "av1@yuv420p"),
    ),
)

# name, CPU key, children key (None: absent), children, base RAM MiB. Key case
# is mixed on purpose, like the real answer.
_APPS: Final[tuple[tuple[str, str, str | None, int, int], ...]] = (
    ("portal-local", "cpu", None, 0, 28),
    ("nginx", "cpu", "Child", 64, 346),
    ("prometheus-nginxlog-exporter", "CPU", None, 0, 22),
    ("origin", "CPU", "child", 4, 38),
    ("plugin-manager", "cpu", None, 0, 30),
    ("victoria-metrics", "cpu", None, 0, 95),
)
_RESTARTING_APP: Final = "nginx"

_TIMEZONES: Final = ("Asia/Ho_Chi_Minh", "UTC", "Europe/Berlin")
# Used only when the host has no tz database (no DST then, which is fine for a sim).
_TZ_FALLBACK: Final = {"Asia/Ho_Chi_Minh": 7, "UTC": 0, "Europe/Berlin": 1}

_ERROR_TEXT: Final = {
    "INPUT_TIMEOUT": "Input timeout",
    "DECODE_ERROR": "Decode error on stream #0:0",
    "OUTPUT_FAIL": "Output write failed",
}
_UNCODED_TEXT: Final = (
    "Input reconnected",
    "Non-monotonous DTS in output stream 0:1",
    "Packet corrupt (stream = 0, dts = {n})",  # parentheses, but no "(code: ...)"
)


@functools.lru_cache(maxsize=16)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=_TZ_FALLBACK.get(name, 0)), name)


# ---------------------------------------------------------------------------
# The server model.


def _default_epoch() -> float:
    return float(math.floor(time.time()))


@dataclass
class SimServer:
    """One simulated server. Rendering reads it; the control API mutates the
    override fields (`fault`, `speed_overrides`, `state_overrides`, `pts_frozen_at`,
    `queue_override`, `gpu_override`)."""

    index: int
    seed: int = 1
    gpus: int = 1
    jobs: int = 4
    name: str = ""  # default: sigma-server-NN (index + 1)
    hostname: str = ""
    port: int = 9999  # reported in the dump; the simulator sets its real port
    timezone: str = ""  # default: by index, Asia/Ho_Chi_Minh, UTC, Europe/Berlin
    # When the simulation began: errors are emitted from here on, job and app
    # restarts are counted from here. The server "process" started earlier.
    epoch: float = field(default_factory=_default_epoch)
    job_restart_period: float = 600.0  # the first job restarts this often
    app_restart_period: float = 900.0  # nginx restarts this often
    # Mutable overrides.
    fault: str | None = None
    speed_overrides: dict[str, float] = field(default_factory=dict)
    state_overrides: dict[str, str] = field(default_factory=dict)  # job -> e.g. "stopped"
    # job -> when its media time (PTS) froze: it claims to run, PTS stands still.
    pts_frozen_at: dict[str, float] = field(default_factory=dict)
    # Jobs waiting to start; None: about one 5-minute window in 10 has one.
    queue_override: int | None = None
    # GPU scenario hook: (gpu index, now) -> fields to overwrite in that gpu[] entry.
    gpu_override: Callable[[int, float], dict[str, Any] | None] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.gpus <= 8:
            raise ValueError(f"gpus must be 0..8, not {self.gpus}")
        if self.jobs < 0:
            raise ValueError(f"jobs must be >= 0, not {self.jobs}")
        if self.fault == "none":
            self.fault = None
        if self.fault is not None and self.fault not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.fault!r}")
        if not self.name:
            self.name = f"sigma-server-{self.index + 1:02d}"
        if not self.hostname:
            self.hostname = self.name.replace("sigma-server", "sigma-media-server", 1)
        if not self.timezone:
            self.timezone = _TIMEZONES[self.index % len(_TIMEZONES)]
        self.epoch = float(math.floor(self.epoch))

    @property
    def _key(self) -> tuple[int, int]:
        return (self.seed, self.index)

    @property
    def process_start(self) -> float:
        """When the simulated server process started: 2 h to 2 days before epoch."""
        return self.epoch - 7200.0 - math.floor(_u(*self._key, _S_UP) * 172800.0) - 0.331


def make_servers(
    count: int,
    *,
    gpus: int = 1,
    seed: int = 1,
    jobs: int = 4,
    fault: str | None = None,
    name_prefix: str = "sigma-server",
    epoch: float | None = None,
) -> list[SimServer]:
    """The servers one simulator process runs. With 3 or more servers, every
    server with index % 3 == 2 has no GPU, so a demo always shows a GPU-less one."""
    ep = _default_epoch() if epoch is None else epoch
    return [
        SimServer(
            index=i,
            seed=seed,
            gpus=0 if count >= 3 and i % 3 == 2 else gpus,
            jobs=jobs,
            name=f"{name_prefix}-{i + 1:02d}",
            epoch=ep,
            fault=fault,
        )
        for i in range(count)
    ]


# ---------------------------------------------------------------------------
# Formatting helpers.


def _iso(ts: float) -> str:
    ms_total = math.floor(ts * 1000.0)
    secs, ms = divmod(ms_total, 1000)
    dt = datetime.fromtimestamp(secs, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z"


def _local(server: SimServer, ts: float) -> datetime:
    return datetime.fromtimestamp(math.floor(ts), _zone(server.timezone))


def _local_str(server: SimServer, ts: float) -> str:
    return f"{_local(server, ts):%Y-%m-%d %H:%M:%S}"


def _life(seconds: float) -> str:
    """Uptime the way the server writes it: 1D09h31m20s, 7h00m50s, 41m18s, 9s."""
    s = max(0, math.floor(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}D{h:02d}h{m:02d}m{s:02d}s"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def _restart_time(epoch: float, period: float, now: float, first: float) -> tuple[float, int]:
    """Last restart at or before now (restarts at epoch + k*period, k >= 1)."""
    if period <= 0 or now < epoch + period:
        return first, 0
    k = math.floor((now - epoch) / period)
    return epoch + k * period, k


# ---------------------------------------------------------------------------
# dump


def _models(server: SimServer) -> list[_GpuModel]:
    main = _GPU_MODELS[math.floor(_u(*server._key, _S_MODEL) * len(_GPU_MODELS))]
    models = [main] * server.gpus
    # Odd servers with several GPUs carry one odd card, so supported[] has two entries.
    if server.gpus >= 2 and server.index % 2 == 1:
        models[-1] = _GPU_MODELS[1] if main is not _GPU_MODELS[1] else _GPU_MODELS[0]
    return models


def _jobs_per_gpu(server: SimServer) -> list[int]:
    counts = [0] * server.gpus
    if not counts:  # a GPU-less server transcodes on the CPU
        return counts
    for j in range(server.jobs):
        counts[j % server.gpus] += 1
    return counts


def _gpu_load(server: SimServer, g: int, now: float, count: int) -> float:
    key = (*server._key, g)
    wave = 15.0 * math.sin(2.0 * math.pi * (now / 1800.0 + _u(*key, _S_PHASE)))
    slow = 30.0 * (_smooth(now, 300.0, *key, _S_LOAD) - 0.5)
    fast = 10.0 * (_smooth(now, 10.0, *key, _S_LOAD2) - 0.5)
    return _clamp(20.0 + 9.0 * count + wave + slow + fast)


def _render_gpus(server: SimServer, now: float) -> tuple[list[JSON], float]:
    out: list[JSON] = []
    total_load = 0.0
    for g, (model, count) in enumerate(zip(_models(server), _jobs_per_gpu(server), strict=True)):
        key = (*server._key, g)
        load = _gpu_load(server, g, now, count)
        total_load += load
        mem_frac = _clamp(
            0.03 + 0.08 * count + 0.2 * load / 100.0 * _smooth(now, 60.0, *key, _S_MEM), 0.0, 0.97
        )
        entry: JSON = {
            "index": g,
            "name": model.name,
            "total": model.total_mib,
            "used": min(model.total_mib, round(model.total_mib * mem_frac)),
            "gpu": round(_clamp(0.55 * load + 4.0 * _smooth(now, 5.0, *key, _S_LOAD2))),
            "soft": round(_clamp(2.0 + 0.05 * load)),
            "enc": round(load),
            "dec": round(_clamp(0.4 * load)),
            "temp": round(35.0 + 0.4 * load + 3.0 * (_smooth(now, 120.0, *key, _S_TEMP) - 0.5)),
            "speed": 1,
            "percent": round(_clamp(0.8 * load + 5.0)),
            # A number as a plain string, as real answers sometimes have.
            "count": str(count) if g == 1 else count,
        }
        if server.gpu_override is not None:
            extra = server.gpu_override(g, now)
            if extra:
                entry.update(extra)
        out.append(entry)
    avg = total_load / server.gpus if server.gpus else 0.0
    return out, avg


def _supported(models: list[_GpuModel]) -> list[JSON]:
    seen: dict[str, _GpuModel] = {}
    for m in models:
        seen.setdefault(m.name, m)
    return [
        {"name": m.name, "Encoder": list(m.encoder), "decoder": list(m.decoder)}
        for m in seen.values()
    ]


def _render_apps(server: SimServer, now: float) -> list[JSON]:
    start = server.process_start
    apps: list[JSON] = []
    for a, (name, cpu_key, child_key, children, ram) in enumerate(_APPS):
        began, restarts = start + 3.0 + a, 0
        if name == _RESTARTING_APP:
            began, restarts = _restart_time(server.epoch, server.app_restart_period, now, began)
        key = (*server._key, _S_APP, a)
        proc: JSON = {
            "pid": 1_400_000 + _h(*server._key, _S_PID, a) % 500_000 + restarts,
            cpu_key: f"{0.6 * _smooth(now, 30.0, *key):.1f}%",
            "ram": f"{round(ram * (0.9 + 0.2 * _smooth(now, 600.0, *key, 1)))}MB",
        }
        if child_key is not None:
            proc[child_key] = children
        apps.append({"name": name, "state": "running", "Life": _life(now - began), "process": proc})
    return apps


def render_dump(server: SimServer, now: float) -> JSON:
    """The `dump` answer of this server at time `now` (Unix seconds)."""
    key = server._key
    models = _models(server)
    gpus, avg_load = _render_gpus(server, now)
    cores = (32, 48, 64, 96)[_h(*key, 11) % 4]
    ram_total = (64215, 128347, 257579)[_h(*key, 12) % 3]
    swap_total = 16383 if _h(*key, 13) % 3 else 0
    ram_used = min(
        ram_total,
        round(ram_total * (0.06 + 0.1 * _smooth(now, 900.0, *key, _S_RAM) + 0.001 * server.jobs)),
    )
    host_cpu = _clamp(4.0 + 0.3 * avg_load + 20.0 * (_smooth(now, 20.0, *key, _S_CPU) - 0.5))
    proc_cpu = _clamp(
        25.0 * server.jobs * (0.7 + 0.6 * _smooth(now, 15.0, *key, _S_CPU, 1)), 0, 800
    )
    proc_ram = round(900 + 550 * server.jobs * (0.9 + 0.2 * _smooth(now, 400.0, *key, _S_RAM, 1)))
    queued = server.queue_override
    if queued is None:
        queued = 1 if _u(*key, _S_QUEUE, math.floor(now / 300.0)) < 0.1 else 0
    task: JSON = {"started": server.jobs}
    if queued:
        task["pending"] = queued  # other states appear as other keys
    ip3 = 10 + server.index // 240
    ip4 = 10 + server.index % 240
    thread = 20 + 3 * server.jobs
    return {
        "name": server.name,
        "version": "3.0.12",
        "branch": "Commercial",
        "speed": 1,
        "build": "2024-02-29T06:30:09.650Z",
        "start": _iso(server.process_start),
        "local": _iso(now),
        "timezone": server.timezone,
        "hostname": server.hostname,
        "port": server.port,
        "queue": queued,
        "total": server.jobs + queued,
        "task": task,
        "supported": _supported(models),
        "System": {
            "os": ("Ubuntu 22.04.4 LTS", "Ubuntu 20.04.6 LTS")[server.index % 2],
            "cores": cores,
            "cpu": round(host_cpu, 1),
            # A plain-string number on odd servers, as real answers sometimes have.
            "thread": str(thread) if server.index % 2 else thread,
            "ramTotal": ram_total,
            "ramUsed": ram_used,
            "swapTotal": swap_total,
            "swapUsed": round(swap_total * 0.02 * _smooth(now, 3600.0, *key, _S_SWAP)),
            "updateTime": _iso(math.floor(now)),
            "network": [
                {"name": "bond1.901", "ip": f"172.16.{ip3}.{ip4}", "netmask": f"172.16.{ip3}.0/24"},
                {"name": "bond2.35", "ip": f"172.17.{ip3}.{ip4}", "netmask": f"172.17.{ip3}.0/24"},
            ],
            "Storage": [
                {
                    "name": "0",
                    "folder": ["/data/mediahub"],
                    "skip": [],
                    "time": 604800,
                    "delay": 360,
                }
            ],
            "log": {
                "folder": "/var/log/sigma-machine/",
                "used": 200 + math.floor(max(0.0, now - server.process_start) / 3600.0),
            },
            "gpu": gpus,
            "process": {
                "pid": 1_000_000 + _h(*key, _S_PID) % 900_000,
                "CPU": f"{proc_cpu:.1f}%",
                "ram": f"{proc_ram}MB",
                "Child": 2 + 3 * server.jobs,
            },
        },
        "APPS": _render_apps(server, now),
    }


# ---------------------------------------------------------------------------
# progress


def job_names(server: SimServer) -> list[str]:
    """The live channels of this server, in order (the first one restarts)."""
    return [JOB_NAMES[j] if j < len(JOB_NAMES) else f"CH-{j + 1:03d}" for j in range(server.jobs)]


def job_speed(server: SimServer, job: str, now: float) -> float:
    """Speed of a job: about 1.0, with deterministic dips below real time
    (about one 2-minute window in 8), unless overridden by the control API."""
    if job in server.speed_overrides:
        return server.speed_overrides[job]
    key = (*server._key, _k(job))
    window = math.floor(now / 120.0)
    if _u(*key, _S_DIP, window) < 0.12:
        return round(0.5 + 0.4 * _u(*key, _S_DIPV, window), 2)
    return round(1.0 + 0.02 * _u(*key, _S_JIT, math.floor(now / 5.0)), 2)


@dataclass(frozen=True, slots=True)
class _ErrorEvent:
    t: int  # Unix second it was emitted
    code: str  # NO_CODE for a line without "(code: ...)"
    variant: int


@functools.lru_cache(maxsize=1 << 16)
def _bucket_events(seed: int, index: int, job_key: int, bucket: int) -> tuple[_ErrorEvent, ...]:
    """0, 1 or 2 error lines in this bucket, at distinct seconds (unique text)."""
    key = (seed, index, job_key, bucket)
    r = _u(*key, _S_ERRN)
    n = 0 if r < 0.7 else 1 if r < 0.95 else 2
    if n == 0:
        return ()
    first = _h(*key, _S_ERRO) % ERROR_BUCKET_S
    offsets = [first]
    if n == 2:
        offsets.append((first + 1 + _h(*key, _S_ERRO, 1) % (ERROR_BUCKET_S - 1)) % ERROR_BUCKET_S)
    events = []
    for o in sorted(offsets):
        c = _u(*key, _S_ERRC, o)
        code = (
            "INPUT_TIMEOUT"
            if c < 0.4
            else "DECODE_ERROR"
            if c < 0.6
            else "OUTPUT_FAIL"
            if c < 0.75
            else NO_CODE
        )
        events.append(_ErrorEvent(bucket * ERROR_BUCKET_S + o, code, _h(*key, o) % 1_000_000))
    return tuple(events)


def _events_between(
    server: SimServer, job: str, since: float, until: float
) -> Iterator[_ErrorEvent]:
    lo = max(server.epoch, since)
    if until < lo:
        return
    jk = _k(job)
    for b in range(math.floor(lo / ERROR_BUCKET_S), math.floor(until / ERROR_BUCKET_S) + 1):
        for ev in _bucket_events(server.seed, server.index, jk, b):
            if lo <= ev.t <= until:
                yield ev


def _recent_events(server: SimServer, job: str, now: float) -> list[_ErrorEvent]:
    """The last ERROR_WINDOW events at or before now, oldest first."""
    jk = _k(job)
    found: list[_ErrorEvent] = []
    b = math.floor(now / ERROR_BUCKET_S)
    while len(found) < ERROR_WINDOW and (b + 1) * ERROR_BUCKET_S > server.epoch:
        for ev in reversed(_bucket_events(server.seed, server.index, jk, b)):
            if server.epoch <= ev.t <= now and len(found) < ERROR_WINDOW:
                found.append(ev)
        b -= 1
    found.reverse()
    return found


def _error_text(server: SimServer, ev: _ErrorEvent) -> str:
    stamp = f"[{_local(server, ev.t):%m-%d %H:%M:%S}]"
    if ev.code == NO_CODE:
        msg = _UNCODED_TEXT[ev.variant % len(_UNCODED_TEXT)].format(n=ev.variant * 40)
        return f"{stamp} {msg}"
    return f"{stamp} {_ERROR_TEXT[ev.code]} (code: {ev.code})"


def error_lines(server: SimServer, job: str, now: float) -> list[str]:
    """The error[] list of a job at time now: the last 5 lines, oldest first."""
    return [_error_text(server, ev) for ev in _recent_events(server, job, now)]


def emitted_errors(
    server: SimServer, job: str, until: float, since: float | None = None
) -> dict[str, int]:
    """How many distinct error lines the job emitted, per code, with
    max(epoch, since) <= emission second <= until. Keys: every code of
    ERROR_CODES plus NO_CODE ("") for lines without a code; zeros included."""
    counts = dict.fromkeys((*ERROR_CODES, NO_CODE), 0)
    for ev in _events_between(server, job, server.epoch if since is None else since, until):
        counts[ev.code] += 1
    return counts


def _render_job(server: SimServer, j: int, job: str, now: float) -> JSON:
    key = (*server._key, _k(job))
    created = server.process_start + 40.0 + 37.0 * j
    startup = created + 60.0
    if j == 0:  # one job restarts periodically: Life drops, startup moves
        startup, _ = _restart_time(server.epoch, server.job_restart_period, now, startup)
    speed = job_speed(server, job, now)
    life = max(0.0, now - startup)
    in_rate = round(2_390_646 * (0.85 + 0.3 * _smooth(now, 20.0, *key, _S_BR)) * min(1.0, speed))
    if j % 4 == 1:
        url = f"rtmp://user:secret@10.20.{j}.5/live/{job.lower()}?token=abc{j}"
    elif j % 4 == 3:
        url = f"http://admin:p4ss@cam{j}.example.net:8080/stream.ts"
    else:
        url = f"udp://234.5.6.{7 + j % 240}:8888"
    inputs: list[JSON] = [
        {
            ("url" if j % 3 == 2 else "URL"): url,
            "profile": ["aac stereo@48000 137Kbps lc", "H264 1280x720p@25 VBR Yuv420P High 3.1"],
            "bitrate": in_rate,
        }
    ]
    rendition = [("ID", "128K", 128_760), ("id", "480", 962_192), ("id", "720", 2_500_000)]
    profiles: list[JSON] = [
        {id_key: pid, "bitrate": round(rate * (0.95 + 0.1 * _smooth(now, 15.0, *key, _S_BR, p)))}
        for p, (id_key, pid, rate) in enumerate(rendition[: 2 + j % 2])
    ]
    targets: list[JSON] = [
        {
            "format": "hls",
            "url": f"/mnt/ramdisk/origin04/source/{job}/",
            "select": [str(p.get("ID", p.get("id"))).lower() for p in profiles],
            "bitrate": sum(int(p["bitrate"]) for p in profiles),
        }
    ]
    if j % 4 == 2:  # a push target with credentials in its URL
        targets.append(
            {
                "format": "rtmp",
                "url": f"rtmp://cdn:cdnpass@push.example.net/live/{job.lower()}",
                "select": ["480"],
                "bitrate": int(profiles[1]["bitrate"]),
            }
        )
    return {
        "speed": speed,
        "created": _local_str(server, created),
        "startup": _local_str(server, startup),
        "state": server.state_overrides.get(job, "started"),
        "Life": _life(life),
        "PTS": _life(_pts_life(server, job, startup, now, life)),
        "error": error_lines(server, job, now),
        "input": inputs,
        "profile": profiles,
        "target": targets,
        "weight": 2 if j % 4 == 3 else 1,
        "_id": "",
    }


def _pts_life(server: SimServer, job: str, startup: float, now: float, life: float) -> float:
    """Media time reached: one second ahead of Life, unless frozen by the control API."""
    frozen = server.pts_frozen_at.get(job)
    if frozen is None:
        return life + 1.0
    return max(0.0, min(now, frozen) - startup) + 1.0


def render_progress(server: SimServer, now: float, name: str = "*") -> JSON:
    """The `progress` answer: every job for name "*", else that job only
    ({"ec": 1, ...} when the server has no such job)."""
    names = job_names(server)
    if name != "*" and name not in names:
        return {"ec": 1, "msg": f"job {name} not found", "Tel": 1}
    result = {
        job: _render_job(server, j, job, now) for j, job in enumerate(names) if name in ("*", job)
    }
    return {
        "total": len(result),
        "ec": 0,
        "result": result,
        "Tel": 1 + _h(*server._key, math.floor(now)) % 4,
    }


# ---------------------------------------------------------------------------
# HTTP front.


class _UnframedResponse(web.StreamResponse):
    # No Content-Length and no chunking: the body ends when the connection
    # closes, so a cut body reaches the client as short but "complete" JSON.
    _length_check = False


@dataclass
class _Slot:
    """Run-time state of one served server."""

    server: SimServer
    host: str
    port: int
    runner: web.ServerRunner | None = None
    web_server: web.Server | None = None
    site: web.SockSite | None = None
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    cache: dict[str, bytes] = field(default_factory=dict)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Reopening after fault `refuse` must get the same port back at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _raise_fd_limit(needed: int) -> None:
    """One listener per server plus a connection each: 1,000 servers pass the
    common soft limit of 1024 open files, so raise it towards the hard limit."""
    try:
        import resource  # POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass  # best effort; binding will say if it is not enough


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


class Simulator:
    """Serves SimServers over HTTP, one listener per server, plus an optional
    control API. Use `await start()` / `await stop()` (or `async with`)."""

    def __init__(
        self,
        servers: list[SimServer],
        *,
        listen_host: str = "127.0.0.1",
        first_port: int = 0,
        control_port: int | None = None,
        control_host: str | None = None,
        static: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """first_port 0 gives every server its own ephemeral port (for tests);
        otherwise server i listens on first_port + i. control_port 0 picks a
        free port for the control API; None runs none. `clock` is the time
        answers are rendered at (tests can pin it to compare exactly)."""
        self.servers = servers
        self.listen_host = listen_host
        self.first_port = first_port
        self.static = static
        self.clock = clock
        self._control_port = control_port
        self._control_host = control_host or listen_host
        self._control_runner: web.AppRunner | None = None
        self.control_port: int | None = None
        self._slots: list[_Slot] = []

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- public helpers -----------------------------------------------------

    def port(self, index: int) -> int:
        return self._slots[index].port

    def url(self, index: int) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self._slots[index].port}/"

    @property
    def control_url(self) -> str | None:
        if self.control_port is None:
            return None
        h = self._control_host
        return f"http://{f'[{h}]' if ':' in h else h}:{self.control_port}"

    async def set_fault(self, index: int, mode: str | None) -> None:
        """Change a server's fault; `refuse` closes its listener, leaving
        `refuse` reopens it on the same port."""
        if mode == "none":
            mode = None
        if mode is not None and mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        slot = self._slots[index]
        slot.server.fault = mode
        slot.requests = 0
        slot.by_kind.clear()
        if mode == "refuse":
            await self._close_site(slot)
        elif slot.site is None:
            await self._open_site(slot)

    def set_job_frozen(self, index: int, job: str, frozen: bool) -> None:
        """Freeze (or thaw) a job's media time: it keeps claiming to run at its speed."""
        srv = self._slots[index].server
        if job not in job_names(srv):
            raise KeyError(job)
        if frozen:
            srv.pts_frozen_at.setdefault(job, self.clock())
        else:
            srv.pts_frozen_at.pop(job, None)
        self._slots[index].cache.clear()

    def set_queue(self, index: int, queued: int | None) -> None:
        """Hold the number of jobs waiting to start; None: back to the random queue."""
        self._slots[index].server.queue_override = queued
        self._slots[index].cache.clear()

    def set_job_speed(self, index: int, job: str, speed: float | None) -> None:
        srv = self._slots[index].server
        if job not in job_names(srv):
            raise KeyError(job)
        if speed is None:
            srv.speed_overrides.pop(job, None)
        else:
            srv.speed_overrides[job] = speed
        self._slots[index].cache.clear()  # static mode re-renders on next request

    def set_job_state(self, index: int, job: str, state: str | None) -> None:
        """Report `job` in `state` (e.g. "stopped": a channel down); None: started again."""
        srv = self._slots[index].server
        if job not in job_names(srv):
            raise KeyError(job)
        if state is None:
            srv.state_overrides.pop(job, None)
        else:
            srv.state_overrides[job] = state
        self._slots[index].cache.clear()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        _raise_fd_limit(3 * len(self.servers) + 256)
        try:
            for i, srv in enumerate(self.servers):
                port = self.first_port + i if self.first_port else 0
                slot = _Slot(srv, self.listen_host, port)
                self._slots.append(slot)
                # No access log: 1,000 servers under benchmark would log every poll.
                web_server = web.Server(
                    functools.partial(self._handle, slot),
                    handler_cancellation=True,
                    access_log=None,
                )
                slot.web_server = web_server
                # Short shutdown: `slow` and `trickle` handlers are cancelled, not awaited.
                slot.runner = web.ServerRunner(web_server, shutdown_timeout=0.5)
                await slot.runner.setup()
                sock = _bind(self.listen_host, port)
                slot.port = sock.getsockname()[1]
                srv.port = slot.port
                if self.static:  # render once now, so no request pays for it
                    self._payload(slot, "dump", "*")
                    self._payload(slot, "progress", "*")
                if srv.fault == "refuse":
                    sock.close()
                else:
                    await self._open_site(slot, sock)
            if self._control_port is not None:
                await self._start_control()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        runners: list[web.BaseRunner] = [s.runner for s in self._slots if s.runner is not None]
        if self._control_runner is not None:
            runners.append(self._control_runner)
        await asyncio.gather(*(r.cleanup() for r in runners), return_exceptions=True)
        for s in self._slots:
            s.runner = None
            s.site = None
        self._control_runner = None

    async def _open_site(self, slot: _Slot, sock: socket.socket | None = None) -> None:
        if slot.runner is None:  # stopped: nothing to reopen
            return
        site = web.SockSite(slot.runner, sock or _bind(slot.host, slot.port))
        await site.start()
        slot.site = site

    async def _close_site(self, slot: _Slot) -> None:
        if slot.site is not None:
            await slot.site.stop()
            slot.site = None
        # Open keep-alive connections would still answer: drop them too.
        if slot.web_server is not None:
            for conn in slot.web_server.connections:
                conn.force_close()

    # -- serving ------------------------------------------------------------

    def _payload(self, slot: _Slot, kind: str, name: str) -> bytes:
        cache_key = f"{kind}:{name}"
        if self.static and cache_key in slot.cache:
            return slot.cache[cache_key]
        now = self.clock()
        doc = (
            render_dump(slot.server, now)
            if kind == "dump"
            else render_progress(slot.server, now, name)
        )
        body = orjson.dumps(doc)
        if self.static and (kind == "dump" or doc.get("ec") == 0):
            slot.cache[cache_key] = body  # unknown job names are not kept
        return body

    async def _handle(self, slot: _Slot, request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/":
            return _json_response({"ec": 1, "msg": "not found"}, 404)
        kind, name = "dump", "*"
        if request.method == "POST":
            raw = await request.read()
            if raw.strip():
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return _json_response({"ec": 1, "msg": "invalid request body"}, 400)
                if not isinstance(doc, dict):
                    return _json_response({"ec": 1, "msg": "request must be an object"}, 400)
                kind = str(doc.get("type", ""))
                name = str(doc.get("name") or "*")
                if kind not in ("dump", "progress"):
                    return _json_response({"ec": 1, "msg": f"unknown type {kind!r}"})
        elif request.method != "GET":
            return _json_response({"ec": 1, "msg": "method not allowed"}, 405)

        fault = slot.server.fault
        # Flap alternates per kind of request, so that an exporter asking for
        # dump and progress each round sees both of them fail every other round.
        slot.requests += 1
        slot.by_kind[kind] = slot.by_kind.get(kind, 0) + 1
        if fault is None or (fault == "progress-invalid" and kind != "progress"):
            return self._ok(self._payload(slot, kind, name))
        return await self._faulty(slot, request, fault, self._payload(slot, kind, name), kind)

    @staticmethod
    def _ok(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def _faulty(
        self, slot: _Slot, request: web.BaseRequest, fault: str, body: bytes, kind: str
    ) -> web.StreamResponse:
        if fault == "refuse":  # a request raced the close: drop the connection
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        if fault == "slow":
            await asyncio.sleep(SLOW_DELAY_S)
            return self._ok(body)
        flapped = fault == "flap" and slot.by_kind.get(kind, 0) % 2 == 0
        if fault == "http-502-html" or flapped:
            return web.Response(
                status=502,
                body=NGINX_502_HTML,
                content_type="text/html",
                headers={"Server": "nginx/1.24.0"},
            )
        if fault == "flap":
            return self._ok(body)
        if fault == "invalid-json":
            return self._ok(b"Sigma Media Server: internal error, try again later\n")
        if fault == "non-object":
            return self._ok(b"[" + body + b"]")
        if fault == "progress-invalid":
            return self._ok(PROGRESS_AS_DOCUMENTED.encode())
        if fault == "invalid-utf8":
            # Valid JSON structure, but a string holds bytes that are not UTF-8.
            return self._ok(b'{"note":"bad \xff\xfe\xc3( bytes",' + body[1:])
        if fault == "redirect":
            return web.Response(status=302, headers={"Location": REDIRECT_TARGET})
        if fault == "truncated":
            resp = _UnframedResponse(status=200, headers={"Content-Type": "application/json"})
            resp.force_close()
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            await resp.write_eof()
            return resp
        if fault == "huge":
            return await self._huge(request)
        if fault == "trickle":
            return await self._trickle(request, body)
        raise AssertionError(f"unhandled fault {fault}")

    @staticmethod
    async def _huge(request: web.BaseRequest) -> web.StreamResponse:
        # A valid JSON object of exactly HUGE_BYTES, chunked: only a size cap stops it.
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        head, tail = b'{"name":"huge","pad":"', b'"}'
        chunk = 64 * 1024
        pad = HUGE_BYTES - len(head) - len(tail)
        with contextlib.suppress(ConnectionError):
            await resp.write(head)
            block = b"x" * chunk
            while pad > 0:
                await resp.write(block[: min(chunk, pad)])
                pad -= chunk
            await resp.write(tail)
            await resp.write_eof()
        return resp

    @staticmethod
    async def _trickle(request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        # Headers at once, then one byte per interval: each read is quick, so
        # only a total deadline (not a per-read timeout) stops the client.
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for i in range(len(body)):
                await resp.write(body[i : i + 1])
                await asyncio.sleep(TRICKLE_INTERVAL_S)
            await resp.write_eof()
        return resp

    # -- control API --------------------------------------------------------

    def _slot_of(self, request: web.Request) -> _Slot:
        try:
            i = int(request.match_info["i"])
            if i < 0:
                raise IndexError(i)
            return self._slots[i]
        except (ValueError, IndexError):
            raise web.HTTPNotFound(
                text='{"error":"no such server"}', content_type="application/json"
            ) from None

    async def _c_list(self, request: web.Request) -> web.Response:
        return _json_response(
            [
                {
                    "index": s.server.index,
                    "name": s.server.name,
                    "port": s.port,
                    "fault": s.server.fault or "none",
                }
                for s in self._slots
            ]
        )

    async def _c_fault(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        mode = request.query.get("mode", "")
        if mode not in FAULT_MODES:
            return _json_response(
                {"error": f"unknown mode {mode!r}", "modes": list(FAULT_MODES)}, 400
            )
        await self.set_fault(self._slots.index(slot), mode)
        return _json_response({"index": slot.server.index, "fault": mode})

    async def _c_job(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        job = request.match_info["name"]
        if "state" in request.query:  # ?state=stopped, or ?state=clear
            state = request.query["state"]
            try:
                self.set_job_state(self._slots.index(slot), job,
                                   None if state in ("", "clear") else state)
            except KeyError:
                return _json_response({"error": f"no job {job!r}"}, 404)
            return _json_response({"index": slot.server.index, "job": job, "state": state})
        index = self._slots.index(slot)
        freeze = request.query.get("freeze")
        if freeze is not None and freeze not in ("0", "1"):
            return _json_response({"error": f"bad freeze {freeze!r} (0 or 1)"}, 400)
        if job not in job_names(slot.server):
            return _json_response({"error": f"no job {job!r}"}, 404)
        if freeze is not None:  # PTS only: speed stays as it is unless given too
            self.set_job_frozen(index, job, freeze == "1")
            if "speed" not in request.query:
                return _json_response({"index": slot.server.index, "job": job,
                                       "frozen": freeze == "1"})
        raw = request.query.get("speed", "")
        speed: float | None = None
        if raw not in ("", "clear"):
            try:
                speed = float(raw)
            except ValueError:
                return _json_response({"error": f"bad speed {raw!r}"}, 400)
            if not math.isfinite(speed) or speed < 0:
                return _json_response({"error": f"bad speed {raw!r}"}, 400)
        self.set_job_speed(index, job, speed)
        return _json_response({"index": slot.server.index, "job": job, "speed": speed})

    async def _c_queue(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        raw = request.query.get("jobs", "")  # ?jobs=N, or ?jobs=clear
        queued: int | None = None
        if raw != "clear":
            try:
                queued = int(raw)
            except ValueError:
                queued = -1
            if queued < 0:
                return _json_response({"error": f"bad jobs {raw!r} (0 or more, or clear)"}, 400)
        self.set_queue(self._slots.index(slot), queued)
        return _json_response({"index": slot.server.index, "queued": queued})

    async def _c_emitted(self, request: web.Request) -> web.Response:
        slot = self._slot_of(request)
        now = self.clock()
        return _json_response(
            {job: emitted_errors(slot.server, job, until=now) for job in job_names(slot.server)}
        )

    async def _start_control(self) -> None:
        app = web.Application()
        app.router.add_get("/servers", self._c_list)
        app.router.add_post("/servers/{i}/fault", self._c_fault)
        app.router.add_post("/servers/{i}/jobs/{name}", self._c_job)
        app.router.add_post("/servers/{i}/queue", self._c_queue)
        app.router.add_get("/servers/{i}/emitted", self._c_emitted)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._control_runner = runner
        sock = _bind(self._control_host, self._control_port or 0)
        self.control_port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()


# ---------------------------------------------------------------------------
# Entry points.


async def run_simulator(
    listen_host: str,
    first_port: int,
    servers: int,
    gpus: int,
    seed: int,
    fault: str | None,
    control_port: int | None,
    jobs: int,
    static: bool,
    *,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
    name_prefix: str = "sigma-server",
    control_host: str | None = None,
    prepare: Callable[[list[SimServer]], None] | None = None,
) -> None:
    """Serve `servers` simulated servers on first_port, first_port+1, ... until
    `stop` is set or the task is cancelled; every listener is closed on return.
    Prints one line per server to `out` (stdout by default) once all listen."""
    sims = make_servers(
        servers, gpus=gpus, seed=seed, jobs=jobs, fault=fault, name_prefix=name_prefix
    )
    if prepare is not None:  # e.g. GPU figures from a scenario or local NVML
        prepare(sims)
    sim = Simulator(
        sims,
        listen_host=listen_host,
        first_port=first_port,
        control_port=control_port,
        control_host=control_host,
        static=static,
    )
    stream = out if out is not None else sys.stdout
    await sim.start()
    try:
        for i, srv in enumerate(sims):
            where = sim.url(i).rstrip("/")
            if srv.fault == "refuse":
                line = f"sigma simulator server {srv.name} refusing on {where} (fault refuse)"
            elif srv.fault:
                line = f"sigma simulator server {srv.name} listening on {where} (fault {srv.fault})"
            else:
                line = f"sigma simulator server {srv.name} listening on {where}"
            print(line, file=stream)
        if sim.control_url is not None:
            print(f"sigma simulator control API on {sim.control_url}", file=stream)
        stream.flush()
        await (stop or asyncio.Event()).wait()
    finally:
        await sim.stop()


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sigma-exporter simulate",
        description=(
            "Run simulated Sigma Media Servers on consecutive ports. With --servers >= 3, "
            "every server with index % 3 == 2 has no GPU."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--listen",
        type=_host_port,
        default="127.0.0.1:20000",
        metavar="HOST:PORT",
        help="first server's address; the others take the next ports",
    )
    p.add_argument("--servers", type=int, default=1, help="number of servers")
    p.add_argument(
        "--gpus",
        type=int,
        default=1,
        choices=range(9),
        metavar="K",
        help="GPUs per server, 0..8",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--fault", choices=FAULT_MODES, default=None, help="fault mode for every server")
    p.add_argument("--jobs", type=int, default=4, help="live jobs per server")
    p.add_argument(
        "--static", action="store_true", help="render once, serve the same bytes (benchmarks)"
    )
    p.add_argument(
        "--control", type=_host_port, default=None, metavar="HOST:PORT", help="control API address"
    )
    p.add_argument("--name-prefix", default="sigma-server", help="server names are PREFIX-NN")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu-scenario", metavar="FILE", default=None,
                     help="GPU figures follow a scenario file (see sigma_exporter/sim/scenario.py)")
    gpu.add_argument("--gpu-mirror", action="store_true",
                     help="GPU figures read from this host's NVML (for scripts/gpu-check)")
    return p


def _gpu_source(
    scenario_file: str | None, mirror: bool
) -> Callable[[list[SimServer]], None] | None:
    """What sets the simulated GPU figures: a scenario, local NVML, or nothing."""
    if scenario_file is not None:
        from sigma_exporter.sim.scenario import ScenarioError, apply_to_simulator, load_scenario

        try:
            scenario = load_scenario(scenario_file)
        except (ScenarioError, OSError) as exc:
            raise ValueError(f"--gpu-scenario {scenario_file}: {exc}") from None
        def follow(sims: list[SimServer]) -> None:
            apply_to_simulator(sims, scenario)

        return follow
    if mirror:
        from sigma_exporter.agent.nvml import NvmlFailure, PynvmlBackend
        from sigma_exporter.sim.scenario import apply_mirror_to_simulator

        backend = PynvmlBackend()
        try:
            backend.init()
        except NvmlFailure as exc:
            raise ValueError(f"--gpu-mirror needs NVML: {exc}") from None
        def mirror_gpus(sims: list[SimServer]) -> None:
            apply_mirror_to_simulator(sims, backend)

        return mirror_gpus
    return None


def main_simulate(args: list[str]) -> int:
    """`sigma-exporter simulate ...`: run until SIGINT/SIGTERM, then exit 0."""
    try:
        ns = _parser().parse_args(args)
    except SystemExit as exc:  # --help or a usage error: return, don't exit
        return exc.code if isinstance(exc.code, int) else 2
    host, port = ns.listen
    if ns.servers < 1 or ns.jobs < 0 or port + ns.servers - 1 > 65535:
        print("sigma-exporter simulate: bad --servers/--jobs/--listen", file=sys.stderr)
        return 2
    control_host, control_port = ns.control if ns.control is not None else (None, None)
    try:
        prepare = _gpu_source(ns.gpu_scenario, ns.gpu_mirror)
    except ValueError as exc:
        print(f"sigma-exporter simulate: {exc}", file=sys.stderr)
        return 2

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_simulator(
                host,
                port,
                ns.servers,
                ns.gpus,
                ns.seed,
                ns.fault,
                control_port,
                ns.jobs,
                ns.static,
                stop=stop,
                name_prefix=ns.name_prefix,
                control_host=control_host,
                prepare=prepare,
            )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(_run())
    except OSError as exc:
        print(f"sigma-exporter simulate: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0
