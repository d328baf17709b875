"""Sharding end to end: 20 simulated servers, 2 exporter replicas, 2 Prometheus.

The fleet config (20 targets) is split by deploy/prometheus/shard.py into one
exporter config per replica; each Prometheus runs deploy/prometheus/sharded.yml
(only addresses, intervals and its shard number changed) and keeps, with
`hashmod` + `keep`, the target names of its shard, probing them on the
exporter replica of the same shard. Every target must be scraped by exactly
one Prometheus, and up there (a name sent to the wrong replica would 404).
Every process is on 127.0.0.1 and stopped in `finally`.
"""

from __future__ import annotations

import copy
import importlib.util
import random
import socket
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import ROOT, Proc, free_port, get, require_tool, wait_until
from stack import Exporter, Simulator, exporter_config

pytestmark = pytest.mark.e2e

SERVERS = 20
SHARDS = 2
NAMES = [f"sigma-{i:02d}" for i in range(SERVERS)]


def free_port_block(count: int) -> int:
    """First of `count` consecutive loopback ports free for a SO_REUSEADDR listener.

    Below the ephemeral range (32768+), where client sockets in TIME_WAIT
    from a busy machine would make conftest.free_ports give up.
    """
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 32000 - count)
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise OSError(f"no {count} consecutive free ports on loopback")


