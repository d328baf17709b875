"""Where the exporter's memory goes: resident size by stage, then the live Python heap by
the code that allocated it.

    python bench/memory.py               # 1,000 simulated targets (~2 min on 2 cores)
    python bench/memory.py --targets 1   # one target: the floor an agent starts from
    python bench/memory.py --tiny        # seconds; CI runs it so the bench cannot rot

The real exporter (`app.serve`: the poller, its sources, the build thread and the
web thread) runs in this process against a simulator process (`--static`) with
the bench's config (15 s interval, timeout 5 s). Figures:

* the import floor: RSS of a fresh interpreter after each library the
  exporter loads, in turn (what no amount of data changes);
* RSS after the imports alone, after the first
  rounds, and after each body variant (text, OpenMetrics, each gzip'd) was
  scraped: the steady state the RSS goal is about;
* then, with tracemalloc on for two more rounds and scrapes (every View,
  snapshot and body is made anew each round, so what is live then was traced),
  the live heap grouped by what holds it: the parsed snapshots and the Views
  (`source/`, `poll/`), the samples (`collect/samples.py`), the scrape bodies
  (`web/`, `collect/exposition.py`), the clients (`source/client.py`,
  `source/transport.py`), the libraries'; and the top lines.

Memory that is not the Python heap (the interpreter, shared libraries, malloc's
free lists) is RSS minus the traced heap. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ports import free_port, port_block  # noqa: E402

VARIANTS = {
    "text": {"Accept": "text/plain"},
    "text_gzip": {"Accept": "text/plain", "Accept-Encoding": "gzip"},
    "openmetrics": {"Accept": "application/openmetrics-text; version=1.0.0"},
    "openmetrics_gzip": {"Accept": "application/openmetrics-text; version=1.0.0",
                         "Accept-Encoding": "gzip"},
}
# What holds the heap, by the file that allocated it (first match wins).
GROUPS = (
    ("bodies (web/, collect/exposition.py)", ("sigma_exporter/web/",
                                              "sigma_exporter/collect/exposition.py")),
    ("samples (collect/samples.py, collect/counters.py)", ("sigma_exporter/collect/",)),
    ("snapshots and Views (source/, poll/)", ("sigma_exporter/source/parse.py",
                                              "sigma_exporter/source/fields.py",
                                              "sigma_exporter/source/snapshot.py",
                                              "sigma_exporter/poll/")),
    ("clients and answers (source/client.py, source/transport.py)",
     ("sigma_exporter/source/",)),
    ("the rest of sigma_exporter", ("sigma_exporter/",)),
    ("asyncio, aiohttp, other libraries", ("",)),
)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def short(filename: str) -> str:
    """A file's path from its package on (site-packages/ or the repository cut off)."""
    path = Path(filename).as_posix()
    for cut in ("site-packages/", f"{ROOT.as_posix()}/"):
        path = path.split(cut)[-1]
    return path


def group_of(filename: str) -> str:
    path = filename.replace(os.sep, "/")
    for name, prefixes in GROUPS:
        if any(p in path for p in prefixes):
            return name
    return GROUPS[-1][0]


