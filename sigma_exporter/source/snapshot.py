"""The typed, frozen picture of one answer from a Sigma server.

The parser builds these; the poller publishes them; the collector only reads
them. A field we could not read is `None` (or absent from a tuple) so that no
series is ever invented for it. All values are already in base units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProcessStats:
    cpu_ratio: float | None = None  # 1.0 = one core
    resident_memory_bytes: float | None = None
    children: float | None = None


@dataclass(frozen=True, slots=True)
class Gpu:
    index: str  # label value: the reported index, else the position in the list
    name: str | None = None
    # The figures: one row each in gpufields.GPU_FIELDS (Sigma's key, unit, metric).
    memory_total_bytes: float | None = None
    memory_used_bytes: float | None = None
    utilization_ratio: float | None = None
    encoder_utilization_ratio: float | None = None
    decoder_utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    # Undocumented numeric fields, exported as reported: (lower-case key, value).
    reported: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class App:
    name: str
    state: str | None = None  # lower case
    uptime_seconds: float | None = None
    process: ProcessStats | None = None


@dataclass(frozen=True, slots=True)
class Storage:
    name: str
    retention_seconds: float | None = None
    cleanup_delay_seconds: float | None = None
    folders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkInterface:
    name: str
    address: str
    cidr: str


@dataclass(frozen=True, slots=True)
class Codec:
    device: str
    direction: str  # "encode" or "decode"
    codec: str


@dataclass(frozen=True, slots=True)
class Dump:
    """What a `dump` answer told us."""

    name: str | None = None
    version: str | None = None
    branch: str | None = None
    hostname: str | None = None
    timezone: str | None = None
    build_timestamp: float | None = None
    start_timestamp: float | None = None
    local_timestamp: float | None = None  # the server's clock at answer time
    speed: float | None = None
    port: float | None = None
    jobs_queued: float | None = None
    jobs_total: float | None = None
    tasks: tuple[tuple[str, float], ...] = ()  # (state lower case, count)
    codecs: tuple[Codec, ...] = ()
    os: str | None = None
    cpu_cores: float | None = None
    cpu_utilization_ratio: float | None = None
    threads: float | None = None
    memory_total_bytes: float | None = None
    memory_used_bytes: float | None = None
    swap_total_bytes: float | None = None
    swap_used_bytes: float | None = None
    stats_timestamp: float | None = None
    networks: tuple[NetworkInterface, ...] = ()
    storages: tuple[Storage, ...] = ()
    log_folder: str | None = None
    log_used_bytes: float | None = None
    gpus: tuple[Gpu, ...] = ()
    process: ProcessStats | None = None
    apps: tuple[App, ...] = ()
    # The tail of the answer. `nats.license` (the licence key, a secret) and
    # `nats.ID` are never read; docs.py says why.
    license_status: str | None = None  # upper case, label-safe, or "other"
    control_plane_connected: bool | None = None  # nats.connected
    control_plane_connect_timestamp: float | None = None  # nats.startup
    answer_timestamp: float | None = None  # `now`: equals `local` in every sample
    # Undocumented numeric fields, exported as reported: (path, value).
    reported: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class JobInput:
    index: str
    url: str | None = None  # already redacted
    bytes_per_second: float | None = None


@dataclass(frozen=True, slots=True)
class JobProfile:
    id: str
    bytes_per_second: float | None = None


@dataclass(frozen=True, slots=True)
class JobOutput:
    index: str
    format: str
    bytes_per_second: float | None = None
    # HLS and DASH only: the local folder the job writes its playlists into,
    # as Sigma names it (an absolute path; the outputs source maps it to a
    # configured root), and the profiles it selects. Never a push URL: those
    # can carry a stream key, and are not kept at all.
    folder: str | None = None
    select: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """One entry of a `progress` answer (a channel)."""

    name: str
    state: str | None = None  # lower case
    speed: float | None = None
    uptime_seconds: float | None = None
    media_time_seconds: float | None = None
    # Wall time as written, without a zone; read in the target's wall-clock
    # zone when rendered (units.wall_clock_zone).
    startup_wall: datetime | None = None
    weight: float | None = None
    errors: tuple[str, ...] | None = None  # None: the answer had no error list
    inputs: tuple[JobInput, ...] = ()
    profiles: tuple[JobProfile, ...] = ()
    outputs: tuple[JobOutput, ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    """What a `progress` answer told us, jobs in the server's order."""

    jobs: tuple[Job, ...] = ()
    dropped: int = 0  # jobs left out by the include/exclude filters or the max


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    """A parse result: the snapshot and the field paths we could not read."""

    value: T
    errors: tuple[str, ...]
    over_budget: bool = False  # more entries than the target's series budget allows