def load_shard_module() -> ModuleType:
    path = ROOT / "deploy" / "prometheus" / "shard.py"
    spec = importlib.util.spec_from_file_location("sigma_shard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shard_prometheus_config(shard: int, exporter: str) -> dict[str, Any]:
    """deploy/prometheus/sharded.yml for shard `shard` of SHARDS, on loopback."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/sharded.yml").read_text())
    config = copy.deepcopy(config)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["global"]["external_labels"]["shard"] = str(shard)
    del config["rule_files"], config["alerting"]  # not what this test is about
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "sigma" and "honor_labels" not in job
    job["scrape_timeout"] = "1s"
    hashmod, keep = job["relabel_configs"][0], job["relabel_configs"][1]
    assert hashmod["action"] == "hashmod" and hashmod["source_labels"] == ["__address__"]
    assert keep["action"] == "keep" and keep["source_labels"] == [hashmod["target_label"]]
    hashmod["modulus"] = SHARDS
    keep["regex"] = str(shard)
    (address,) = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    address["replacement"] = exporter
    return dict(config)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    response = get(f"{base}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def active_targets(base: str) -> list[dict[str, Any]]:
    response = get(f"{base}/api/v1/targets", params={"state": "active"})
    response.raise_for_status()
    targets: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
    return [t for t in targets if t["labels"].get("job") == "sigma"]


def test_every_target_is_scraped_by_exactly_one_prometheus(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    started = time.monotonic()
    shard_tool = load_shard_module()
    procs: list[Proc] = []
    try:
        sim = Simulator(tmp_path, SERVERS, first_port=free_port_block(SERVERS))
        procs.append(sim.proc)
        (tmp_path / "fleet.yml").write_text(
            exporter_config(dict(zip(NAMES, sim.urls, strict=True))))
        assert shard_tool.main(["--shards", str(SHARDS), str(tmp_path / "fleet.yml"),
                                str(tmp_path / "shards")]) == 0
        expected: dict[int, set[str]] = {
            k: {t["name"] for t in yaml.safe_load(
                (tmp_path / "shards" / f"sigma-shard-{k}.yml").read_text())["targets"]}
            for k in range(SHARDS)}
        assert all(expected.values()), f"a shard is empty: {expected}"
        assert set().union(*expected.values()) == set(NAMES)

        exporters, proms = [], []
        for k in range(SHARDS):
            exporter = Exporter(tmp_path / "shards" / f"sigma-shard-{k}.yml", tmp_path,
                                log_name=f"exporter-{k}.log")
            procs.append(exporter.proc)
            exporters.append(exporter.address)
        for k in range(SHARDS):
            home = tmp_path / f"prometheus-{k}"
            (home / "file_sd").mkdir(parents=True)
            (home / "file_sd" / "sigma-targets.yml").write_text(
                (tmp_path / "shards" / "sigma-targets.yml").read_text())
            (home / "prometheus.yml").write_text(
                yaml.safe_dump(shard_prometheus_config(k, exporters[k])))
            port = free_port()
            procs.append(Proc([prometheus, f"--config.file={home / 'prometheus.yml'}",
                               f"--storage.tsdb.path={home / 'data'}",
                               f"--web.listen-address=127.0.0.1:{port}",
                               "--log.level=warn"]))
            proms.append(f"http://127.0.0.1:{port}")

        for k, base in enumerate(proms):
            # The shard's targets, found through file_sd and hashmod + keep.
            def keeps_its_shard(base: str = base, k: int = k) -> bool:
                return {t["labels"]["instance"] for t in active_targets(base)} == expected[k]

            wait_until(keeps_its_shard, 30, f"prometheus {k} to keep exactly its shard")

            # Every one scraped, up, with the exporter's own sigma_up = 1.
            def scrapes_its_shard(base: str = base, k: int = k) -> bool:
                return ({r["metric"]["target"] for r in query(base, "sigma_up == 1")}
                        == expected[k]
                        and {r["metric"]["instance"]
                             for r in query(base, 'up{job="sigma"} == 1')} == expected[k])

            wait_until(scrapes_its_shard, 30, f"prometheus {k} to scrape its shard")

        seen: dict[str, list[int]] = {}
        for k, base in enumerate(proms):
            for r in query(base, "count by (target, instance, shard) (sigma_up)"):
                metric = r["metric"]
                assert metric["instance"] == metric["target"]
                assert metric.get("shard") is None  # external labels are not on queries
                seen.setdefault(metric["target"], []).append(k)
            # The shard's Prometheus never scraped a target of another shard.
            assert not query(base, 'up{job="sigma"} == 0'), f"prometheus {k}"
        assert sorted(seen) == sorted(NAMES), "a target is missing"
        assert all(len(v) == 1 for v in seen.values()), f"scraped twice: {seen}"
        # Prometheus' hashmod and shard.py's agree (else the probes would 404).
        for name, (k,) in seen.items():
            assert shard_tool.hashmod(name, SHARDS) == k
    finally:
        for proc in reversed(procs):
            code, _, err = proc.stop()
            if code not in (0, -15):
                print(f"{proc.args[0]} exited {code}: {err[-2000:]}", file=sys.stderr)
    assert time.monotonic() - started < 60


def test_shard_tool_hashmod_pinned() -> None:
    """shard.py's hashmod, pinned to what Prometheus 2.42 computed for these names
    (the end-to-end test above checks it against a live Prometheus)."""
    shard_tool = load_shard_module()
    assert [shard_tool.hashmod(name, 2) for name in NAMES] == [
        1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1]
    spread = {k: sum(shard_tool.hashmod(n, 4) == k for n in NAMES) for k in range(4)}
    assert sum(spread.values()) == SERVERS and all(v > 0 for v in spread.values())


def test_shard_tool_split_keeps_the_rest_of_the_config(tmp_path: Path) -> None:
    shard_tool = load_shard_module()
    fleet = {"defaults": {"interval": "15s"}, "poll": {"max_concurrent": 8},
             "targets": [{"name": n, "url": f"http://10.0.0.{i + 1}:9999"}
                         for i, n in enumerate(NAMES)]}
    parts = shard_tool.split(fleet, 3)
    assert sorted(t["name"] for p in parts for t in p["targets"]) == sorted(NAMES)
    for k, part in enumerate(parts):
        assert part["defaults"] == fleet["defaults"] and part["poll"] == fleet["poll"]
        assert all(shard_tool.hashmod(t["name"], 3) == k for t in part["targets"])
    assert shard_tool.file_sd(fleet) == [{"targets": NAMES}]
