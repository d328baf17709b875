"""The outputs source in-process: real playlists in a folder, the real source inside the
real TargetState and execute(); only the clock is pinned.

The simulator's HLS writer (sim/hls.py) writes what a Sigma job's HLS target
writes (a master, a variant per profile, sparse segments), with the
simulated time as mtimes, so every age below is exact.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import value
from feed import Fed

from sigma_exporter.config import OutputRoot, OutputsConfig, TargetConfig
from sigma_exporter.outputs.source import OutputsSource
from sigma_exporter.poll.summary import TargetStatus
from sigma_exporter.sim.dump import render_dump
from sigma_exporter.sim.hls import HlsWriter
from sigma_exporter.sim.model import make_servers
from sigma_exporter.sim.progress import render_progress
from sigma_exporter.source.client import Answer

T0 = 1_767_225_600.0
V1 = {"target": "sigma-01", "job_name": "VTV1", "output": "0"}
LOW = {**V1, "rendition": "128k/index.m3u8"}


def num(body: str, name: str, **labels: str) -> float:
    found = value(body, name, **labels)
    assert found is not None, f"no {name} {labels}"
    return found


class Stage:
    """A simulated server whose jobs write HLS under `root`, and a target reading it."""

    def __init__(self, root: Path, *, jobs: int = 2, roots: list[OutputRoot] | None = None,
                 timeout: float = 5.0) -> None:
        self.now = T0
        # Mid-way between two of VTV1's periodic restarts (every 10 minutes, coming up for
        # about 12 s): it runs at T0 and for the next minutes.
        self.server = make_servers(1, jobs=jobs, seed=1, epoch=T0 - 3300)[0]
        self.writer = HlsWriter(root, [self.server])
        config = TargetConfig(name="sigma-01", url="http://127.0.0.1:9999", timeout=timeout)
        roots = roots if roots is not None else [OutputRoot(str(root))]
        self.source = OutputsSource(config, roots, OutputsConfig(roots=tuple(roots)),
                                    clock=lambda: self.now)
        self.fed = Fed(config, extra=[self.source])
        self.writer.tick(self.now)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            self.writer.tick(self.now)

    def poll(self, progress: Any = None) -> str:
        dump = Answer(render_dump(self.server, self.now), self.now, 0.01)
        body = render_progress(self.server, self.now) if progress is None else progress
        self.fed.round(dump, Answer(body, self.now, 0.01) if isinstance(body, dict) else body,
                       received_at=self.now)
        return self.fed.text()

    @property
    def status(self) -> TargetStatus:
        status = self.fed.state.published.status
        assert status is not None
        return status


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    return Stage(tmp_path / "ramdisk")


def test_a_live_output_is_fresh_and_counts_every_segment_between_two_polls(
        stage: Stage) -> None:
    stage.advance(20)
    body = stage.poll()
    assert value(body, "sigma_outputs_up", target="sigma-01") == 1
    assert value(body, "sigma_output_up", **V1) == 1
    assert value(body, "sigma_output_renditions", **V1) == 2  # 128k and 480
    assert value(body, "sigma_output_stale", **LOW) == 0
    assert num(body, "sigma_output_playlist_age_seconds", **LOW) < 2
    assert value(body, "sigma_output_target_duration_seconds", **LOW) == 2
    assert value(body, "sigma_output_info", **V1, format="hls",
                 path="sigma-server-01/VTV1") == 1
    for reason in ("missing", "outside_root", "timeout", "unsafe_uri"):
        assert value(body, "sigma_output_errors_total", **V1, reason=reason) == 0
    stage.advance(15)  # seven or eight 2 s segments between two polls
    body = stage.poll()
    assert num(body, "sigma_output_segments_total", **LOW) in (7, 8)
    media = num(body, "sigma_output_media_seconds_total", **LOW)
    assert media == 2 * num(body, "sigma_output_segments_total", **LOW)
    declared = num(body, "sigma_output_declared_bytes_per_second", **LOW)
    rate = num(body, "sigma_output_segment_bytes_per_second", **LOW)
    assert 0.75 * declared < rate < declared  # sparse segments of the profile's rate
    assert stage.status.stale_outputs == ()


def test_a_frozen_playlist_is_stale_past_one_and_a_half_target_durations(
        stage: Stage) -> None:
    stage.advance(10)
    stage.poll()
    stage.writer.set_fault(0, "VTV1", "frozen")
    stage.advance(2.9)  # not yet: 1.5 x 2 s
    assert value(stage.poll(), "sigma_output_stale", **LOW) == 0
    stage.advance(2)
    body = stage.poll()
    assert value(body, "sigma_output_stale", **LOW) == 1
    assert value(body, "sigma_output_stale", **{**LOW, "job_name": "VTV3"}) == 0
    assert value(body, "sigma_output_up", **V1) == 1  # read fine: it is just not changing
    stale = stage.status.stale_outputs
    assert {(s.job, s.rendition) for s in stale} == {("VTV1", "128k/index.m3u8"),
                                                     ("VTV1", "480/index.m3u8")}
    findings = stage.status.source("outputs")
    assert findings is not None and "stale" in findings.findings[0]


def test_a_rewrite_without_a_new_segment_is_no_change(stage: Stage, tmp_path: Path) -> None:
    stage.advance(10)
    stage.poll()
    stage.writer.set_fault(0, "VTV1", "frozen")
    stage.advance(5)
    playlist = tmp_path / "ramdisk/sigma-server-01/VTV1/128k/index.m3u8"
    playlist.write_bytes(playlist.read_bytes())  # a stuck packager rewriting the same list
    os.utime(playlist, (stage.now, stage.now))
    assert value(stage.poll(), "sigma_output_stale", **LOW) == 1


def test_endlist_missing_overlong_and_a_full_disk(stage: Stage) -> None:
    stage.advance(12)
    stage.poll()
    stage.writer.set_fault(0, "VTV1", "endlist")
    stage.writer.set_fault(0, "VTV3", "missing")
    stage.advance(6)
    body = stage.poll()
    assert value(body, "sigma_output_ended", **LOW) == 1
    assert value(body, "sigma_output_stale", **LOW) == 0  # ended is not stale
    v3 = {**LOW, "job_name": "VTV3"}
    assert value(body, "sigma_output_segments_missing", **v3) == 1
    stage.writer.set_fault(0, "VTV1", None)
    stage.writer.set_fault(0, "VTV3", "overlong")
    stage.advance(8)
    body = stage.poll()
    assert value(body, "sigma_output_ended", **LOW) == 0  # a new playlist from 0
    assert num(body, "sigma_output_segments_overlong", **v3) >= 1
    stage.writer.set_fault(0, "VTV3", "full")
    stage.advance(8)
    body = stage.poll()
    assert value(body, "sigma_output_stale", **v3) == 1
    sentences = stage.status.findings
    assert any("VTV3" in f and "stale" in f for f in sentences)


def test_a_segment_removed_while_listed_is_found_before_it_leaves_the_list(
        stage: Stage, tmp_path: Path) -> None:
    """A segment is stat'ed when first listed; one that goes later, while still listed
    (here the middle one of five, one new segment a poll), is found at the latest
    when it is the next to leave, and counted while it is listed."""
    stage.advance(12)
    stage.poll()  # every listed segment there, and seen there
    folder = tmp_path / "ramdisk/sigma-server-01/VTV1/128k"
    listed = [line for line in (folder / "index.m3u8").read_text().splitlines()
              if line.endswith(".ts")]
    assert len(listed) == 5
    (folder / listed[2]).unlink()
    missing = []
    for _ in range(4):
        stage.advance(2)
        body = stage.poll()
        assert num(body, "sigma_output_segments_total", **LOW) > 0
        missing.append(value(body, "sigma_output_segments_missing", **LOW))
    # Second in the list at the first poll (found if its turn came), the oldest at the
    # second: found; gone from the list at the third.
    assert missing[1] == 1 and missing[2:] == [0, 0], missing
    oldest = next(line for line in (folder / "index.m3u8").read_text().splitlines()
                  if line.endswith(".ts"))
    assert oldest > listed[2]


def test_a_channel_at_095_writes_095_seconds_of_media_per_second(stage: Stage) -> None:
    stage.server.speed_overrides["VTV1"] = 0.95
    stage.server.job_restart_period = 36_000.0  # no periodic restart in these ten minutes
    stage.advance(6)
    before = num(stage.poll(), "sigma_output_media_seconds_total", **LOW)
    for _ in range(40):  # ten minutes, polled every 15 s
        stage.advance(15, step=1.0)
        media = num(stage.poll(), "sigma_output_media_seconds_total", **LOW)
    assert 0.94 * 600 <= media - before <= 0.96 * 600


def test_an_output_outside_every_root_is_counted_and_never_read(tmp_path: Path) -> None:
    inner = tmp_path / "ramdisk" / "sigma-server-01" / "VTV1"
    stage = Stage(tmp_path / "ramdisk", roots=[OutputRoot(str(inner))])
    stage.advance(6)
    body = stage.poll()
    assert value(body, "sigma_output_up", **V1) == 1
    v3 = {**V1, "job_name": "VTV3"}
    assert value(body, "sigma_output_up", **v3) == 0
    assert value(body, "sigma_output_errors_total", **v3, reason="outside_root") == 1
    assert value(body, "sigma_output_info", **v3, format="hls", path=".") is None


def test_a_root_that_is_a_symlink_out_of_itself_is_never_read(tmp_path: Path) -> None:
    stage = Stage(tmp_path / "real")
    stage.advance(6)
    (tmp_path / "ramdisk").mkdir()
    (tmp_path / "ramdisk" / "sigma-server-01").symlink_to(tmp_path / "real/sigma-server-01")
    progress = render_progress(stage.server, stage.now)
    for job in progress["result"].values():
        job["target"][0]["url"] = job["target"][0]["url"].replace("/real/", "/ramdisk/")
    stage.source.roots = (OutputRoot(str(tmp_path / "ramdisk")),)
    body = stage.poll(progress)
    assert value(body, "sigma_output_errors_total", **V1, reason="outside_root") == 1


def test_without_a_progress_answer_the_source_cannot_run(stage: Stage) -> None:
    from sigma_exporter.source.client import PollError

    body = stage.poll(PollError("connect", "connection refused"))
    assert value(body, "sigma_outputs_up", target="sigma-01") == 0
    assert value(body, "sigma_poll_errors_total", target="sigma-01", source="outputs",
                 reason="progress_down") == 1
    assert value(body, "sigma_up", target="sigma-01") == 1  # the dump is untouched


def test_nothing_is_read_again_while_its_mtime_does_not_change(stage: Stage,
                                                              tmp_path: Path) -> None:
    stage.advance(6)
    stage.poll()
    stage.writer.set_fault(0, "VTV1", "frozen")
    stage.advance(1)
    stage.poll()
    playlist = tmp_path / "ramdisk/sigma-server-01/VTV1/128k/index.m3u8"
    before = playlist.stat()
    playlist.write_bytes(b"\x00" * before.st_size)  # junk, same size, same inode
    os.utime(playlist, ns=(before.st_atime_ns, before.st_mtime_ns))
    body = stage.poll()
    assert value(body, "sigma_output_errors_total", **V1, reason="invalid") == 0  # not read
    os.utime(playlist, (stage.now, stage.now))
    body = stage.poll()
    assert value(body, "sigma_output_errors_total", **V1, reason="invalid") == 1  # read: junk
    assert value(body, "sigma_output_up", **V1) == 1  # the other rendition is fine
    assert value(body, "sigma_output_stale", **LOW) is None


@pytest.fixture
def hanging(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Folders whose name holds "dead" hang when listed, as on a dead network mount."""
    release = threading.Event()
    real = os.scandir

    def scandir(fd: Any) -> Any:
        if "dead" in os.readlink(f"/proc/self/fd/{fd}"):
            release.wait(30)
        return real(fd)

    monkeypatch.setattr(os, "scandir", scandir)
    yield release
    release.set()


