"""Hostile outputs: each is one output's (or rendition's) counted error, in bounded
memory and time, and the rest of the target's data is untouched.

A folder the exporter reads holds whatever a job, a packager or anyone with
write access put there; Sigma's answer, which names the folders, is not
trusted either. Nothing outside the configured root is ever read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import ROOT, value
from test_output_source import LOW, V1, Stage, num

from sigma_exporter.config import OutputRoot, OutputsConfig

V3 = {**V1, "job_name": "VTV3"}


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    stage = Stage(tmp_path / "ramdisk")
    stage.advance(10)
    stage.poll()
    return stage


def _folder(stage: Stage, job: str = "VTV1") -> Path:
    return stage.writer.folder(stage.server, job)


def _poll_measured(stage: Stage) -> tuple[str, float, int]:
    tracemalloc.start()
    started = time.process_time()
    body = stage.poll()
    spent = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return body, spent, peak


def _untouched(body: str) -> None:
    """VTV3, in the same root, and the dump are as they were."""
    assert value(body, "sigma_up", target="sigma-01") == 1
    assert value(body, "sigma_outputs_up", target="sigma-01") == 1
    assert value(body, "sigma_output_up", **V3) == 1
    assert value(body, "sigma_output_stale", **{**LOW, "job_name": "VTV3"}) == 0


def test_a_1_gib_playlist_is_too_large_and_never_read(stage: Stage) -> None:
    playlist = _folder(stage) / "128k" / "index.m3u8"
    with open(playlist, "r+b") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB without the disk
    body, spent, peak = _poll_measured(stage)
    assert value(body, "sigma_output_errors_total", **V1, reason="too_large") == 1
    assert value(body, "sigma_output_stale", **LOW) is None
    assert value(body, "sigma_output_stale", **{**LOW, "rendition": "480/index.m3u8"}) == 0
    assert peak < 8 << 20 and spent < 2.0
    _untouched(body)


def test_a_1_gib_playlist_under_a_cap_that_allows_it_costs_its_head_and_tail(
        stage: Stage) -> None:
    stage.source.settings = OutputsConfig(max_playlist_bytes=2 << 30)
    playlist = _folder(stage) / "128k" / "index.m3u8"
    with open(playlist, "r+b") as f:
        f.truncate(1 << 30)  # the tail is NUL bytes: junk
    body, spent, peak = _poll_measured(stage)
    assert value(body, "sigma_output_errors_total", **V1, reason="invalid") == 1
    assert peak < 8 << 20 and spent < 2.0


@pytest.mark.parametrize("junk", [os.urandom(50_000), b"#EXTM3U\n" + os.urandom(3000),
                                  b"<html><body>502 Bad Gateway</body></html>"])
def test_binary_junk_is_invalid(stage: Stage, junk: bytes) -> None:
    (_folder(stage) / "480" / "index.m3u8").write_bytes(junk)
    body = stage.poll()
    assert value(body, "sigma_output_errors_total", **V1, reason="invalid") == 1
    assert value(body, "sigma_output_stale", **LOW) == 0  # the other rendition
    _untouched(body)


def test_100000_segment_lines_cost_no_more_than_five(stage: Stage) -> None:
    playlist = _folder(stage) / "128k" / "index.m3u8"
    head = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
    playlist.write_text(head + "".join(f"#EXTINF:2.0,\nseg{n:05d}.ts\n" for n in range(100_000)))
    os.utime(playlist, (stage.now, stage.now))
    body, spent, peak = _poll_measured(stage)
    assert value(body, "sigma_output_target_duration_seconds", **LOW) == 2
    assert value(body, "sigma_output_window_seconds", **LOW) is None  # not read whole
    # Only the newest 16 listed segments are looked for (all gone: the list is a lie).
    assert value(body, "sigma_output_segments_missing", **LOW) == 16
    assert peak < 8 << 20 and spent < 1.0
    _untouched(body)


def test_segment_and_variant_uris_off_the_folder_are_never_followed(
        stage: Stage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "index.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nx.ts\n")
    (outside / "secret.ts").write_bytes(b"secret")
    playlist = _folder(stage) / "128k" / "index.m3u8"
    up = os.path.relpath(outside, playlist.parent)
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n"
        f"#EXTINF:2,\n{up}/secret.ts\n#EXTINF:2,\n{outside}/secret.ts\n"
        "#EXTINF:2,\nhttp://cdn.example.net/x.ts\n#EXTINF:2,\n%2e%2e/%2e%2e/x.ts\n")
    master = _folder(stage) / "master.m3u8"
    master.write_text(master.read_text() + f"#EXT-X-STREAM-INF:BANDWIDTH=1\n{up}/index.m3u8\n")
    body = stage.poll()
    assert value(body, "sigma_output_errors_total", **V1, reason="unsafe_uri") == 1
    assert value(body, "sigma_output_segments_missing", **LOW) == 0  # not looked for
    assert value(body, "sigma_output_renditions", **V1) == 2  # not the one outside
    _untouched(body)


def test_symlinks_out_of_the_root_are_refused(stage: Stage, tmp_path: Path) -> None:
    secret = tmp_path / "secret.m3u8"
    secret.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n")
    playlist = _folder(stage) / "480" / "index.m3u8"
    playlist.unlink()
    playlist.symlink_to(secret)
    body = stage.poll()
    assert value(body, "sigma_output_errors_total", **V1, reason="outside_root") == 1
    sub = _folder(stage, "VTV3") / "480"
    sub.rename(tmp_path / "moved")
    sub.symlink_to(tmp_path / "moved")  # a variant folder that leads out of the root
    body = stage.poll()
    assert value(body, "sigma_output_errors_total", **V3, reason="outside_root") == 1
    assert value(body, "sigma_output_stale", **{**LOW, "job_name": "VTV3"}) == 0


def test_a_fifo_where_a_playlist_should_be_never_blocks(stage: Stage) -> None:
    playlist = _folder(stage) / "480" / "index.m3u8"
    playlist.unlink()
    os.mkfifo(playlist)  # nobody ever writes to it: an open without O_NONBLOCK would hang
    started = time.monotonic()
    body = stage.poll()
    assert time.monotonic() - started < 3
    assert value(body, "sigma_output_errors_total", **V1, reason="not_a_file") == 1
    _untouched(body)


@pytest.mark.parametrize("replacement", ["symlink out", "fifo", "folder"])
def test_a_live_playlist_replaced_between_two_polls_is_checked_as_a_new_one(
        stage: Stage, tmp_path: Path, replacement: str) -> None:
    """A playlist that changed at the last look is opened at once (its fstat the look):
    whatever took its place is refused as it would be at first sight."""
    stage.advance(6)
    stage.poll()  # every variant read twice: each changed at the last look
    stage.advance(6)
    playlist = _folder(stage) / "480" / "index.m3u8"
    playlist.unlink()
    if replacement == "symlink out":
        secret = tmp_path / "secret.m3u8"
        secret.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n")
        playlist.symlink_to(secret)
        reason = "outside_root"
    elif replacement == "fifo":
        os.mkfifo(playlist)  # never written to: a blocking open would hang
        reason = "not_a_file"
    else:
        playlist.mkdir()
        reason = "not_a_file"
    started = time.monotonic()
    body = stage.poll()
    assert time.monotonic() - started < 3
    assert value(body, "sigma_output_errors_total", **V1, reason=reason) == 1
    assert value(body, "sigma_output_stale", **LOW) == 0  # the other rendition, read
    _untouched(body)


def test_a_folder_that_vanishes_is_that_outputs_or_renditions_alone(stage: Stage) -> None:
    import shutil

    shutil.rmtree(_folder(stage) / "480")  # one rendition's folder
    body = stage.poll()
    assert value(body, "sigma_output_errors_total", **V1, reason="missing") == 1
    assert value(body, "sigma_output_stale", **LOW) == 0
    shutil.rmtree(_folder(stage))  # the whole output
    body = stage.poll()
    assert value(body, "sigma_output_up", **V1) == 0
    assert value(body, "sigma_output_errors_total", **V1, reason="missing") == 2
    _untouched(body)


def test_a_folder_without_read_permission_is_counted(tmp_path: Path) -> None:
    """As root the exporter could read any folder: the check runs as `nobody`."""
    base = Path("/tmp") / f"sigma-outputs-perm-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        code = (
            "import json, os, sys\n"
            f"sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT / 'tests/unit/outputs')!r}]\n"
            "from pathlib import Path\n"
            "from test_output_source import Stage, value, V1\n"
            f"stage = Stage(Path({str(base)!r}) / 'ramdisk')\n"
            "stage.advance(10); stage.poll()\n"
            "folder = stage.writer.folder(stage.server, 'VTV1')\n"
            "os.chmod(folder, 0o311)  # traversable, not listable: no master to find\n"
            "os.chmod(folder / 'master.m3u8', 0o000)\n"
            "if os.getuid() == 0:\n"
            "    os.setgid(65534); os.setuid(65534)\n"
            "body = stage.poll()\n"
            "print(json.dumps([value(body, 'sigma_output_errors_total', **V1, reason='permission'),"
            " value(body, 'sigma_output_up', **{**V1, 'job_name': 'VTV3'})]))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        permission, other_up = json.loads(out.stdout.strip().splitlines()[-1])
        assert permission == 1 and other_up == 1
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_the_root_in_agent_mode_is_checked_with_symlinks_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    stage = Stage(real, roots=[OutputRoot(str(tmp_path / "link"))])
    (tmp_path / "link").symlink_to(real)  # the root itself may be a symlink
    progress = stage.poll()
    del progress
    stage.advance(6)
    from sigma_exporter.sim.progress import render_progress

    answer = render_progress(stage.server, stage.now)
    for job in answer["result"].values():
        job["target"][0]["url"] = job["target"][0]["url"].replace(str(real), str(tmp_path / "link"))
    body = stage.poll(answer)
    assert num(body, "sigma_output_up", **V1) == 1


def _listing(*uris: str) -> str:
    return "#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + "".join(f"#EXTINF:2,\n{u}\n" for u in uris)


def test_a_segment_listed_after_a_repeated_one_is_still_looked_at(stage: Stage) -> None:
    """A slate listed twice at the start of the list is one file, one look: the oldest
    segments looked at again are the oldest distinct ones, so a segment behind the
    slate that goes while listed is found."""
    folder = _folder(stage) / "128k"
    for name in ("slate.ts", "a.ts", "b.ts", "c.ts", "d.ts"):
        (folder / name).write_bytes(b"x" * 1000)
    (folder / "index.m3u8").write_text(_listing("slate.ts", "slate.ts", "a.ts", "b.ts"))
    assert value(stage.poll(), "sigma_output_segments_missing", **LOW) == 0
    (folder / "a.ts").unlink()
    (folder / "index.m3u8").write_text(
        _listing("slate.ts", "slate.ts", "a.ts", "b.ts", "c.ts", "d.ts"))
    assert value(stage.poll(), "sigma_output_segments_missing", **LOW) == 1


@pytest.mark.parametrize("order", [("x/a.ts", "link.ts"), ("link.ts", "x/a.ts")])
def test_the_first_listed_bad_segment_names_the_error(
        stage: Stage, tmp_path: Path, order: tuple[str, str]) -> None:
    """Segments are looked at in the order they are listed, so the same files always
    give the same reason (never one that moves with the process's hash seed): a
    segment under a file, then a symlink out of the root, or the other way round."""
    folder = _folder(stage) / "128k"
    (folder / "x").write_bytes(b"a file, not a folder")
    (tmp_path / "secret.ts").write_bytes(b"secret")
    (folder / "link.ts").symlink_to(tmp_path / "secret.ts")
    (folder / "n.ts").write_bytes(b"x" * 1000)
    (folder / "index.m3u8").write_text(_listing(*order, "n.ts"))
    body = stage.poll()
    first = "missing" if order[0] == "x/a.ts" else "outside_root"
    other = "outside_root" if first == "missing" else "missing"
    assert value(body, "sigma_output_errors_total", **V1, reason=first) == 1
    assert value(body, "sigma_output_errors_total", **V1, reason=other) == 0
    _untouched(body)
