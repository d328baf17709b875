"""Real HLS for the simulated jobs: a master, one variant playlist per profile, segments.

`HlsWriter` keeps, under a folder, what a Sigma job's HLS target writes
into its own: `BASE/<server>/<job>/master.m3u8` listing
`<profile>/index.m3u8`, each a live sliding window (as ffmpeg's
`-hls_list_size 5 -hls_flags delete_segments` keeps it) of
`<profile>/seg<N>.ts` segments. A segment is a sparse file of the size its
profile's bitrate gives (no disk is used), written when the job's media
time has advanced by the target duration: the job's simulated speed
(`progress.job_speed`, overrides included) drives its output, so a channel
at 0.95x writes 0.95 s of media per second. Files get the simulated clock's
times as mtimes, so a pinned clock gives the same files in every run.

Faults a test or the control API sets per job (`OUTPUT_FAULTS`): `frozen`
(the packager stops: nothing is written), `endlist` (`#EXT-X-ENDLIST` is
written, then nothing), `missing` (a listed segment is deleted), `overlong`
(the next segment runs 2.5 target durations), `full` (a full disk: the new
segment is written empty and the playlists no longer change). A job Sigma
reports stopped ends its playlists as ffmpeg does on SIGTERM; started again,
it writes a new playlist from media sequence 0.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sigma_exporter.sim.model import SimServer, job_names, text_key, uniform
from sigma_exporter.sim.progress import job_speed, profiles_of

OUTPUT_FAULTS: Final[tuple[str, ...]] = ("frozen", "endlist", "missing", "overlong", "full")
TARGET_DURATION: Final = 2
LIST_SIZE: Final = 5
# Most segments written for one job in one tick (a clock that jumped far ahead).
MAX_SEGMENTS_PER_TICK: Final = 64


@dataclass
class _Variant:
    name: str  # the profile id, lower case: its folder
    bandwidth: int  # bit/s
    segments: list[tuple[int, float]] = field(default_factory=list)  # (sequence, duration)


@dataclass
class _Job:
    folder: Path
    variants: list[_Variant]
    media: float = 0.0  # seconds of media produced since the playlist started
    written: int = 0  # segments written: the next one's sequence number
    last: float | None = None  # when the job was last advanced
    ended: bool = False
    fault: str | None = None
    fault_done: bool = False  # a one-shot fault (missing, overlong) was applied


def _write(path: Path, text: str, at: float) -> None:
    """Replace `path` at once (a temp file renamed, as ffmpeg's temp_file flag does)."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text, encoding="utf-8")
    os.utime(temp, (at, at))
    os.replace(temp, path)


class HlsWriter:
    """Writes and advances the HLS outputs of simulated servers' jobs under `base`."""

    def __init__(self, base: Path | str, servers: list[SimServer],
                 target_duration: int = TARGET_DURATION, list_size: int = LIST_SIZE) -> None:
        self.base = Path(base)
        self.servers = servers
        self.target_duration = target_duration
        self.list_size = list_size
        self._jobs: dict[tuple[int, str], _Job] = {}
        for server in servers:
            server.outputs_dir = str(self.base)

    def folder(self, server: SimServer, job: str) -> Path:
        return self.base / server.name / job

    def set_fault(self, index: int, job: str, fault: str | None) -> None:
        """Make `job` of server `index` misbehave (`OUTPUT_FAULTS`); None: write again."""
        if fault is not None and fault not in OUTPUT_FAULTS:
            raise ValueError(f"unknown output fault {fault!r}")
        state = self._jobs.get((index, job))
        server = self.servers[index]
        if job not in job_names(server):
            raise KeyError(job)
        server.output_faults[job] = fault or ""
        if state is not None:
            if state.fault in ("endlist", "full") and fault is None:
                state.ended = False  # a new playlist from 0, as a restarted packager writes
                self._restart(state)
            state.fault, state.fault_done = fault, False

    def tick(self, now: float) -> None:
        """Write every segment due by `now` for every job, and the playlists after them."""
        for server in self.servers:
            for j, job in enumerate(job_names(server)):
                self._advance(server, j, job, now)

    def _state(self, server: SimServer, job: str, now: float) -> _Job:
        key = (server.index, job)
        state = self._jobs.get(key)
        if state is None:
            folder = self.folder(server, job)
            variants = [_Variant(pid.lower(), rate) for pid, rate in profiles_of(server, job)]
            state = self._jobs[key] = _Job(folder, variants, last=now)
            fault = server.output_faults.get(job) or None
            state.fault = fault
            self._restart(state)
            master = ["#EXTM3U", "#EXT-X-VERSION:3"]
            for v in variants:
                master += [f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth}", f"{v.name}/index.m3u8"]
            _write(folder / "master.m3u8", "\n".join(master) + "\n", now)
        return state

    def _restart(self, state: _Job) -> None:
        state.media, state.written = 0.0, 0
        for v in state.variants:
            shutil.rmtree(state.folder / v.name, ignore_errors=True)
            (state.folder / v.name).mkdir(parents=True, exist_ok=True)
            v.segments.clear()

    def _advance(self, server: SimServer, j: int, job: str, now: float) -> None:
        state = self._state(server, job, now)
        started = server.state_overrides.get(job, "started") in ("started", "running")
        last, state.last = state.last if state.last is not None else now, now
        if not started:
            if not state.ended:
                state.ended = True
                self._playlists(state, now, ended=True)
            return
        if state.ended and state.fault not in ("endlist", "full"):
            state.ended = False  # started again: a new playlist from media sequence 0
            self._restart(state)
        if state.ended or state.fault == "frozen" or (state.fault == "full"
                                                        and state.fault_done):
            return  # nothing is written: the playlists keep their last version
        if state.fault == "endlist":
            state.ended = state.fault_done = True
            self._playlists(state, now, ended=True)
            return
        state.media += max(0.0, now - last) * job_speed(server, job, now)
        due = min(MAX_SEGMENTS_PER_TICK,
                  math.floor(state.media / self.target_duration) - state.written)
        wrote = False
        for _ in range(max(0, due)):
            duration = float(self.target_duration)
            if state.fault == "overlong" and not state.fault_done:
                duration, state.fault_done = 2.5 * self.target_duration, True
                state.media += duration - self.target_duration
            self._segment(state, state.written, duration, now,
                          empty=state.fault == "full")
            state.written += 1
            wrote = True
            if state.fault == "full":  # the disk is full: the playlists stay as they were
                state.fault_done = True
                return
        if wrote:
            self._playlists(state, now)
        if state.fault == "missing" and not state.fault_done and state.written >= 2:
            v = state.variants[0]
            if len(v.segments) >= 2:
                (state.folder / v.name / f"seg{v.segments[-2][0]:05d}.ts").unlink(
                    missing_ok=True)
                state.fault_done = True

    def _segment(self, state: _Job, sequence: int, duration: float, now: float,
                 empty: bool) -> None:
        for v in state.variants:
            path = state.folder / v.name / f"seg{sequence:05d}.ts"
            # 80-95 % of the declared peak, as an encoder's segments run.
            size = v.bandwidth * duration / 8 * (0.8 + 0.15 * uniform(text_key(v.name), sequence))
            with open(path, "wb") as f:  # sparse: the size without the disk
                f.truncate(0 if empty else int(size))
            os.utime(path, (now, now))
            v.segments.append((sequence, duration))
            while len(v.segments) > self.list_size:  # delete_segments
                gone, _ = v.segments.pop(0)
                (state.folder / v.name / f"seg{gone:05d}.ts").unlink(missing_ok=True)

    def _playlists(self, state: _Job, now: float, ended: bool = False) -> None:
        for v in state.variants:
            first = v.segments[0][0] if v.segments else 0
            lines = ["#EXTM3U", "#EXT-X-VERSION:3",
                     f"#EXT-X-TARGETDURATION:{self.target_duration}",
                     f"#EXT-X-MEDIA-SEQUENCE:{first}"]
            for sequence, duration in v.segments:
                lines += [f"#EXTINF:{duration:.6f},", f"seg{sequence:05d}.ts"]
            if ended:
                lines.append("#EXT-X-ENDLIST")
            _write(state.folder / v.name / "index.m3u8", "\n".join(lines) + "\n", now)
