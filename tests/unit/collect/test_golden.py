"""Golden expositions: reviewed output for the documented answers and the simulator.

Run `pytest tests/unit/collect/test_golden.py --update` to regenerate after an intended
change, then review the diff of tests/golden/ like any other code.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, GOLDEN, load_fixture
from feed import Fed
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from sigma_exporter.config import OutputRoot, OutputsConfig, TargetConfig
from sigma_exporter.outputs.source import OutputsSource
from sigma_exporter.sim.dump import render_dump
from sigma_exporter.sim.model import make_servers
from sigma_exporter.sim.progress import render_progress
from sigma_exporter.source.client import PollError

RECEIVED_AT = 1709398433.0  # fixed exporter clock for the documented answers
SIM_EPOCH = 1767225600.0  # 2026-01-01T00:00:00Z
SIM_NOW = SIM_EPOCH + 1234.0


def expose(dump: Any, progress: Any | None, received_at: float, openmetrics: bool = False,
           target: str = "sigma-01") -> str:
    fed = Fed(TargetConfig(name=target, url="http://127.0.0.1:9999"))
    fed.round(dump, progress, received_at=received_at)
    return fed.text(openmetrics)


def documented() -> str:
    return expose(load_fixture("dump-sample.json"), load_fixture("progress-sample.json"),
                  RECEIVED_AT)


def documented_complete() -> str:
    """The complete documented dump (its tail too: licence, control plane, `dt`, `now`)."""
    return expose(load_fixture("dump-sample-complete.json"),
                  load_fixture("progress-sample.json"), RECEIVED_AT)


def simulated(seed: int = 1) -> str:
    server = make_servers(1, gpus=2, seed=seed, epoch=SIM_EPOCH)[0]
    return expose(render_dump(server, SIM_NOW), render_progress(server, SIM_NOW), SIM_NOW)


def documented_as_is() -> str:
    """The progress answer exactly as documented is not JSON: progress is down."""
    return expose(load_fixture("dump-sample.json"),
                  PollError("invalid_json", "unexpected character"), RECEIVED_AT)


def outputs() -> str:
    """The documented progress answer's job writing HLS (a master and two variants,
    one segment missing) and DASH, read by the outputs source at a pinned time."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ramdisk"
        shutil.copytree(FIXTURES / "outputs", root)
        for n, path in enumerate(sorted(root.rglob("*"))):
            os.utime(path, (RECEIVED_AT - 60 + n / 4, RECEIVED_AT - 60 + n / 4))
        progress = load_fixture("progress-sample.json")
        job = progress["result"]["$job_name"]
        job["target"][0]["url"] = f"{root}/origin04/source/"
        job["target"].append({"format": "dash", "url": f"{root}/origin04/dash",
                              "select": ["480"], "bitrate": 300000})
        job["target"].append({"format": "rtmp", "url": "rtmp://cdn:key@push.example/live/x"})
        config = TargetConfig(name="sigma-01", url="http://127.0.0.1:9999")
        source = OutputsSource(config, [OutputRoot(str(root))],
                               OutputsConfig(roots=(OutputRoot(str(root)),)),
                               clock=lambda: RECEIVED_AT)
        fed = Fed(config, extra=[source])
        fed.round(load_fixture("dump-sample.json"), progress, received_at=RECEIVED_AT)
        return fed.text()


CASES = {
    "outputs.prom": outputs,
    "documented.prom": documented,
    "documented-complete.prom": documented_complete,
    "documented-progress-as-documented.prom": documented_as_is,
    "simulator-seed1.prom": simulated,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, update_golden: bool) -> None:
    body = CASES[name]()
    path = GOLDEN / name
    if update_golden:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(body)
    assert path.exists(), f"{path} missing: run pytest --update and review it"
    assert body == path.read_text(), (
        f"{name} changed; if intended, run "
        "`pytest tests/unit/collect/test_golden.py --update` and review the diff")


@pytest.mark.parametrize("name", sorted(CASES))
def test_both_formats_parse_with_the_same_samples(name: str) -> None:
    case = CASES[name]
    text = case()
    dumps = {documented: "dump-sample.json", documented_complete: "dump-sample-complete.json"}
    om = (expose(load_fixture(dumps[case]), load_fixture("progress-sample.json"),
                 RECEIVED_AT, openmetrics=True) if case in dumps else None)
    text_samples = {(s.name, tuple(sorted(s.labels.items())), s.value)
                    for f in text_string_to_metric_families(text) for s in f.samples}
    assert text_samples
    if om is not None:
        om_samples = {(s.name, tuple(sorted(s.labels.items())), s.value)
                      for f in om_families(om) for s in f.samples}  # type: ignore[no-untyped-call]
        assert om_samples == text_samples


def test_golden_simulator_differs_by_seed() -> None:
    assert simulated(1) != simulated(2)


def test_every_dump_metric_appears_in_the_documented_golden() -> None:
    """The complete documented dump exercises every dump family (GPU-less ones aside)."""
    from sigma_exporter.metrics import DEFINITIONS

    body = (GOLDEN / "documented-complete.prom").read_text()
    missing = [d.name for d in DEFINITIONS if d.source in ("dump", "progress")
               and f"\n{d.name}{{" not in body]
    assert missing == []


def test_fixtures_are_copies_not_references() -> None:
    for name in ("dump-sample.json", "dump-sample-complete.json", "progress-sample.json",
                 "progress-sample-as-documented.txt"):
        assert (FIXTURES / name).is_file()
    assert "../shared" not in Path(__file__).read_text().replace('"../shared"', "")