def test_a_hung_root_is_its_outputs_timeout_and_never_another_roots(
        tmp_path: Path, hanging: threading.Event) -> None:
    live, dead = tmp_path / "live", tmp_path / "dead"
    stage = Stage(live, timeout=0.3)
    stage.advance(6)
    (dead / "sigma-server-01" / "VTV3").mkdir(parents=True)
    progress = render_progress(stage.server, stage.now)
    v3 = progress["result"]["VTV3"]["target"][0]
    v3["url"] = v3["url"].replace(str(live), str(dead))
    stage.source.roots = (OutputRoot(str(live)), OutputRoot(str(dead)))
    body = stage.poll(progress)
    assert value(body, "sigma_outputs_up", target="sigma-01") == 1
    assert value(body, "sigma_output_errors_total", **{**V1, "job_name": "VTV3"},
                 reason="timeout") == 1
    assert value(body, "sigma_output_stale", **LOW) == 0  # the live root's output is read
    body = stage.poll(progress)  # still stuck: no second read, counted again at once
    assert value(body, "sigma_output_errors_total", **{**V1, "job_name": "VTV3"},
                 reason="timeout") == 2
    # Every root hung: the source cannot run at all.
    stage.source.roots = (OutputRoot(str(dead)),)
    for job in progress["result"].values():
        job["target"][0]["url"] = job["target"][0]["url"].replace(str(live), str(dead))
    body = stage.poll(progress)
    assert value(body, "sigma_outputs_up", target="sigma-01") == 0
    assert value(body, "sigma_poll_errors_total", target="sigma-01", source="outputs",
                 reason="timeout") == 1
    hanging.set()