async def run(targets: int, interval: float, rounds: int) -> dict[str, Any]:
    from sigma_exporter import logsetup
    from sigma_exporter.app import Settings, return_large_buffers, serve
    from sigma_exporter.config import Config, TargetConfig

    figures: dict[str, Any] = {"targets": targets, "rss_imports_bytes": rss_bytes()}
    logsetup.setup("error")
    return_large_buffers()  # as the process does (app.run)
    first = port_block(targets)
    sim = subprocess.Popen([sys.executable, "-m", "sigma_exporter.cli", "simulate",
                            "--listen", f"127.0.0.1:{first}", "--servers", str(targets),
                            "--static"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    task: asyncio.Task[None] | None = None
    try:
        deadline = time.monotonic() + 120
        while True:  # the last server listening: all are
            try:
                socket.create_connection(("127.0.0.1", first + targets - 1), timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        config = Config(tuple(TargetConfig(name=f"s{i:04d}", url=f"http://127.0.0.1:{first + i}",
                                           interval=interval, timeout=min(5.0, interval / 2))
                              for i in range(targets)))
        port = free_port()
        task = asyncio.create_task(serve(Settings(config, (f"127.0.0.1:{port}",))))

        def scrape(headers: dict[str, str]) -> int:
            """One scrape's size on the wire (compressed where gzip'd), read and let go:
            a plain http.client, so the bench's own client holds nothing in the heap."""
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("GET", "/metrics", headers=headers)
                body = connection.getresponse().read()
                if "Accept-Encoding" not in headers:  # the targets polled in time
                    figures["targets_up"] = sum(1 for line in body.splitlines()
                                                if line.startswith(b"sigma_up{")
                                                and line.endswith(b" 1"))
                return len(body)
            finally:
                connection.close()

        async def scrape_all() -> dict[str, int]:
            return {name: await asyncio.to_thread(scrape, headers)
                    for name, headers in VARIANTS.items()}

        await asyncio.sleep(interval * rounds)
        figures["rss_polled_bytes"] = rss_bytes()
        figures["body_bytes"] = await scrape_all()
        await asyncio.sleep(interval)
        await scrape_all()
        figures["rss_steady_bytes"] = rss_bytes()
        tracemalloc.start(1)
        await asyncio.sleep(interval * rounds)
        await scrape_all()
        await asyncio.sleep(interval / 2)
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        by_group: dict[str, int] = {}
        lines = snapshot.statistics("lineno")
        for stat in lines:
            frame = stat.traceback[0]
            by_group[group_of(frame.filename)] = by_group.get(group_of(frame.filename), 0) \
                + stat.size
        figures["heap_traced_bytes"] = sum(by_group.values())
        figures["heap_by_group_bytes"] = dict(sorted(by_group.items(), key=lambda kv: -kv[1]))
        figures["heap_top_lines"] = [(f"{short(s.traceback[0].filename)}:"
                                      f"{s.traceback[0].lineno}", s.size) for s in lines[:12]]
    finally:
        if task is not None:
            # As the process stops: SIGTERM, which serve() answers by stopping the polls
            # and the web thread in order (a cancelled task would log every poll cut).
            os.kill(os.getpid(), signal.SIGTERM)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sim.terminate()
        sim.wait(timeout=30)
    return figures


# The import floor, library by library in the order the exporter loads them: a fresh
# interpreter imports each in turn and reports its RSS after each.
IMPORTS = ("asyncio", "yaml", "orjson", "prometheus_client", "httpx", "aiohttp",
           "aiohttp.web", "apscheduler.schedulers.asyncio", "pynvml", "sigma_exporter.app",
           "sigma_exporter.agent.source")
_IMPORT_STEPS = """
import importlib, json, os, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
steps = [("python", rss())]
for name in sys.argv[1:]:
    importlib.import_module(name)
    steps.append((name, rss()))
print(json.dumps(steps))
"""


def import_floor() -> list[tuple[str, int]]:
    """RSS after the interpreter, then after each of IMPORTS (cumulative)."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_STEPS, *IMPORTS], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=120)
    return [(name, int(size)) for name, size in json.loads(out.stdout)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--tiny", action="store_true", help="20 targets, quick rounds")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    targets = 20 if args.tiny else args.targets
    # The bench's 15 s interval (a 1,000-target round takes ~2 s of CPU here; a shorter
    # one would time polls out, and memory would be measured with targets down); tiny:
    # 2 s rounds of 20 targets.
    interval = 2.0 if args.tiny else 15.0
    figures = asyncio.run(run(targets, interval, rounds=2))
    figures["import_floor_bytes"] = import_floor()
    mib = 2**20
    print("import floor (RSS after each, a fresh interpreter):")
    before = 0
    for name, size in figures["import_floor_bytes"]:
        print(f"  {name:<40} {size / mib:6.1f} MiB  (+{(size - before) / mib:.1f})")
        before = size
    print(f"targets: {targets}, up when measured: {figures.get('targets_up')}")
    for key in ("rss_imports_bytes", "rss_polled_bytes", "rss_steady_bytes"):
        print(f"  {key[:-6].replace('_', ' '):<24} {figures[key] / mib:8.1f} MiB")
    print("  bodies: " + ", ".join(f"{k} {v / mib:.1f} MiB"
                                   for k, v in figures["body_bytes"].items()))
    print(f"  live Python heap (traced) {figures['heap_traced_bytes'] / mib:8.1f} MiB, of which:")
    for name, size in figures["heap_by_group_bytes"].items():
        print(f"    {name:<58} {size / mib:8.1f} MiB")
    print("  top lines:")
    for where, size in figures["heap_top_lines"]:
        print(f"    {where:<58} {size / mib:8.1f} MiB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "memory-tiny.json" if args.tiny else time.strftime(
        f"%Y%m%dT%H%M%SZ-memory-{targets}.json", time.gmtime())
    (out / name).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
