"""What the exporter gives back to the system: memory held is memory an operator pays."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

_LARGE_BUFFERS = r"""
import sys
from sigma_exporter.app import return_large_buffers
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
if sys.argv[1] == "on":
    return_large_buffers()
base = rss()
kept = []
for _ in range(4):
    body = b"x" * (15 << 20)  # a merged scrape body of 1,000 targets
    small = [bytes(200) for _ in range(2000)]  # what a poll round leaves meanwhile
    kept.append(small[-1])
    del body, small
print(rss() - base)
"""


def test_freed_scrape_bodies_go_back_to_the_system() -> None:
    """With glibc's default policy a freed 15 MB body stays in the heap's high-water
    mark; the exporter's setting (app.return_large_buffers) gives it back. Measured
    as memory (VmRSS), never as time."""
    grown = {}
    for mode in ("off", "on"):
        done = subprocess.run([sys.executable, "-c", _LARGE_BUFFERS, mode], capture_output=True,
                              text=True, timeout=60, check=True, cwd=ROOT)
        grown[mode] = float(done.stdout)
    assert grown["on"] < 4 and grown["off"] > 10, grown
