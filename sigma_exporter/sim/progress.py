"""The `progress` answer of a simulated server: its jobs, their speed and their
error lines, at a given time.

Pure functions of the server (`SimServer`) and the time. Error lines are
events at fixed seconds drawn per 30-second bucket, so `emitted_errors` can
say exactly how many lines of each code a job emitted between two times: the
count an exporter must have seen, even though `error[]` keeps only the last 5.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from sigma_exporter.sim.model import (
    JSON,
    SimServer,
    hash_ints,
    job_names,
    last_restart,
    life_text,
    local_time,
    smooth_noise,
    text_key,
    uniform,
)

# Codes that error lines carry as "(code: X)"; NO_CODE counts lines without one.
ERROR_CODES: Final[tuple[str, ...]] = ("INPUT_TIMEOUT", "DECODE_ERROR", "OUTPUT_FAIL")
NO_CODE: Final = ""

ERROR_WINDOW: Final = 5  # the server keeps only the last few lines per job
ERROR_BUCKET_S: Final = 30  # at most 2 lines per bucket, so a 15 s poll never misses one

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

# Salts: each figure draws its own noise stream from the server's key.
_S_DIP, _S_DIPV, _S_JIT, _S_BR = (text_key(s) for s in ("dip", "dipv", "jit", "br"))
_S_ERRN, _S_ERRO, _S_ERRC = (text_key(s) for s in ("en", "eo", "ec"))


def _local_str(server: SimServer, ts: float) -> str:
    return f"{local_time(server, ts):%Y-%m-%d %H:%M:%S}"


def job_speed(server: SimServer, job: str, now: float) -> float:
    """Speed of a job: about 1.0, with deterministic dips below real time
    (about one 2-minute window in 8), unless overridden by the control API."""
    if job in server.speed_overrides:
        return server.speed_overrides[job]
    key = (*server.noise_key, text_key(job))
    window = math.floor(now / 120.0)
    if uniform(*key, _S_DIP, window) < 0.12:
        return round(0.5 + 0.4 * uniform(*key, _S_DIPV, window), 2)
    return round(1.0 + 0.02 * uniform(*key, _S_JIT, math.floor(now / 5.0)), 2)


# ---------------------------------------------------------------------------
# Error lines


@dataclass(frozen=True, slots=True)
class _ErrorEvent:
    t: int  # Unix second it was emitted
    code: str  # NO_CODE for a line without "(code: ...)"
    variant: int


@functools.lru_cache(maxsize=1 << 16)
def _bucket_events(seed: int, index: int, job_key: int, bucket: int) -> tuple[_ErrorEvent, ...]:
    """0, 1 or 2 error lines in this bucket, at distinct seconds (unique text)."""
    key = (seed, index, job_key, bucket)
    r = uniform(*key, _S_ERRN)
    n = 0 if r < 0.7 else 1 if r < 0.95 else 2
    if n == 0:
        return ()
    first = hash_ints(*key, _S_ERRO) % ERROR_BUCKET_S
    offsets = [first]
    if n == 2:
        second = first + 1 + hash_ints(*key, _S_ERRO, 1) % (ERROR_BUCKET_S - 1)
        offsets.append(second % ERROR_BUCKET_S)
    events = []
    for o in sorted(offsets):
        c = uniform(*key, _S_ERRC, o)
        code = (
            "INPUT_TIMEOUT"
            if c < 0.4
            else "DECODE_ERROR"
            if c < 0.6
            else "OUTPUT_FAIL"
            if c < 0.75
            else NO_CODE
        )
        variant = hash_ints(*key, o) % 1_000_000
        events.append(_ErrorEvent(bucket * ERROR_BUCKET_S + o, code, variant))
    return tuple(events)


def _events_between(
    server: SimServer, job: str, since: float, until: float
) -> Iterator[_ErrorEvent]:
    lo = max(server.epoch, since)
    if until < lo:
        return
    jk = text_key(job)
    for b in range(math.floor(lo / ERROR_BUCKET_S), math.floor(until / ERROR_BUCKET_S) + 1):
        for ev in _bucket_events(server.seed, server.index, jk, b):
            if lo <= ev.t <= until:
                yield ev


def _recent_events(server: SimServer, job: str, now: float) -> list[_ErrorEvent]:
    """The last ERROR_WINDOW events at or before now, oldest first."""
    jk = text_key(job)
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
    stamp = f"[{local_time(server, ev.t):%m-%d %H:%M:%S}]"
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


# ---------------------------------------------------------------------------
# Jobs and the whole answer


_RENDITIONS: Final = (("128K", 128_760), ("480", 962_192), ("720", 2_500_000))


def _profiles(j: int) -> tuple[tuple[str, int], ...]:
    return _RENDITIONS[: 2 + j % 2]


def profiles_of(server: SimServer, job: str) -> tuple[tuple[str, int], ...]:
    """The output profiles (id, nominal bit/s) of a job: what its HLS target renders."""
    return _profiles(job_names(server).index(job))


def _render_job(server: SimServer, j: int, job: str, now: float) -> JSON:
    key = (*server.noise_key, text_key(job))
    created = server.process_start + 40.0 + 37.0 * j
    startup = created + 60.0
    if j == 0:  # one job restarts periodically: Life drops, startup moves
        startup, _ = last_restart(server.epoch, server.job_restart_period, now, startup)
    speed = job_speed(server, job, now)
    life = max(0.0, now - startup)
    in_rate = round(
        2_390_646 * (0.85 + 0.3 * smooth_noise(now, 20.0, *key, _S_BR)) * min(1.0, speed)
    )
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
    profiles: list[JSON] = [
        {
            ("ID" if p == 0 else "id"): pid,
            "bitrate": round(rate * (0.95 + 0.1 * smooth_noise(now, 15.0, *key, _S_BR, p))),
        }
        for p, (pid, rate) in enumerate(_profiles(j))
    ]
    folder = (f"{server.outputs_dir}/{server.name}/{job}/" if server.outputs_dir
              else f"/mnt/ramdisk/origin04/source/{job}/")
    targets: list[JSON] = [
        {
            "format": "hls",
            "url": folder,
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
        "Life": life_text(life),
        "PTS": life_text(_pts_life(server, job, startup, now, life)),
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
        "Tel": 1 + hash_ints(*server.noise_key, math.floor(now)) % 4,
    }
