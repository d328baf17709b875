"""Every shipped scrape config, as is, in a real Prometheus.

The exporter's per-channel label is `job_name`, so a plain scrape job needs
no `honor_labels`: `job` stays the scrape job ("sigma", which the alerts
select on) and every channel keeps a series of its own. For each shipped
Prometheus config, the `sigma` scrape job is used exactly as written; only
what cannot work on loopback changes (addresses, the file_sd files, the
interval, and rules, Alertmanager and remote write, which are other tests'
business). The sharding hashmod keeps every target (one shard).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    Proc,
    free_port,
    get,
    require_tool,
    samples,
    wait_until,
)
from stack import start_stack

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [
    "deploy/prometheus/agent-static.yml",
    "deploy/prometheus/agent-file-sd.yml",
    "deploy/prometheus/central-probe.yml",
    "deploy/prometheus/sharded.yml",
    "deploy/prometheus/remote-write.yml",
    "deploy/docker/prometheus.yml",
]
NAMES = ("sigma-01", "sigma-02")


class Fleet:
    def __init__(self, exporter: str, channels: set[tuple[str, str]]) -> None:
        self.exporter = exporter  # HOST:PORT
        self.channels = channels  # (target, job_name) the exporter serves


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    stack = start_stack(tmp, NAMES, exporter_args=("--log.level", "error"), wait_up=False)
    try:
        exporter = stack.exporter.address

        def channels() -> set[tuple[str, str]] | None:
            try:
                body = get(f"http://{exporter}/metrics").text
            except Exception:
                return None
            found = {(dict(labels)["target"], dict(labels)["job_name"])
                     for name, labels in samples(body) if name == "sigma_job_up"}
            return found if {t for t, _ in found} == set(NAMES) else None

        wait_until(channels, 30, "the exporter to serve both servers' channels")
        found = channels()
        assert found is not None and len(found) >= 2 * len(NAMES)
        yield Fleet(exporter, found)
    finally:
        stack.stop()


def _on_loopback(path: str, home: Path, fleet: Fleet) -> dict[str, Any]:
    """The shipped config with the sigma job untouched but for its addresses."""
    config = copy.deepcopy(yaml.safe_load((ROOT / path).read_text()))
    for key in ("rule_files", "alerting", "remote_write"):
        config.pop(key, None)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == "sigma"]
    assert len(jobs) == 1, path
    (job,) = jobs
    assert "honor_labels" not in job, f"{path}: the exporter needs no honor_labels"
    config["scrape_configs"] = [job]
    job["scrape_timeout"] = "1s"
    probe = job.get("metrics_path") == "/probe"
    for static in job.get("static_configs", []):
        static["targets"] = [fleet.exporter]
    for sd in job.get("file_sd_configs", []):
        shipped = yaml.safe_load((ROOT / path).parent.joinpath(sd["files"][0]).read_text())
        entry = {"targets": list(NAMES) if probe else [fleet.exporter],
                 "labels": shipped[0].get("labels", {})}
        target = home / sd["files"][0]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump([entry]))
        sd["files"] = [str(target)]
    for rule in job.get("relabel_configs", []):
        if rule.get("action") == "hashmod":
            rule["modulus"] = 1
        if rule.get("target_label") == "__address__":
            rule["replacement"] = fleet.exporter
    return dict(config)


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    body = get(f"{base}/api/v1/query", params={"query": promql}).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_scrape_config_keeps_job_and_every_channel(path: str, tmp_path: Path,
                                                           fleet: Fleet) -> None:
    prometheus = require_tool("prometheus")
    home = tmp_path / "prometheus"
    home.mkdir()
    (home / "prometheus.yml").write_text(yaml.safe_dump(_on_loopback(path, home, fleet)))
    port = free_port()
    prom = Proc([prometheus, f"--config.file={home / 'prometheus.yml'}",
                 f"--storage.tsdb.path={home / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
    base = f"http://127.0.0.1:{port}"
    try:
        def every_channel() -> list[dict[str, Any]] | None:
            try:
                result = _query(base, "sigma_job_up")
            except Exception:
                return None
            got = {(r["metric"]["target"], r["metric"].get("job_name", "")) for r in result}
            return result if got >= fleet.channels else None

        result = wait_until(every_channel, 60, f"{path}: every channel in Prometheus")
        assert result is not None
        # One series per channel, each in the scrape job "sigma".
        channels = [(r["metric"]["target"], r["metric"]["job_name"]) for r in result]
        assert len(channels) == len(set(channels))
        assert set(channels) == fleet.channels
        assert {r["metric"]["job"] for r in result} == {"sigma"}
        # Nothing was renamed out of the way.
        assert _query(base, '{__name__=~"sigma_.+", exported_job!=""}') == []
        assert _query(base, '{__name__=~"sigma_.+", exported_instance!=""}') == []
        # `up` is the scrape job's, which SigmaExporterDown selects.
        up = _query(base, 'up{job="sigma"} == 1')
        assert up, f"{path}: no up{{job=\"sigma\"}}"
    finally:
        _, _, err = prom.stop()
        assert "error loading config" not in err.lower(), err
