"""Sigma refusing a call (`"ec": N`) is a failed poll, end to end through `once`.

Proves in a real process what the in-process tests cannot: `once` exits 1
and names the refusal, whichever of dump or progress Sigma refused.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import sigma_exporter_cmd, value
from sigma_stub import DUMP, PROGRESS, Stub
from sigma_stub import stubs as stubs

Respond = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, dict[str, str], bytes]]
REFUSAL = json.dumps({"ec": 1, "msg": "license expired", "result": {}}).encode()


def refusing(kind: str) -> Respond:
    def respond(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str],
                                                                        bytes]:
        asked = json.loads(body or b"{}").get("type", "dump")
        normal = PROGRESS if asked == "progress" else DUMP
        return 200, {"Content-Type": "application/json"}, REFUSAL if asked == kind else normal
    return respond


@pytest.mark.parametrize(("kind", "up_metric"), [("dump", "sigma_up"),
                                                 ("progress", "sigma_progress_up")])
def test_once_exits_1_and_names_sigmas_refusal(kind: str, up_metric: str,
                                               stubs: Callable[..., Stub]) -> None:
    stub = stubs(refusing(kind))
    done = subprocess.run(sigma_exporter_cmd("once", "--target", stub.url), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"{kind} FAILED: api_error: Sigma refused the call: ec 1: license expired" \
        in done.stderr
    target = stub.url.removeprefix("http://")
    assert value(done.stdout, up_metric, target=target) == 0
    assert value(done.stdout, "sigma_poll_errors_total", target=target, source=kind,
                 reason="api_error") == 1
