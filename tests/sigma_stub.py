"""`Stub`: a tiny threaded HTTP server on 127.0.0.1 that answers like a Sigma
server (or however a test wants), and the `stubs` fixture that stops them.

Shared by the limits, SSRF, secrets, starvation and first-hour tests; a test
module that wants the fixture imports it by name (`from sigma_stub import
stubs as stubs`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import FIXTURES

DUMP = (FIXTURES / "dump-sample.json").read_bytes()
# The complete documented dump: its tail holds a licence key (nats.license).
DUMP_COMPLETE = (FIXTURES / "dump-sample-complete.json").read_bytes()
PROGRESS = (FIXTURES / "progress-sample.json").read_bytes()


class Stub:
    """An HTTP server on 127.0.0.1 whose answers come from `respond`.

    `respond(handler, body)` returns (status, headers, body). Every request is
    recorded in `requests` (method, path, headers, body); `active`/`peak`
    count simultaneous requests.
    """

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler, bytes],
                                         tuple[int, dict[str, str], bytes]]) -> None:
        stub = self
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with stub._lock:
                    stub.requests.append((self.command, self.path, dict(self.headers), body))
                    stub.active += 1
                    stub.peak = max(stub.peak, stub.active)
                try:
                    status, headers, answer = respond(self, body)
                finally:
                    with stub._lock:
                        stub.active -= 1
                self.send_response(status)
                for name, text in headers.items():
                    self.send_header(name, text)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sigma_answer(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str],
                                                                        bytes]:
    """Answer like a healthy Sigma server: dump or progress by request type."""
    kind = json.loads(body or b"{}").get("type", "dump")
    return 200, {"Content-Type": "application/json"}, PROGRESS if kind == "progress" else DUMP


@pytest.fixture
def stubs() -> Iterator[Callable[..., Stub]]:
    started: list[Stub] = []

    def start(respond: Callable[[BaseHTTPRequestHandler, bytes],
                                tuple[int, dict[str, str], bytes]] = sigma_answer) -> Stub:
        stub = Stub(respond)
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()