def test_central_mode_reads_the_origin_and_judges_by_content(tmp_path: Path) -> None:
    """Over HTTP from the simulator's origin, beside the real dump and progress polls:
    ranged reads of the newest segment, the age counted from the first poll that saw
    the content, and a frozen playlist stale by its content."""
    from sigma_exporter.collect import exposition
    from sigma_exporter.collect.sigma import DumpSource, ProgressSource
    from sigma_exporter.poll.target import TargetState
    from sigma_exporter.sim.http_server import Simulator
    from sigma_exporter.source.client import SigmaClient, SSLContexts

    async def run() -> list[str]:
        servers = make_servers(1, jobs=2, seed=1)
        bodies = []
        async with Simulator(servers, outputs_dir=str(tmp_path), origin_port=0) as sim:
            root = OutputRoot(str(tmp_path), url=sim.origin_url)
            config = TargetConfig(name="sigma-01", url=sim.url(0), interval=5.0, timeout=2.0)
            client = SigmaClient(config, SSLContexts())
            source = OutputsSource(config, [root], OutputsConfig(roots=(root,)))
            state = TargetState(config, [DumpSource(config, client),
                                         ProgressSource(config, client), source])
            try:
                for _ in range(200):  # the first segment and the playlists (speed varies)
                    if all((tmp_path / "sigma-server-01" / job / "128k/index.m3u8").exists()
                           for job in ("VTV1", "VTV3")):
                        break
                    await asyncio.sleep(0.1)
                for step in range(3):
                    if step == 1:
                        sim.set_job_output(0, "VTV1", "frozen")
                    await state.poll()
                    bodies.append(exposition.merge([state.published.rendered], False).decode())
                    await asyncio.sleep(3.5)
            finally:
                await state.aclose()
        return bodies

    first, _, last = asyncio.run(run())
    assert value(first, "sigma_output_up", **V1) == 1
    assert value(first, "sigma_output_playlist_age_seconds", **LOW) == 0  # first sight
    assert num(first, "sigma_output_segment_bytes_per_second", **LOW) > 0
    assert value(last, "sigma_output_stale", **LOW) == 1
    assert value(last, "sigma_output_stale", **{**LOW, "job_name": "VTV3"}) == 0


