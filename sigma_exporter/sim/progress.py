"""The `progress` answer of a simulated server: its jobs, their states, speed and
error lines, at a given time.

Pure functions of the server (`SimServer`) and the time. Error lines are
events at fixed seconds drawn per 30-second bucket, so `emitted_errors` can
say exactly how many lines of each code a job emitted between two times: the
count an exporter must have seen, even though `error[]` keeps only the last 5.

Only what Sigma documents is emitted: the job states `starting`, `preparing`,
`started`, `error` and `Stop` (a job that (re)starts passes through
`starting` and `preparing` first), and error lines in the documented form
`[05-26 02:32:55] Input timeout (code: INPUT_TIMEOUT)` with documented codes
(sigma_exporter/source/errorcodes.py). `set_job_state` (the control API's
`?state=`) puts a job in a state, `error` with a code of any class; a job in
`error` logs its code every 10 seconds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from sigma_exporter.sim.model import (
    JSON,
    ErrorEpisode,
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
from sigma_exporter.source.errorcodes import BY_CODE

# The codes a healthy channel logs now and then, with the cumulative share of
# the lines: input (INPUT_TIMEOUT, INVALID_INPUT_DATA), output
# (OUTPUT_TIMEOUT), input and output (CONNECTION_TIMEOUT), and input, output
# and processing (PACKET_QUEUE_IS_FULL).
_BACKGROUND_CODES: Final[tuple[tuple[str, float], ...]] = (
    ("INPUT_TIMEOUT", 0.35),
    ("INVALID_INPUT_DATA", 0.55),
    ("OUTPUT_TIMEOUT", 0.75),
    ("CONNECTION_TIMEOUT", 0.9),
    ("PACKET_QUEUE_IS_FULL", 1.0),
)
ERROR_CODES: Final[tuple[str, ...]] = tuple(code for code, _ in _BACKGROUND_CODES)

ERROR_WINDOW: Final = 5  # the server keeps only the last few lines per job
ERROR_BUCKET_S: Final = 30  # at most 2 lines per bucket, so a 15 s poll never misses one
# A job in `error` logs its code this often (and no other lines): at most 2
# lines between two 15 s polls, well inside the window.
FORCED_ERROR_PERIOD_S: Final = 10

# Sigma's job states, spelled as Sigma spells them.
STARTING, PREPARING, STARTED, ERROR, STOP = "starting", "preparing", "started", "error", "Stop"
JOB_STATES: Final[tuple[str, ...]] = (STARTING, PREPARING, STARTED, ERROR, STOP)
# A job that (re)starts reports `starting` for STARTING_FOR_S, then
# `preparing` until PREPARED_AFTER_S after its start, then `started`.
STARTING_FOR_S: Final = 4.0
PREPARED_AFTER_S: Final = 12.0
DEFAULT_ERROR_CODE: Final = "INPUT_TIMEOUT"

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
    code: str


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
        code = next(code for code, share in _BACKGROUND_CODES if c < share)
        events.append(_ErrorEvent(bucket * ERROR_BUCKET_S + o, code))
    return tuple(events)


def _in_episode(server: SimServer, job: str, t: int) -> bool:
    """Whether the job was held in `error` at second t (it logs only its code then)."""
    return any(e.start <= t and (e.end is None or t < e.end)
               for e in server.error_episodes.get(job, ()))


def _forced_events(server: SimServer, job: str, lo: float, hi: float) -> list[_ErrorEvent]:
    """The lines of the job's `error` episodes at seconds lo <= t <= hi."""
    out = []
    for episode in server.error_episodes.get(job, ()):
        first = math.ceil(episode.start)
        k = max(0, math.ceil((lo - first) / FORCED_ERROR_PERIOD_S))
        t = first + k * FORCED_ERROR_PERIOD_S
        while t <= hi and (episode.end is None or t < episode.end):
            out.append(_ErrorEvent(t, episode.code))
            t += FORCED_ERROR_PERIOD_S
    return out


def _bucket(server: SimServer, job: str, jk: int, b: int, lo: float,
            hi: float) -> list[_ErrorEvent]:
    """Every line of bucket b at seconds lo <= t <= hi, oldest first."""
    start, end = max(lo, b * ERROR_BUCKET_S), min(hi, (b + 1) * ERROR_BUCKET_S - 1)
    if end < start:
        return []
    found = [ev for ev in _bucket_events(server.seed, server.index, jk, b)
             if start <= ev.t <= end and not _in_episode(server, job, ev.t)]
    found += _forced_events(server, job, start, end)
    return sorted(found, key=lambda ev: ev.t)


def _events_between(
    server: SimServer, job: str, since: float, until: float
) -> Iterator[_ErrorEvent]:
    lo = max(server.epoch, since)
    if until < lo:
        return
    jk = text_key(job)
    for b in range(math.floor(lo / ERROR_BUCKET_S), math.floor(until / ERROR_BUCKET_S) + 1):
        yield from _bucket(server, job, jk, b, lo, until)


