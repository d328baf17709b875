"""The benchmark command at a tiny size, so it cannot rot (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def test_bench_runs_tiny_and_reports_every_figure(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--tiny",
                             "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "tiny.json").read_text())
    for key in ("serving", "polling", "node_exporter", "prometheus", "memory", "isolation",
                "agent", "freshness"):
        assert key in figures, key
    assert figures["serving"]["series"] > 0
    assert "scrape_duration_s" in figures["prometheus"], figures["prometheus"]
    # The floor serves our own answer, byte for byte: Prometheus stores the same samples.
    assert figures["prometheus_floor"]["samples"] == figures["prometheus"]["samples"] > 0
    assert "ratio_node_exporter_over_ours" in figures["node_exporter"], figures["node_exporter"]
    assert "cpu_core_percent" in figures["agent"], figures["agent"]
    assert "ratio stock / ours" in result.stdout  # the table was printed


def test_bench_plot_is_drawn(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run
    finally:
        sys.path.pop(0)
    rows = [{"targets": n, "series": n * 150, "scrape_s": n * 1e-5, "stock_scrape_s": n * 2e-4,
             "poll_cpu_per_round_s": n * 1.5e-3, "rss_bytes": 5e7} for n in (10, 30)]
    run.plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_outputs_bench_runs_tiny(tmp_path: Path) -> None:
    """bench/outputs.py at 10 channels: every situation measured, no playlist re-read
    while nothing changed, and the floor reading what the source reads (the figures
    that are properties, not speeds)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "outputs.py"), "--tiny",
                             "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "outputs-tiny.json").read_text())
    for key in ("live", "unchanged", "long", "long_live", "live_floor"):
        assert figures[key]["playlists"] == 30 and figures[key]["cpu_s_median"] > 0, key
    assert figures["unchanged"]["reads_per_round_median"] == 0
    assert figures["long"]["reads_per_round_median"] == 0
    assert figures["live"]["reads_per_round_median"] == 30
    # The floor reads what the source reads, and nothing it does not.
    assert figures["live_floor"]["reads_per_round_median"] == 30


@pytest.mark.parametrize("what", ["source", "floor"])
def test_the_rounds_the_instruction_count_runs_run(what: str) -> None:
    """What `bench/outputs.py --instructions` runs under valgrind (which CI does not
    install): the rounds of the source and of the floor, with and without the last."""
    for extra in ([], ["--warm-only"]):
        result = subprocess.run([sys.executable, str(ROOT / "bench" / "outputs.py"),
                                 "--rounds-of", what, "--channels", "2", "--rounds", "1",
                                 *extra], capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr[-3000:]


def test_capacity_is_the_fit_and_the_shards_fit_it() -> None:
    """The capacity arithmetic: a line through measured rounds, the largest fleet that
    fits 80 % of a 15 s round, and shard.py's hashmod split of 10,000 targets into
    shards that each fit (no shard over the largest fleet)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run
    finally:
        sys.path.pop(0)
    rows = [{"targets": n, "poll_cpu_per_round_s": 0.1 + n * 2e-3, "scrape_s": n * 1e-4}
            for n in (500, 1000, 2000)]
    out = run.capacity_from(rows)
    assert abs(out["per_target_cpu_s"] - 2.1e-3) < 1e-9 and abs(out["fixed_cpu_s"] - 0.1) < 1e-9
    assert out["largest_targets"] == int((15 * 0.8 - 0.1) / 2.1e-3)  # 5666
    fleet = out["fleet"]
    assert fleet["largest_shard"] <= out["largest_targets"] < fleet["targets"]
    assert fleet["shards"] >= 2 and fleet["smallest_shard"] > 0


def test_memory_bench_runs_tiny(tmp_path: Path) -> None:
    """bench/memory.py at 20 targets: every stage's RSS and the heap's breakdown, measured
    with every target up (a breakdown of failed polls would say nothing)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "memory.py"), "--tiny",
                             "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "memory-tiny.json").read_text())
    assert figures["targets_up"] == figures["targets"] == 20
    assert 0 < figures["rss_imports_bytes"] < figures["rss_steady_bytes"]
    assert set(figures["body_bytes"]) == {"text", "text_gzip", "openmetrics",
                                          "openmetrics_gzip"}
    assert figures["body_bytes"]["text_gzip"] < figures["body_bytes"]["text"]
    assert figures["heap_traced_bytes"] == sum(figures["heap_by_group_bytes"].values()) > 0


def test_poll_only_bench_runs_tiny(tmp_path: Path) -> None:
    """bench/run.py --poll-only at 20 targets (about 10 s): the poll CPU, the floor and
    their ratio come out of a real simulator, exporter and aiohttp loop; nothing
    else runs this mode, so without it the before/after command could rot."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--poll-only",
                             "--tiny", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    polling = json.loads((tmp_path / "tiny-poll.json").read_text())["polling"]
    assert polling["targets_up"] == 20
    assert polling["cpu_per_round_s"] > 0 and polling["ratio_over_aiohttp"] > 0
    assert "ratio ours / aiohttp" in result.stdout
