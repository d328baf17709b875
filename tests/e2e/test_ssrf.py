"""No SSRF: the exporter only ever talks to the URLs in its config.

tests/e2e/test_e2e.py checks that /probe refuses a handful of non-names; here a
canary server records every request it gets, and neither /probe variants
(encoded, doubled, userinfo tricks, metadata addresses) nor redirects from a
configured target (301, 302, 303, 307, 308, to the canary or to
169.254.169.254) ever make the exporter reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from conftest import Proc, free_port, get, sigma_exporter_cmd, value, wait_until
from sigma_stub import Stub, sigma_answer

pytestmark = pytest.mark.e2e

REDIRECTS = (301, 302, 303, 307, 308)


class World:
    def __init__(self, base: str, canary: Stub, healthy: Stub) -> None:
        self.base, self.canary, self.healthy = base, canary, healthy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    canary = Stub(sigma_answer)
    healthy = Stub(sigma_answer)

    def redirector(status: int, location: str) -> Stub:
        def respond(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str],
                                                                           bytes]:
            return status, {"Location": location}, b""
        return Stub(respond)

    redirectors = [redirector(code, canary.url + "/stolen") for code in REDIRECTS]
    redirectors.append(redirector(302, "http://169.254.169.254/latest/meta-data/"))
    redirectors.append(redirector(302, "/relative-elsewhere"))
    config = tmp_path_factory.mktemp("ssrf") / "sigma.yml"
    config.write_text(
        "defaults:\n  interval: 1s\n  timeout: 800ms\ntargets:\n"
        f"  - name: healthy\n    url: {healthy.url}\n"
        + "".join(f"  - name: redirect-{i}\n    url: {stub.url}\n"
                  for i, stub in enumerate(redirectors)))
    port = free_port()
    proc = Proc(sigma_exporter_cmd("--config.file", str(config), "--web.listen-address",
                                   f"127.0.0.1:{port}"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(base + "/-/ready").status_code == 200, 30, "ready")
        yield World(base, canary, healthy)
    finally:
        proc.stop()
        for stub in (canary, healthy, *redirectors):
            stub.stop()


def test_redirects_are_never_followed(world: World) -> None:
    names = [f"redirect-{i}" for i in range(len(REDIRECTS) + 2)]

    def all_reported_twice() -> str | None:
        body = get(world.base + "/metrics").text
        done = all((value(body, "sigma_poll_errors_total", target=n, source="dump",
                          reason="http_status") or 0) >= 2 for n in names)
        return body if done else None

    body = wait_until(all_reported_twice, 30, "every redirect reported")
    for name in names:
        assert value(body, "sigma_up", target=name) == 0
    assert world.canary.requests == [], "a redirect was followed"
    assert value(body, "sigma_up", target="healthy") == 1


CANARY = "http://127.0.0.1:{port}/"
PROBE_VARIANTS = [
    "{canary}",
    "{canary}?target=healthy",
    "127.0.0.1:{port}",
    "http%3A%2F%2F127.0.0.1%3A{port}%2F",
    "http%253A%252F%252F127.0.0.1%253A{port}",
    "healthy@127.0.0.1:{port}",
    "//127.0.0.1:{port}",
    "http://healthy",
    "healthy/../../127.0.0.1:{port}",
    "healthy%2F..%2F127.0.0.1:{port}",
    "healthy\r\nHost: 127.0.0.1:{port}",
    "healthy\x00",
    "http://169.254.169.254/latest/meta-data/",
    "169.254.169.254:80",
    "http://[::ffff:169.254.169.254]/",
    "http://2852039166/",
    "http://0xA9FEA9FE/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "file:///etc/passwd",
    "x" * 5000,
]


@pytest.mark.parametrize("variant", PROBE_VARIANTS, ids=range(len(PROBE_VARIANTS)))
def test_probe_variants_are_refused_and_reach_nothing(world: World, variant: str) -> None:
    target = variant.format(canary=world.canary.url + "/", port=world.canary.port)
    response = get(world.base + "/probe", params={"target": target})
    assert response.status_code == 404
    assert target not in response.text  # no reflection of what was asked
    # Raw, undecoded forms of the same query string.
    raw = httpx.get(f"{world.base}/probe?target={target}", trust_env=False, timeout=5) \
        if "\r" not in target and "\n" not in target and "\x00" not in target else None
    assert raw is None or raw.status_code in (400, 404)
    assert world.canary.requests == []


def test_probe_takes_only_the_first_target_and_ignores_other_parameters(world: World) -> None:
    canary = world.canary.url + "/"
    hits = len(world.healthy.requests)
    response = get(world.base + "/probe", params=[("target", "healthy"), ("target", canary),
                                                  ("module", canary), ("url", canary)])
    assert response.status_code == 200
    assert value(response.text, "sigma_up", target="healthy") == 1
    refused = get(world.base + "/probe", params=[("target", canary), ("target", "healthy")])
    assert refused.status_code == 404
    assert world.canary.requests == []
    # /probe answers from the cache: it never makes a request of its own either.
    assert len(world.healthy.requests) - hits <= 6  # only the 1 s poll loop's own requests


def test_no_other_path_fetches_anything(world: World) -> None:
    canary = world.canary.url
    for path in ("/metrics?target=" + canary, "/?target=" + canary, "/-/ready?url=" + canary,
                 "/" + canary, "/probe/" + canary, "/metrics/../probe?target=" + canary):
        response = httpx.get(world.base + path, trust_env=False, timeout=5)
        assert response.status_code in (200, 400, 404), path
    assert world.canary.requests == []


def test_config_refuses_urls_with_credentials(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - url: http://user:hunter2@127.0.0.1:9/\n")
    result = subprocess.run(sigma_exporter_cmd("check-config", str(config)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "credentials may not be written in the URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