def test_once_prints_the_outputs_problems_stale_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sigma-exporter once` polls the outputs too and prints what they found."""
    import json

    import yaml
    from sigma_stub import Stub

    from sigma_exporter import cli

    stage = Stage(tmp_path / "ramdisk")
    stage.advance(10)
    stage.writer.set_fault(0, "VTV3", "endlist")
    stage.advance(1)
    progress = json.dumps(render_progress(stage.server, stage.now)).encode()
    dump = json.dumps(render_dump(stage.server, stage.now)).encode()

    def sigma(handler: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        kind = json.loads(body or b"{}").get("type", "dump")
        return 200, {"Content-Type": "application/json"}, progress if kind == "progress" \
            else dump

    stub = Stub(sigma)
    try:
        config = tmp_path / "sigma.yml"
        config.write_text(yaml.safe_dump({
            "targets": [{"name": "sigma-01", "url": stub.url}],
            "outputs": {"roots": [{"path": str(tmp_path / "ramdisk")}]}}))
        # The writer's clock is pinned in the past: every live playlist is long stale.
        code = cli.main(["once", "--config.file", str(config), "--target", "sigma-01"])
    finally:
        stub.stop()
    out, err = capsys.readouterr()
    assert code == 0
    assert 'sigma_output_stale{target="sigma-01",job_name="VTV1"' in out
    lines = [line for line in err.splitlines() if line.startswith("sigma-exporter once: output: ")]
    assert lines and "VTV1" in lines[0] and "stale" in lines[0]
    assert any("VTV3" in line and "ended" in line for line in lines)
    assert [i for i, line in enumerate(lines) if "stale" in line] == \
        list(range(sum("stale" in line for line in lines)))  # stale ones first


def test_a_reload_that_changes_the_roots_gives_every_target_its_new_sources(
        tmp_path: Path) -> None:
    from sigma_exporter.config import Config
    from sigma_exporter.outputs.source import OutputsFactory
    from sigma_exporter.poll.scheduler import Poller

    async def run() -> tuple[list[str], list[str], list[str]]:
        target = TargetConfig(name="sigma-01", url="http://127.0.0.1:9")
        before = Config((target,))
        factory = OutputsFactory(before)
        poller = Poller(before, [factory])
        first = [s.name for s in poller.targets["sigma-01"].sources]
        after = Config((target,), outputs=OutputsConfig(roots=(OutputRoot(str(tmp_path)),)))
        await poller.reload(after, rebuild=factory.update(after))
        second = [s.name for s in poller.targets["sigma-01"].sources]
        await poller.reload(after, rebuild=factory.update(after))  # unchanged: kept
        third = [s.name for s in poller.targets["sigma-01"].sources]
        await poller.stop()
        return first, second, third

    first, second, third = asyncio.run(run())
    assert first == ["dump", "progress"]
    assert second == third == ["dump", "progress", "outputs"]


def test_the_status_page_lists_stale_outputs_first(stage: Stage) -> None:
    from sigma_exporter.web import status

    stage.advance(10)
    stage.poll()
    stage.writer.set_fault(0, "VTV3", "frozen")
    stage.advance(6)
    stage.poll()
    page = status.render_page(
        [status.Row("sigma-01", "http://127.0.0.1:9999", 15.0, stage.status)],
        version="t", telemetry_path="/metrics", now=stage.now)
    assert "3 stale outputs" in page  # the fleet line: its three renditions
    cell = page.split("stale outputs: ", 1)[1]
    assert cell.index("VTV3") < cell.index("up")  # before the channel counts
    assert "VTV3 0 128k/index.m3u8 (unchanged 6 s, limit 3 s)" in page
