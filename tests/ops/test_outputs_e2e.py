"""Outputs end to end: a real ffmpeg's HLS and DASH, the exporter, a real Prometheus.

Debian's ffmpeg writes a live HLS output (`-f hls -hls_time 2 -hls_list_size 5
-hls_flags delete_segments`, a master playlist through `-var_stream_map`, two
renditions) and a live DASH output from a test source, into the folders a
Sigma job's `progress` answer names (a stub Sigma serves the documented
answer with those folders). The exporter runs as a process with
`outputs.roots` on that folder, polled every second; Prometheus 2.42 scrapes
it every second and evaluates a time-compressed copy of the shipped rules
(tests/ops/test_alerts_e2e.py's `compress_rules`: only `for:` and range
windows shortened).

What this proves that nothing faster proves: the parser and the checks read
what a real packager writes, ffmpeg's own file handling included (temporary
files renamed over the playlist, segments deleted from the window, the
master written once, the DASH manifest rewritten per segment); `SIGKILL`
leaves a playlist that no longer changes and SigmaOutputStale fires in a
real Prometheus from the exporter's real exposition; `SIGTERM` makes ffmpeg
write `#EXT-X-ENDLIST` (and a static MPD) and SigmaOutputEnded fires. The
in-process tests (tests/unit/outputs/) use playlists the simulator writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FIXTURES, Proc, require_tool, value
from promstack import Prometheus, poll
from sigma_stub import Stub
from stack import Exporter
from test_alerts_e2e import write_compressed_rules

pytestmark = pytest.mark.e2e

JOB = "LIVE"
HLS = {"target": "sigma-01", "job_name": JOB, "output": "0"}
DASH = {"target": "sigma-01", "job_name": JOB, "output": "1"}
RENDITIONS = ("stream_0.m3u8", "stream_1.m3u8")


def ffmpeg_command(hls: Path, dash: Path, seconds: int | None = None) -> list[str]:
    """One ffmpeg, two live outputs: HLS with a master and two renditions, and DASH.
    Live (`-re`, for ever) unless `seconds` of test source, as fast as it goes."""
    source = ["-re"] if seconds is None else ["-t", str(seconds)]
    return [
        require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin",
        *source, "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25",
        *source, "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
        # HLS: two video renditions, each with the audio.
        "-map", "0:v", "-map", "1:a", "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-keyint_min", "50",
        "-sc_threshold", "0", "-c:a", "aac", "-b:v:0", "300k", "-b:v:1", "150k",
        "-s:v:1", "160x90", "-b:a", "64k",
        "-f", "hls", "-hls_time", "2", "-hls_list_size", "5",
        "-hls_flags", "delete_segments+temp_file", "-master_pl_name", "master.m3u8",
        "-var_stream_map", "v:0,a:0 v:1,a:1", str(hls / "stream_%v.m3u8"),
        # DASH: one video representation.
        "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
        "-keyint_min", "50", "-sc_threshold", "0", "-b:v", "300k",
        "-f", "dash", "-seg_duration", "2", "-window_size", "5", "-remove_at_exit", "0",
        str(dash / "manifest.mpd"),
    ]


@dataclass
class World:
    ramdisk: Path
    exporter: Exporter
    prom: Prometheus
    ffmpeg: Proc | None = None

    def start_ffmpeg(self, log: str) -> Proc:
        hls, dash = self.ramdisk / "live" / "hls", self.ramdisk / "live" / "dash"
        hls.mkdir(parents=True, exist_ok=True)
        dash.mkdir(parents=True, exist_ok=True)
        self.ffmpeg = Proc(ffmpeg_command(hls, dash), log=self.ramdisk.parent / log, cwd=hls)
        return self.ffmpeg

    def diagnose(self) -> str:
        parts = [self.exporter.proc.tail(40), f"--- prometheus\n{self.prom.logs()}"]
        if self.ffmpeg is not None:
            parts.append(self.ffmpeg.tail(20))
        return "\n".join(parts)

    def fresh(self) -> str | None:
        """The exporter's body once every rendition is read, fresh and advancing."""
        body = self.exporter.metrics()
        renditions = [{**HLS, "rendition": r} for r in RENDITIONS] + [{**DASH, "rendition": "0"}]
        for labels in renditions:
            if value(body, "sigma_output_stale", **labels) != 0:
                return None
            if not value(body, "sigma_output_segments_total", **labels):
                return None
        return body

    def firing(self, alertname: str) -> dict[str, Any] | None:
        for alert in self.prom.alerts():
            if alert["labels"].get("alertname") == alertname and alert["state"] == "firing":
                labels: dict[str, Any] = alert["labels"]
                return labels
        return None