def _recent_events(server: SimServer, job: str, now: float) -> list[_ErrorEvent]:
    """The last ERROR_WINDOW events at or before now, oldest first."""
    jk = text_key(job)
    found: list[_ErrorEvent] = []
    b = math.floor(now / ERROR_BUCKET_S)
    while len(found) < ERROR_WINDOW and (b + 1) * ERROR_BUCKET_S > server.epoch:
        for ev in reversed(_bucket(server, job, jk, b, server.epoch, now)):
            if len(found) < ERROR_WINDOW:
                found.append(ev)
        b -= 1
    found.reverse()
    return found


def error_message(code: str) -> str:
    """The text of a line of `code`: Sigma's own example for INPUT_TIMEOUT, else the
    documented meaning of the code."""
    if code == "INPUT_TIMEOUT":
        return "Input timeout"  # `[05-26 02:32:55] Input timeout (code: INPUT_TIMEOUT)`
    meaning = BY_CODE[code].meaning
    if meaning.startswith("("):  # "(no description documented)"
        return code.replace("_", " ").capitalize()
    return meaning[0].upper() + meaning[1:]


def _error_text(server: SimServer, ev: _ErrorEvent) -> str:
    stamp = f"[{local_time(server, ev.t):%m-%d %H:%M:%S}]"
    return f"{stamp} {error_message(ev.code)} (code: {ev.code})"


def error_lines(server: SimServer, job: str, now: float) -> list[str]:
    """The error[] list of a job at time now: the last 5 lines, oldest first."""
    return [_error_text(server, ev) for ev in _recent_events(server, job, now)]


def emitted_errors(
    server: SimServer, job: str, until: float, since: float | None = None
) -> dict[str, int]:
    """How many distinct error lines the job emitted, per code, with
    max(epoch, since) <= emission second <= until. Keys: every code of
    ERROR_CODES (zeros included) and every code the job was put in `error` with."""
    counts = dict.fromkeys(ERROR_CODES, 0)
    for episode in server.error_episodes.get(job, ()):
        counts.setdefault(episode.code, 0)
    for ev in _events_between(server, job, server.epoch if since is None else since, until):
        counts[ev.code] += 1
    return counts


# ---------------------------------------------------------------------------
# Job states


def job_startup(server: SimServer, j: int, job: str, now: float) -> float:
    """When job number j last (re)started: long before the simulation, or at the
    first job's periodic restart, or when the control API let it restart."""
    created = server.process_start + 40.0 + 37.0 * j
    startup = created + 60.0
    if j == 0:  # one job restarts periodically: Life drops, startup moves
        startup, _ = last_restart(server.epoch, server.job_restart_period, now, startup)
    restarted = server.restarted_at.get(job)
    if restarted is not None and startup < restarted <= now:
        startup = restarted
    return startup


def job_state(server: SimServer, j: int, job: str, now: float) -> str:
    """The state the job reports: the control API's, else `starting` then
    `preparing` for a while after each (re)start, else `started`."""
    held = server.state_overrides.get(job)
    if held is not None:
        return held
    since = now - job_startup(server, j, job, now)
    if since < STARTING_FOR_S:
        return STARTING
    if since < PREPARED_AFTER_S:
        return PREPARING
    return STARTED


def job_states(server: SimServer, now: float) -> list[str]:
    """Every job's state, in order (the dump's `task` counts them)."""
    return [job_state(server, j, job, now) for j, job in enumerate(job_names(server))]


def set_job_state(server: SimServer, job: str, state: str | None, now: float,
                  code: str | None = None) -> None:
    """Hold `job` in `state` from `now` on: one of JOB_STATES, in any case; `error`
    with `code` (a documented code of any class; INPUT_TIMEOUT if none), which the
    job then logs every 10 seconds. None releases the job: it restarts, passing
    through `starting` and `preparing`. Raises KeyError for a job the server does
    not have, ValueError for a state or code Sigma does not document."""
    if job not in job_names(server):
        raise KeyError(job)
    held: str | None = None
    if state is not None:
        held = next((s for s in JOB_STATES if s.lower() == state.lower()), None)
        if held is None:
            raise ValueError(f"unknown state {state!r}: Sigma documents "
                             f"{', '.join(JOB_STATES)}")
    if code is not None and held != ERROR:
        raise ValueError("a code goes with state error")
    if held == ERROR:
        code = code or DEFAULT_ERROR_CODE
        if code not in BY_CODE:
            raise ValueError(f"unknown code {code!r}: not one Sigma documents")
    episodes = server.error_episodes.setdefault(job, [])
    if episodes and episodes[-1].end is None:  # the job stops logging its last code
        episodes[-1] = ErrorEpisode(episodes[-1].code, episodes[-1].start, now)
    if held is None:
        if server.state_overrides.pop(job, None) is not None:
            server.restarted_at[job] = now
        return
    server.state_overrides[job] = held
    if held == ERROR and code is not None:
        episodes.append(ErrorEpisode(code, now))


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
    startup = job_startup(server, j, job, now)
    state = job_state(server, j, job, now)
    # Only a started job moves media: coming up, failing or stopped, it has
    # no speed and no bitrate.
    flowing = 1.0 if state == STARTED else 0.0
    speed = job_speed(server, job, now) * flowing
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
            "bitrate": round(rate * flowing
                             * (0.95 + 0.1 * smooth_noise(now, 15.0, *key, _S_BR, p))),
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
        "state": state,
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
