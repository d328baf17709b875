"""What the outputs source costs: CPU per round for 500 channels x 3 renditions on one host.

    python bench/outputs.py                # 500 channels, 3 renditions each (1,500 playlists)
    python bench/outputs.py --tiny         # seconds; CI runs this so the bench cannot rot
    python bench/outputs.py --instructions # a live round's instructions, under valgrind

Builds, on tmpfs when there is one (a Sigma host's outputs live on a
ramdisk), what 500 live channels leave in their folders: a master playlist
and three variants each, every variant a sliding window of 5 two-second
segments (sparse files of their real size). Then the real `OutputsSource`
(agent mode: its worker thread, stat and bounded reads) runs rounds
in-process against a `progress` snapshot naming those folders, and the CPU
of each round (process time: every thread, the worker's included) is
measured in three situations:

* `live`: every variant gained a segment since the last round (each
  playlist rewritten, its new segment written): the common case, since a
  poll interval is longer than a segment;
* `unchanged`: nothing changed: every playlist only stat'ed, none read
  (the bench counts the reads);
* `long`: the same, with every variant listing 5,000 segments instead of 5
  (a day-long EVENT playlist): only the head and tail are read, so the cost
  should not grow.

Beside them, `live_floor`: the same live rounds made by a bare loop that
makes the system calls the source makes (each folder opened, the master
stat'ed; each variant's folder opened, its playlist opened, fstat'ed, read
and closed, its newest and oldest checked segments stat'ed) and parses each
playlist, with nothing else (no checks, records, verdicts or samples): what
any reader of these playlists in Python pays on this machine.

CPU time on a shared VM moves by 20 % or more from one run to the next,
more than most changes to the source. `--instructions` counts instead the
user-space instructions of a live round (valgrind's cachegrind, which must
be installed): the same from run to run, so two commits compare in one
run each. It runs the live situation under valgrind with and without the
source's rounds (the playlists written alike) and takes the difference, for
the source and for the floor.

The rounds run under the exporter's own runtime tuning
(`sigma_exporter.app.tuned_runtime()`: the garbage collector's thresholds
and the start-up objects frozen out of its sight, as `sigma-exporter` sets
them for its whole life), since that is how the source runs in production.

Each is repeated; the median, min and max are printed and written as JSON
under bench/results/, with the median time the garbage collector took in a
round (part of its CPU, but set by everything the process holds, not by the
source alone). Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sigma_exporter.app import tuned_runtime  # noqa: E402
from sigma_exporter.collect.source import Outcome, Reading, Round  # noqa: E402
from sigma_exporter.config import OutputRoot, OutputsConfig, TargetConfig  # noqa: E402
from sigma_exporter.outputs.folder import MAX_SEGMENT_CHECKS  # noqa: E402
from sigma_exporter.outputs.hls import parse_media, read_head_tail  # noqa: E402
from sigma_exporter.outputs.source import OutputsSource  # noqa: E402
from sigma_exporter.source.snapshot import Job, JobOutput, Progress  # noqa: E402

RENDITIONS = (("360", 800_000), ("480", 1_400_000), ("720", 2_800_000))
TARGET_DURATION = 2


def playlist(first: int, count: int) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{TARGET_DURATION}",
             f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for n in range(first, first + count):
        lines += ["#EXTINF:2.000000,", f"seg{n:07d}.ts"]
    return "\n".join(lines) + "\n"


class Host:
    """The folders of `channels` live channels under `base`."""

    def __init__(self, base: Path, channels: int, window: int) -> None:
        self.base, self.channels, self.window = base, channels, window
        self.next = window  # the next segment's sequence number, for every variant
        for c in range(channels):
            folder = self.folder(c)
            master = ["#EXTM3U", "#EXT-X-VERSION:3"]
            for name, rate in RENDITIONS:
                (folder / name).mkdir(parents=True)
                master += [f"#EXT-X-STREAM-INF:BANDWIDTH={rate}", f"{name}/index.m3u8"]
            (folder / "master.m3u8").write_text("\n".join(master) + "\n")
        self.advance(write_all=True)

    def folder(self, channel: int) -> Path:
        return self.base / f"CH{channel:04d}"

    def advance(self, write_all: bool = False) -> None:
        """One more segment in every variant: its file, and the playlist rewritten
        (a temporary file renamed over it, as ffmpeg's temp_file flag does)."""
        first = self.next - self.window + 1
        # A long window lists old segments too; only the newest 20 are written
        # (the source looks for the newest 16 listed).
        segments = range(max(first, self.next - 19) if write_all else self.next,
                         self.next + 1)
        for c in range(self.channels):
            for name, rate in RENDITIONS:
                variant = self.folder(c) / name
                for n in segments:
                    path = variant / f"seg{n:07d}.ts"
                    with open(path, "wb") as f:
                        f.truncate(rate * TARGET_DURATION // 8)
                old = variant / f"seg{first - 1:07d}.ts"
                if old.exists():
                    old.unlink()
                temp = variant / "index.m3u8.tmp"
                temp.write_text(playlist(first, self.window))
                os.replace(temp, variant / "index.m3u8")
        self.next += 1

    def progress(self) -> Progress:
        return Progress(tuple(
            Job(name=f"CH{c:04d}", state="started", outputs=(
                JobOutput("0", "hls", folder=f"{self.folder(c)}/", select=("360", "480", "720")),
            )) for c in range(self.channels)))


async def one_round(source: OutputsSource, progress: Progress) -> Reading:
    this = Round("bench", (), 10**9, ["progress", "outputs"])
    this.done(Outcome("progress", Reading({}, progress), None, 0.0))
    return await source.read(this)


class Reads:
    """Counts the bounded reads (os.pread) the source makes: none for an unchanged file."""

    def __init__(self) -> None:
        self.count = 0
        self._real: Callable[..., bytes] = os.pread

    def __enter__(self) -> Reads:
        real = self._real

        def counted(fd: int, length: int, offset: int) -> bytes:
            self.count += 1
            return real(fd, length, offset)

        os.pread = counted
        return self

    def __exit__(self, *exc: object) -> None:
        os.pread = self._real


class Collections:
    """Wall time the garbage collector spent during the `with` (in whichever thread):
    part of a round's CPU, shown apart because it depends on the whole process."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> Collections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def floor_round(host: Host) -> None:
    """A live round's floor: the source's system calls and parses, nothing else."""
    root_fd = os.open(host.base, _OPEN_DIR)
    try:
        for c in range(host.channels):
            folder_fd = os.open(host.folder(c).name, _OPEN_DIR, dir_fd=root_fd)
            try:
                os.stat("master.m3u8", dir_fd=folder_fd, follow_symlinks=False)
                for name, _ in RENDITIONS:
                    variant_fd = os.open(name, _OPEN_DIR, dir_fd=folder_fd)
                    try:
                        _floor_variant(variant_fd)
                    finally:
                        os.close(variant_fd)
            finally:
                os.close(folder_fd)
    finally:
        os.close(root_fd)


def _floor_variant(variant_fd: int) -> None:
    fd = os.open("index.m3u8", _OPEN_FILE, dir_fd=variant_fd)
    try:
        (start, length), tail_at = read_head_tail(os.fstat(fd).st_size)
        head = os.pread(fd, length, start)
        tail = None if tail_at is None else os.pread(fd, tail_at[1], tail_at[0])
    finally:
        os.close(fd)
    uris = parse_media(head, tail).uris
    for uri in {uris[-MAX_SEGMENT_CHECKS:][0], uris[-1]}:  # the oldest checked, the newest
        try:  # noqa: SIM105 (as the source does it: suppress() costs a call more)
            os.stat(uri, dir_fd=variant_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass


def measure(host: Host, source: OutputsSource | None, rounds: int,
            advance: bool) -> dict[str, Any]:
    """The source's rounds (None: the floor's)."""
    progress = host.progress()
    # One event loop for every round, as the exporter's poll loop (asyncio.run per
    # round would add its own set-up, signal handlers included, to each figure).
    loop = asyncio.new_event_loop()

    async def floor() -> Reading:
        floor_round(host)
        return Reading({}, None, 0.0)

    def one() -> Reading:
        return loop.run_until_complete(
            one_round(source, progress) if source is not None else floor())

    one()  # first sight: every file read
    cpu: list[float] = []
    wall: list[float] = []
    reads: list[int] = []
    collecting: list[float] = []
    series = 0
    for _ in range(rounds):
        if advance:
            host.advance()
        with Reads() as counter, Collections() as collections:
            started_cpu, started = time.process_time(), time.perf_counter()
            reading = one()
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started)
        reads.append(counter.count)
        collecting.append(collections.seconds)
        series = sum(map(len, reading.samples.values()))
    loop.close()
    return {"cpu_s_median": statistics.median(cpu), "cpu_s_min": min(cpu),
            "cpu_s_max": max(cpu), "wall_s_median": statistics.median(wall),
            "gc_s_median": statistics.median(collecting),
            "reads_per_round_median": statistics.median(reads), "series": series,
            "rounds": rounds}


def new_source(folder: Path) -> OutputsSource:
    config = TargetConfig(name="bench", url="http://127.0.0.1:9999", interval=15.0,
                          timeout=5.0, max_series=10**7)
    root = OutputRoot(str(folder))
    return OutputsSource(config, [root], OutputsConfig(roots=(root,)))


def scenario(name: str, base: Path, channels: int, window: int, rounds: int,
             advance: bool, floor: bool = False) -> dict[str, Any]:
    folder = base / name
    host = Host(folder, channels, window)
    source = None if floor else new_source(folder)
    try:
        result = measure(host, source, rounds, advance)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"channels": channels, "playlists": channels * len(RENDITIONS),
            "segments_listed": window, **result}


WARM_ROUNDS = 3


def rounds_of(what: str, channels: int, rounds: int, warm_only: bool) -> int:
    """Live rounds of the source or the floor, each after one more segment in every
    variant: WARM_ROUNDS, then `rounds` more (`warm_only`: the same writes, no round)."""
    with tempfile.TemporaryDirectory(prefix="sigma-bench-outputs-", dir=_tmpfs()) as tmp, \
            tuned_runtime():
        host = Host(Path(tmp), channels, 5)
        source = new_source(Path(tmp))
        progress = host.progress()
        loop = asyncio.new_event_loop()
        for n in range(WARM_ROUNDS + rounds):
            host.advance()
            if warm_only and n >= WARM_ROUNDS:
                continue
            if what == "source":
                loop.run_until_complete(one_round(source, progress))
            else:
                floor_round(host)
        loop.close()
    return 0


def _instructions_of(what: str, channels: int, rounds: int, warm_only: bool) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
               "--cachegrind-out-file=/dev/null", sys.executable, __file__,
               "--rounds-of", what, "--channels", str(channels), "--rounds", str(rounds)]
    # One hash seed: set and dict work then repeats exactly from run to run.
    done = subprocess.run(command + ["--warm-only"] * warm_only, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    for line in done.stderr.splitlines():
        if "I" in line and "refs:" in line:
            return int(line.rsplit(":", 1)[1].replace(",", "").strip())
    raise RuntimeError(f"no instruction count in valgrind's output: {done.stderr[-500:]}")


def instructions(channels: int, rounds: int = 3) -> int:
    """User-space instructions per live round, the source's and the floor's, each
    counted as (set-up, writes and rounds) - (the same without the last `rounds`)."""
    if shutil.which("valgrind") is None:
        print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    per_round = {what: (_instructions_of(what, channels, rounds, False)
                        - _instructions_of(what, channels, rounds, True)) / rounds
                 for what in ("source", "floor")}
    source, floor = per_round["source"], per_round["floor"]
    print(f"{channels * len(RENDITIONS)} playlists, live: the source {source / 1e6:.0f} M "
          f"instructions per round, the floor {floor / 1e6:.0f} M ({source / floor:.2f}x)")
    return 0


def _tmpfs() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--tiny", action="store_true", help="10 channels, 3 rounds")
    parser.add_argument("--channels", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--instructions", action="store_true",
                        help="a live round's user-space instructions, counted by valgrind "
                        "(3 rounds; --channels applies, --rounds and --tiny do not)")
    # What --instructions runs under valgrind (rounds_of).
    parser.add_argument("--rounds-of", choices=("source", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds_of is not None:
        return rounds_of(args.rounds_of, args.channels, args.rounds, args.warm_only)
    if args.instructions:
        return instructions(args.channels)
    channels, rounds = (10, 3) if args.tiny else (args.channels, args.rounds)
    parent = _tmpfs()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sigma-bench-outputs-", dir=parent) as tmp, \
            tuned_runtime():  # the GC as the exporter sets it (the module docstring)
        base = Path(tmp)
        thresholds = gc.get_threshold()
        figures = {
            "live": scenario("live", base, channels, 5, rounds, advance=True),
            "unchanged": scenario("unchanged", base, channels, 5, rounds, advance=False),
            "long": scenario("long", base, channels, 5000, rounds, advance=False),
            "long_live": scenario("long_live", base, channels, 5000, max(3, rounds // 3),
                                  advance=True),
            "live_floor": scenario("live_floor", base, channels, 5, rounds, advance=True,
                                   floor=True),
        }
    figures["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "gc_thresholds": thresholds,
                          "tmpfs": parent is not None, "loadavg_before": load_before,
                          "loadavg_after": os.getloadavg()}
    print(f"{'situation':<12} {'playlists':>9} {'listed':>7} {'CPU/round ms (median, min-max)':>32}"
          f" {'of which GC':>12} {'reads/round':>12}")
    for key in ("live", "unchanged", "long", "long_live", "live_floor"):
        f = figures[key]
        print(f"{key:<12} {f['playlists']:>9} {f['segments_listed']:>7} "
              f"{f['cpu_s_median'] * 1000:>14.1f} ({f['cpu_s_min'] * 1000:.1f}-"
              f"{f['cpu_s_max'] * 1000:.1f}) {f['gc_s_median'] * 1000:>12.1f}"
              f" {f['reads_per_round_median']:>12.0f}")
    print(f"load average before/after: {load_before} / {figures['machine']['loadavg_after']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "outputs-tiny.json" if args.tiny else time.strftime(
        "%Y%m%dT%H%M%SZ-outputs.json", time.gmtime())
    (out / name).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