def _progress(ramdisk: Path) -> bytes:
    answer = json.loads((FIXTURES / "progress-sample.json").read_text())
    job = answer["result"].pop("$job_name")
    job["target"] = [
        {"format": "hls", "url": f"{ramdisk}/live/hls/", "select": ["300k", "150k"]},
        {"format": "dash", "url": f"{ramdisk}/live/dash/", "select": ["300k"]},
    ]
    answer["result"][JOB] = job
    return json.dumps(answer).encode()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ramdisk = tmp_path / "ramdisk"
    ramdisk.mkdir()
    progress = _progress(ramdisk)
    dump = (FIXTURES / "dump-sample.json").read_bytes()

    def sigma(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str],
                                                                     bytes]:
        kind = json.loads(body or b"{}").get("type", "dump")
        return 200, {"Content-Type": "application/json"}, progress if kind == "progress" \
            else dump

    stub = Stub(sigma)
    config = tmp_path / "sigma.yml"
    config.write_text(yaml.safe_dump({
        "defaults": {"interval": "1s", "timeout": "800ms"},
        "targets": [{"name": "sigma-01", "url": stub.url}],
        "outputs": {"roots": [{"path": str(ramdisk)}]},
    }))
    exporter = Exporter(config, tmp_path)
    prom: Prometheus | None = None
    try:
        exporter.wait_ready()
        prom = Prometheus(tmp_path / "prom", scrape_targets=[exporter.address],
                          rule_files=write_compressed_rules(tmp_path / "rules"))
        w = World(ramdisk, exporter, prom)
        yield w
        if w.ffmpeg is not None:
            w.ffmpeg.stop()
    finally:
        if prom is not None:
            prom.stop()
        exporter.stop()
        stub.stop()


def test_ffmpeg_live_output_is_fresh_then_stale_after_sigkill_then_ended_after_sigterm(
        world: World) -> None:
    world.start_ffmpeg("ffmpeg-1.log")
    body = poll(world.fresh, 60, "every rendition fresh and advancing", world.diagnose)
    assert value(body, "sigma_output_renditions", **HLS) == 2
    assert value(body, "sigma_output_target_duration_seconds", **HLS,
                 rendition="stream_0.m3u8") == 2
    assert value(body, "sigma_output_ended", **DASH, rendition="0") == 0
    assert value(body, "sigma_output_update_period_seconds", **DASH, rendition="0") == 2
    declared = value(body, "sigma_output_declared_bytes_per_second", **HLS,
                     rendition="stream_0.m3u8")
    assert declared is not None and declared > 0
    assert world.firing("SigmaOutputStale") is None

    # SIGKILL: ffmpeg cannot write another byte; the playlists stay as they are.
    assert world.ffmpeg is not None and world.ffmpeg.alive()
    os.kill(world.ffmpeg.proc.pid, signal.SIGKILL)
    world.ffmpeg.proc.wait(timeout=10)
    labels = poll(lambda: world.firing("SigmaOutputStale"), 90,
                  "SigmaOutputStale firing in Prometheus", world.diagnose)
    assert labels["job_name"] == JOB and labels["severity"] == "critical"
    body = world.exporter.metrics()
    assert value(body, "sigma_output_ended", **HLS, rendition="stream_0.m3u8") == 0

    # SIGTERM: ffmpeg finishes its outputs: EXT-X-ENDLIST, a static manifest.
    ffmpeg = world.start_ffmpeg("ffmpeg-2.log")
    poll(world.fresh, 60, "fresh again after the restart", world.diagnose)
    ffmpeg.proc.send_signal(signal.SIGTERM)
    ffmpeg.proc.wait(timeout=30)
    playlist = (world.ramdisk / "live" / "hls" / "stream_0.m3u8").read_text()
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    labels = poll(lambda: world.firing("SigmaOutputEnded"), 90,
                  "SigmaOutputEnded firing in Prometheus", world.diagnose)
    assert labels["job_name"] == JOB and labels["output"] in ("0", "1")
    body = world.exporter.metrics()
    assert value(body, "sigma_output_stale", **HLS, rendition="stream_0.m3u8") == 0


def test_ffmpeg_writes_what_the_parsers_read(tmp_path: Path) -> None:
    """ffmpeg's own files through the pure parsers, without the processes around."""
    from sigma_exporter.outputs.dash import parse_mpd
    from sigma_exporter.outputs.hls import parse_master, parse_media

    hls, dash = tmp_path / "hls", tmp_path / "dash"
    hls.mkdir()
    dash.mkdir()
    done = subprocess.run(ffmpeg_command(hls, dash, seconds=7), cwd=hls, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    master = parse_master((hls / "master.m3u8").read_bytes())
    assert [v.uri for v in master.variants] == list(RENDITIONS)
    media = parse_media((hls / "stream_0.m3u8").read_bytes(), None)
    assert media.ended and media.target_duration == 2 and media.segments
    manifest = parse_mpd((dash / "manifest.mpd").read_bytes())
    assert not manifest.dynamic and manifest.representations[0].newest_uri
    assert (dash / str(manifest.representations[0].newest_uri)).is_file()
