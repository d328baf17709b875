"""The simulated servers themselves: what each one is, and the deterministic noise
every answer is made of.

`SimServer` holds one server's configuration (seed, index, epoch, sizes) and
the overrides the control API sets; `make_servers` makes the servers of one
simulator process. Every figure the simulator reports is a function of a
server's `noise_key` and the time asked for, through the helpers here, so the
same seed gives the same answers in every process (Python's hash() is salted
per process: these use splitmix64 and crc32). The renderers (`dump`,
`progress`) and the HTTP side (`http_server`) build on this module.
"""

from __future__ import annotations

import functools
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sigma_exporter.sim.faults import FAULT_MODES

JSON = dict[str, Any]

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


# ---------------------------------------------------------------------------
# Deterministic noise.

_M64: Final = (1 << 64) - 1


def _mix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def hash_ints(*parts: int) -> int:
    """A 64-bit hash of the integers, the same in every process."""
    x = 0x243F6A8885A308D3
    for p in parts:
        x = _mix(x ^ (p & _M64))
    return x


def uniform(*parts: int) -> float:
    """Uniform in [0, 1) from the integer key."""
    return hash_ints(*parts) / 18446744073709551616.0


def text_key(text: str) -> int:
    """An integer for a name, to use as a part of a hash key."""
    return zlib.crc32(text.encode())


def smooth_noise(t: float, period: float, *parts: int) -> float:
    """Value noise in [0, 1): random at each multiple of period, eased between."""
    x = t / period
    i = math.floor(x)
    a = uniform(*parts, i)
    b = uniform(*parts, i + 1)
    s = (1.0 - math.cos(math.pi * (x - i))) / 2.0
    return a + (b - a) * s


def clamp(v: float, lo: float = 0.0, hi: float = 100.0) -> float:
    return lo if v < lo else hi if v > hi else v


_S_UP: Final = text_key("up")  # salt of the process start time

_TIMEZONES: Final = ("Asia/Ho_Chi_Minh", "UTC", "Europe/Berlin")
# Used only when the host has no tz database (no DST then, which is fine for a sim).
_TZ_FALLBACK: Final = {"Asia/Ho_Chi_Minh": 7, "UTC": 0, "Europe/Berlin": 1}


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


@dataclass(frozen=True, slots=True)
class ErrorEpisode:
    """A stretch of time a job was held in `error`, logging `code`."""

    code: str
    start: float
    end: float | None = None  # None: still in error


@dataclass
class SimServer:
    """One simulated server. Rendering reads it; the control API mutates the
    override fields (`fault`, `speed_overrides`, `state_overrides`, `error_episodes`,
    `restarted_at`, `pts_frozen_at`, `queue_override`, `gpu_override`,
    `license_status`, `control_plane_*`)."""

    index: int
    seed: int = 1
    gpus: int = 1
    jobs: int = 4
    name: str = ""  # default: sigma-server-NN (index + 1)
    hostname: str = ""
    port: int = 9999  # reported in the dump; the simulator sets its real port
    timezone: str = ""  # default: by index, Asia/Ho_Chi_Minh, UTC, Europe/Berlin
    # The zone progress writes its wall times in (startup, created, error lines):
    # "UTC", as Sigma documents for error lines, or "server" for `timezone`.
    wall_clock_zone: str = "UTC"
    # When the simulation began: errors are emitted from here on, job and app
    # restarts are counted from here. The server "process" started earlier.
    epoch: float = field(default_factory=_default_epoch)
    job_restart_period: float = 600.0  # the first job restarts this often
    app_restart_period: float = 900.0  # nginx restarts this often
    # Mutable overrides.
    fault: str | None = None
    speed_overrides: dict[str, float] = field(default_factory=dict)
    # job -> the state it is held in (Sigma's spelling: progress.set_job_state).
    state_overrides: dict[str, str] = field(default_factory=dict)
    # job -> its `error` episodes, oldest first: the lines they logged stay countable.
    error_episodes: dict[str, list[ErrorEpisode]] = field(default_factory=dict)
    # job -> when the control API last let it restart (its startup moves there).
    restarted_at: dict[str, float] = field(default_factory=dict)
    # job -> when its media time (PTS) froze: it claims to run, PTS stands still.
    pts_frozen_at: dict[str, float] = field(default_factory=dict)
    # Jobs waiting to start; None: about one 5-minute window in 10 has one.
    queue_override: int | None = None
    # GPU scenario hook: (gpu index, now) -> fields to overwrite in that gpu[] entry.
    gpu_override: Callable[[int, float], dict[str, Any] | None] | None = None
    # The licence's state as the dump reports it ("EXPIRED": a lapsed licence).
    license_status: str = "VALID"
    # The link to Sigma's control plane: down since this time (None: up), and
    # when it last came up (None: with the process, as in the documented answer).
    control_plane_down_since: float | None = None
    control_plane_up_since: float | None = None
    # Where the jobs' HLS is written (sim/hls.py); None: progress names a
    # nominal folder that nothing writes.
    outputs_dir: str | None = None
    output_faults: dict[str, str] = field(default_factory=dict)  # job -> sim/hls.py fault

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
    def noise_key(self) -> tuple[int, int]:
        """What every figure of this server is hashed from (with a salt per figure)."""
        return (self.seed, self.index)

    @property
    def process_start(self) -> float:
        """When the simulated server process started: 2 h to 2 days before epoch."""
        return self.epoch - 7200.0 - math.floor(uniform(*self.noise_key, _S_UP) * 172800.0) - 0.331


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


def job_names(server: SimServer) -> list[str]:
    """The live channels of this server, in order (the first one restarts)."""
    return [JOB_NAMES[j] if j < len(JOB_NAMES) else f"CH-{j + 1:03d}" for j in range(server.jobs)]


# ---------------------------------------------------------------------------
# Times written the server's way (used by `dump` and `progress`).


def local_time(server: SimServer, ts: float) -> datetime:
    """The wall-clock time `progress` writes for `ts`, to the second: UTC, or
    the server's own zone when its `wall_clock_zone` is "server"."""
    name = server.timezone if server.wall_clock_zone == "server" else server.wall_clock_zone
    return datetime.fromtimestamp(math.floor(ts), _zone(name))


def life_text(seconds: float) -> str:
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


def last_restart(epoch: float, period: float, now: float, first: float) -> tuple[float, int]:
    """Last restart at or before now (restarts at epoch + k*period, k >= 1)."""
    if period <= 0 or now < epoch + period:
        return first, 0
    k = math.floor((now - epoch) / period)
    return epoch + k * period, k
