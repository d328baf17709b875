"""Secrets never leave the exporter.

Planted: a basic-auth password in a file, a bearer token in the environment,
a token in a target URL's query, and user info plus tokens in a job's input
URL that a stub Sigma server reports. Then every output is searched for them:
debug logs, /metrics (text and OpenMetrics), /probe, the landing page, 404
bodies, check-config output and `once` output. The stub checks that the
secrets were really used (sent to it), so the test cannot pass vacuously.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import (
    FIXTURES,
    Proc,
    free_port,
    get,
    promtool_check_metrics,
    sigma_exporter_cmd,
    total,
    value,
    wait_until,
)
from sigma_stub import DUMP, Stub

from sigma_exporter.logsetup import JsonFormatter, LogfmtFormatter
from sigma_exporter.redact import RedactFilter, redact_text, redact_url

pytestmark = pytest.mark.e2e

PASSWORD = "pw-SECRET-file-8c1e"
TOKEN = "tok-SECRET-env-51a9"
QUERY_TOKEN = "q-SECRET-url-77d0"
INPUT_PASSWORD = "in-SECRET-pass-0b3f"
INPUT_TOKEN = "in-SECRET-token-e4a2"
SECRETS = (PASSWORD, TOKEN, QUERY_TOKEN, INPUT_PASSWORD, INPUT_TOKEN)
INPUT_URL = (f"rtmp://publisher:{INPUT_PASSWORD}@origin.example:1935/live/stream"
             f"?token={INPUT_TOKEN}&bitrate=high")


def _progress() -> bytes:
    doc = json.loads((FIXTURES / "progress-sample.json").read_text())
    job = doc["result"].pop("$job_name")
    job["input"][0]["URL"] = INPUT_URL
    doc["result"]["SECRET-FREE-JOB"] = job
    return json.dumps(doc).encode()


PROGRESS = _progress()


def respond(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
    auth = handler.headers.get("Authorization", "")
    if handler.path.startswith("/denied"):
        return 401, {"Content-Type": "text/plain"}, b"no"
    if not auth and "token=" not in handler.path:
        return 401, {}, b""
    kind = json.loads(body or b"{}").get("type", "dump")
    return 200, {"Content-Type": "application/json"}, PROGRESS if kind == "progress" else DUMP


class Run:
    def __init__(self, proc: Proc, base: str, stub: Stub, config: Path) -> None:
        self.proc, self.base, self.stub, self.config = proc, base, stub, config


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    stub = Stub(respond)
    directory = tmp_path_factory.mktemp("secrets")
    (directory / "password").write_text(PASSWORD + "\n")
    config = directory / "sigma.yml"
    closed = free_port()
    config.write_text(
        "defaults:\n  interval: 1s\n  timeout: 800ms\ntargets:\n"
        f"  - name: basic\n    url: {stub.url}/\n"
        f"    auth:\n      username: sigma\n      password_file: {directory / 'password'}\n"
        f"  - name: bearer\n    url: {stub.url}/\n"
        "    auth:\n      bearer_token_env: SIGMA_TEST_TOKEN\n"
        f"  - name: query\n    url: {stub.url}/?token={QUERY_TOKEN}\n"
        f"  - name: denied\n    url: {stub.url}/denied?access_token={QUERY_TOKEN}\n"
        f"  - name: down\n    url: http://127.0.0.1:{closed}/?api_key={QUERY_TOKEN}#{TOKEN}\n"
        "    auth:\n      bearer_token_env: SIGMA_TEST_TOKEN\n")
    port = free_port()
    proc = Proc(sigma_exporter_cmd("--config.file", str(config), "--web.listen-address",
                                   f"127.0.0.1:{port}", "--log.level", "debug"),
                env={"SIGMA_TEST_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}"
    try:
        def polled_twice() -> bool:
            body = get(base + "/metrics").text
            return all(total(body, "sigma_poll_errors_total", target=t) >= 2
                       for t in ("denied", "down")) and \
                all(value(body, "sigma_progress_up", target=t) == 1
                    for t in ("basic", "bearer", "query"))

        wait_until(polled_twice, 30, "every target polled")
        yield Run(proc, base, stub, config)
    finally:
        proc.stop()
        stub.stop()


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked into {where}"


def test_the_secrets_were_really_used(run: Run) -> None:
    sent = " ".join(f"{path} {headers.get('Authorization', '')}"
                    for _, path, headers, _ in run.stub.requests)
    import base64

    assert base64.b64encode(f"sigma:{PASSWORD}".encode()).decode() in sent
    assert f"Bearer {TOKEN}" in sent
    assert QUERY_TOKEN in sent


def test_http_outputs_hold_no_secret(run: Run) -> None:
    metrics = get(run.base + "/metrics").text
    assert_clean(metrics, "/metrics")
    # The job input is there, with its secrets stripped.
    assert value(metrics, "sigma_job_input_info", target="basic",
                 url="rtmp://origin.example:1935/live/REDACTED") == 1
    promtool_check_metrics(metrics)
    openmetrics = get(run.base + "/metrics",
                      headers={"Accept": "application/openmetrics-text"}).text
    assert_clean(openmetrics, "/metrics (OpenMetrics)")
    for target in ("basic", "bearer", "query", "denied", "down"):
        assert_clean(get(run.base + "/probe", params={"target": target}).text, f"/probe {target}")
    landing = get(run.base + "/").text
    assert_clean(landing, "landing page")
    assert "api_key=REDACTED" in landing  # the URL is shown, its secret is not
    for path in ("/nope", f"/probe?target={QUERY_TOKEN}", f"/{TOKEN}", "/probe"):
        response = get(run.base + path)
        assert response.status_code in (400, 404)
        assert_clean(response.text, f"answer to {path}")


def test_logs_hold_no_secret(run: Run) -> None:
    code, out, err = run.proc.stop()
    assert code == 0
    assert "level=debug" in err  # debug logging really was on
    assert 'msg="target down" target=down' in err
    assert 'msg="target down" target=denied' in err
    assert_clean(out + err, "exporter logs")


def test_check_config_holds_no_secret(run: Run) -> None:
    result = subprocess.run(sigma_exporter_cmd("check-config", str(run.config)),
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**__import__("os").environ, "SIGMA_TEST_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert "token=REDACTED" in result.stdout
    assert_clean(result.stdout + result.stderr, "check-config")


def test_check_config_errors_hold_no_secret(tmp_path: Path) -> None:
    config = tmp_path / "sigma.yml"
    for url in (f"ftp://u:{PASSWORD}@h/?token={TOKEN}", f"http://u:{PASSWORD}@h:9/"):
        config.write_text(f"targets:\n  - url: '{url}'\n")
        result = subprocess.run(sigma_exporter_cmd("check-config", str(config)),
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2
        assert_clean(result.stdout + result.stderr, "check-config error")
    config.write_text(f"targets:\n  - url: http://h:9/\n    auth:\n      password: {PASSWORD}\n"
                      "      username: u\n")
    result = subprocess.run(sigma_exporter_cmd("check-config", str(config)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "secrets may not be written in the config file" in result.stderr
    assert_clean(result.stdout + result.stderr, "check-config literal password error")


def test_once_output_holds_no_secret(run: Run) -> None:
    for url, code in ((f"{run.stub.url}/?token={QUERY_TOKEN}", 0),
                      (f"{run.stub.url}/denied?token={QUERY_TOKEN}", 1),
                      (f"http://127.0.0.1:{free_port()}/?secret={QUERY_TOKEN}", 1)):
        result = subprocess.run(sigma_exporter_cmd("once", "--target", url, "--timeout", "2s"),
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == code, result.stderr
        assert_clean(result.stdout + result.stderr, f"once {url}")
    # And with credentials in the URL, `once` refuses without echoing them.
    result = subprocess.run(sigma_exporter_cmd("once", "--target",
                                               f"http://u:{PASSWORD}@127.0.0.1:9/"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert_clean(result.stdout + result.stderr, "once with credentials")


# --- the helper itself ------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("http://u:p@h:1/x?token=abc&a=1", "http://h:1/x?token=REDACTED&a=1"),
    ("https://h/?X-Amz-Signature=s&X-Amz-Credential=c&page=2",
     "https://h/?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&page=2"),
    ("http://h/?api_key=k&apikey=k&access_token=t&session=s&pwd=p",
     "http://h/?api_key=REDACTED&apikey=REDACTED&access_token=REDACTED&session=REDACTED"
     "&pwd=REDACTED"),
    ("http://h/#access_token=t", "http://h/#REDACTED"),
    ("srt://@h:9000?streamid=x&passphrase=p", "srt://h:9000?streamid=x&passphrase=REDACTED"),
    ("http://[::1]:80/", "http://[::1]:80/"),
    ("http://h:99999999/", "http://h:99999999/"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_and_log_filter() -> None:
    import logging

    text = f"GET http://u:{PASSWORD}@h/?token={TOKEN} failed; also '{QUERY_TOKEN}'"
    cleaned = redact_text(text, (QUERY_TOKEN,))
    assert_clean(cleaned, "redact_text")
    assert "http://h/?token=REDACTED" in cleaned
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "url=%s", (text,), None)
    record.__dict__.update(fields=({"error": text, "count": 3}))  # as logsetup.fields() does
    try:
        raise ValueError(f"boom {INPUT_URL}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactFilter((QUERY_TOKEN,)).filter(record)
    assert_clean(record.getMessage(), "log record")
    for formatter in (LogfmtFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert_clean(line, type(formatter).__name__)
        assert "ValueError: boom rtmp://origin.example:1935" in line
        assert line.count("http://h/?token=REDACTED") == 2  # in the message and the field
    assert record.__dict__["fields"]["count"] == 3  # numbers stay numbers


def test_debug_log_of_a_library_error_is_redacted(tmp_path: Path) -> None:
    """Even if a library logs a URL with credentials, the root filter cleans it."""
    code = (
        "import logging; from sigma_exporter import logsetup; "
        "from sigma_exporter.redact import install_log_filter; "
        "logsetup.setup('debug'); install_log_filter(('TOPSECRET',)); "
        "logging.getLogger('some.lib').debug('connecting to http://u:TOPSECRET@h/?key=K1')"
    )
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "TOPSECRET" not in result.stderr and "K1" not in result.stderr
    assert "http://h/?key=REDACTED" in result.stderr


def test_secret_files_are_read_not_echoed(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    config = tmp_path / "sigma.yml"
    config.write_text(f"targets:\n  - url: http://h:9/\n    auth:\n      username: u\n"
                      f"      password_file: {missing}\n")
    result = subprocess.run(sigma_exporter_cmd("check-config", str(config)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "cannot read" in result.stderr
