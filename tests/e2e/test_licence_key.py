"""The licence key (`nats.license` of the dump) appears in no output.

A stub Sigma server answers with the complete documented dump, whose tail
holds the licence key, and with answers that put the key where a careless
exporter would echo it: a dump whose other fields are broken and whose
licence status is the key itself, an `ec != 0` refusal whose `msg` quotes
the key (for dump and progress), a JSON array of it (rejected for its
schema), a body over the size cap, a body that is not JSON. Two exporters
poll them all at debug level, one logging logfmt and one JSON. Then every
output is searched for the key, for the key with `_` for `-` (what a label
cleaner would make of it) and for each of its five groups: /metrics in
both formats, /probe of every target, the status page, both logs, `once`
of every answer and check-config.

It is the licence-key part of tests/e2e/test_secrets.py: only real
processes show what reaches their logs and pages. About 25 s.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import (
    Proc,
    free_port,
    get,
    promtool_check_metrics,
    sigma_exporter_cmd,
    total,
    value,
    wait_until,
)
from sigma_stub import DUMP_COMPLETE, Stub
from sigma_stub import PROGRESS as PROGRESS_SAMPLE

pytestmark = pytest.mark.e2e

KEY = json.loads(DUMP_COMPLETE)["nats"]["license"]
FORBIDDEN = (KEY, KEY.replace("-", "_"), KEY.lower(), *KEY.split("-"))


def _broken_dump() -> bytes:
    """The complete dump with its other fields broken and the key where a
    value of theirs belongs."""
    doc = json.loads(DUMP_COMPLETE)
    doc["licenseStatus"] = KEY
    doc["nats"].update(connected=KEY, startup=KEY, hook=KEY)
    doc["start"] = KEY
    doc["now"] = KEY
    doc["System"]["gpu"] = [KEY]
    doc["System"]["ramUsed"] = KEY
    doc["APPS"][0]["Life"] = KEY
    return json.dumps(doc).encode()


REFUSAL = json.dumps({"ec": 3, "msg": f"license {KEY} has expired", "result": {}}).encode()
# path -> (dump answer, progress answer)
ANSWERS: dict[str, tuple[bytes, bytes]] = {
    "/complete": (DUMP_COMPLETE, PROGRESS_SAMPLE),
    "/broken": (_broken_dump(), PROGRESS_SAMPLE),
    "/refused": (REFUSAL, REFUSAL),
    "/schema": (json.dumps([KEY, {"license": KEY}]).encode(), json.dumps([KEY]).encode()),
    "/large": (DUMP_COMPLETE + b" " * 4096, PROGRESS_SAMPLE),
    "/garbage": (b'{"nats": {"license": "' + KEY.encode() + b'"', b"license " + KEY.encode()),
}
TARGETS = {path.strip("/"): path for path in ANSWERS}


def respond(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
    dump, progress = ANSWERS.get(handler.path, (b"{}", b"{}"))
    kind = json.loads(body or b"{}").get("type", "dump")
    return 200, {"Content-Type": "application/json"}, progress if kind == "progress" else dump


def assert_clean(text: str, where: str) -> None:
    for forbidden in FORBIDDEN:
        assert forbidden not in text, f"the licence key ({forbidden}) leaked into {where}"


@dataclass
class Run:
    stub: Stub
    config: Path
    logfmt: Proc
    json_log: Proc
    bases: tuple[str, str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    stub = Stub(respond)
    directory = tmp_path_factory.mktemp("licence")
    config = directory / "sigma.yml"
    lines = ["defaults:", "  interval: 1s", "  timeout: 800ms", "targets:"]
    for name, path in TARGETS.items():
        lines += [f"  - name: {name}", f"    url: {stub.url}{path}"]
        if name == "large":
            lines.append("    max_body_bytes: 4KiB")
    config.write_text("\n".join(lines) + "\n")
    ports = (free_port(), free_port())
    procs = [Proc(sigma_exporter_cmd("--config.file", str(config), "--web.listen-address",
                                     f"127.0.0.1:{port}", "--log.level", "debug",
                                     "--log.format", fmt), log=directory / f"{fmt}.log")
             for port, fmt in zip(ports, ("logfmt", "json"), strict=True)]
    bases = (f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
    try:
        for base in bases:
            def polled_twice(base: str = base) -> bool:
                body = get(base + "/metrics").text
                return all(total(body, "sigma_polls_total", target=t, source="dump") >= 2
                           for t in TARGETS)

            wait_until(polled_twice, 30, f"every target polled twice by {base}")
        yield Run(stub, config, procs[0], procs[1], bases)
    finally:
        for proc in procs:
            proc.stop()
        stub.stop()


def test_the_key_was_really_served_and_read(run: Run) -> None:
    served = {path for _, path, _, _ in run.stub.requests}
    assert served >= set(ANSWERS)
    body = get(run.bases[0] + "/metrics").text
    # The complete answer was read: its tail is there, the key is not.
    assert value(body, "sigma_license_status", target="complete", status="VALID") == 1
    assert value(body, "sigma_control_plane_connected", target="complete") == 1
    # The key as the licence status is carried as `other`, never as written.
    assert value(body, "sigma_license_status", target="broken", status="other") == 1
    assert value(body, "sigma_parse_errors_total", target="broken",
                 field="nats.connected") is not None
    for name in ("schema", "large", "garbage"):
        assert value(body, "sigma_up", target=name) == 0, name


def test_http_outputs_hold_no_key(run: Run) -> None:
    for base in run.bases:
        metrics = get(base + "/metrics").text
        assert_clean(metrics, "/metrics")
        promtool_check_metrics(metrics)
        openmetrics = get(base + "/metrics",
                          headers={"Accept": "application/openmetrics-text"}).text
        assert "# EOF" in openmetrics
        assert_clean(openmetrics, "/metrics (OpenMetrics)")
        for target in TARGETS:
            probe = get(base + "/probe", params={"target": target})
            assert probe.status_code == 200
            assert_clean(probe.text, f"/probe {target}")
        page = get(base + "/")
        assert page.status_code == 200 and "broken" in page.text
        assert_clean(page.text, "the status page")


def test_debug_logs_hold_no_key(run: Run) -> None:
    _, _, logfmt = run.logfmt.stop()
    _, _, json_lines = run.json_log.stop()
    assert "level=debug" in logfmt and 'msg="unparsable fields" target=broken' in logfmt
    assert 'msg="target down" target=schema' in logfmt
    records = [json.loads(line) for line in json_lines.splitlines() if line.startswith("{")]
    assert any(r.get("level") == "debug" for r in records)
    assert any(r.get("msg") == "unparsable fields" and r.get("target") == "broken"
               for r in records)
    assert_clean(logfmt, "the logfmt log")
    assert_clean(json_lines, "the JSON log")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_once_holds_no_key(run: Run, name: str) -> None:
    result = subprocess.run(sigma_exporter_cmd("once", "--config.file", str(run.config),
                                               "--target", name, "--timeout", "2s"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == (0 if name in ("complete", "broken") else 1), \
        result.stderr
    assert result.stdout.startswith("# HELP")
    assert_clean(result.stdout + result.stderr, f"once {name}")


def test_check_config_holds_no_key(run: Run) -> None:
    result = subprocess.run(sigma_exporter_cmd("check-config", str(run.config)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert_clean(result.stdout + result.stderr, "check-config")
