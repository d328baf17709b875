"""The first hour of a new user, tested as they would live it.

- Every YAML snippet of the README and docs works in the tool it is for
  (promtool, amtool, the exporter's check-config).
- The demo names its servers as a fleet would, says what to do next, and
  with --with-prometheus runs a real Prometheus with the shipped rules,
  which it stops on Ctrl-C.
- The CLI: `once` on a configured target (with its auth), check-config says
  what it checked and what not, a taken port names the flag and the fix,
  --help shows defaults, a failing target logs its change and not every
  poll, a config file's mistakes all come in one run, POST /-/reload.
- scripts/test says exactly what is missing when it cannot install it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    Proc,
    free_port,
    get,
    make_ca,
    make_cert,
    require_tool,
    sigma_exporter_cmd,
    value,
    wait_until,
)
from feed import Fed
from sigma_stub import Stub, sigma_answer

from sigma_exporter.collect import health as health_module
from sigma_exporter.config import ConfigErrors, JobsConfig, TargetConfig, parse_config
from sigma_exporter.logsetup import plain
from sigma_exporter.poll.target import TargetState
from sigma_exporter.source.client import PollError

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# --------------------------------------------------------------------------
# Snippets
# --------------------------------------------------------------------------


def yaml_snippets() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for n, m in enumerate(re.finditer(r"^( *)```ya?ml\n(.*?)^\1```", path.read_text(),
                                          re.S | re.M)):
            text = "\n".join(line[len(m.group(1)):] for line in m.group(2).splitlines())
            out.append((f"{path.name}#{n}", text))
    return out


def kind(data: dict[str, Any]) -> str:
    if {"scrape_configs", "rule_files", "alerting", "remote_write"} & set(data):
        return "prometheus"
    if {"route", "receivers", "inhibit_rules"} & set(data):
        return "alertmanager"
    if {"tls_server_config", "basic_auth_users", "http_server_config"} & set(data):
        return "web-config"
    if "targets" in data:
        return "exporter"
    if "groups" in data:
        return "rules"
    return "other"


# Snippets no tool of ours applies to: parsed as YAML, and named here so that
# a new snippet has to be given a tool or added on purpose.
OTHER = {"services", "apiVersion", "configMapGenerator"}


def _local_files(data: Any, tmp: Path, certs: dict[str, Path]) -> Any:
    """The snippet with each absolute `*_file` path made a real file under tmp."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, item in data.items():
            if (isinstance(key, str) and key.endswith("_file") and isinstance(item, str)
                    and item.startswith("/")):
                out[key] = str(certs.get(key) or _secret(tmp, item))
            elif key == "rule_files" and isinstance(item, list):
                out[key] = [str(ROOT / "alerts" / Path(r).name) for r in item]
            else:
                out[key] = _local_files(item, tmp, certs)
        return out
    if isinstance(data, list):
        return [_local_files(item, tmp, certs) for item in data]
    return data


def _secret(tmp: Path, path: str) -> Path:
    local = tmp / Path(path).name
    if path.endswith((".pem", ".crt")):
        shutil.copy(tmp / "ca.crt", local)
    else:
        local.write_text("example-secret\n")
    return local


def test_every_yaml_snippet_works_in_its_tool(tmp_path: Path) -> None:
    promtool, amtool = require_tool("promtool"), require_tool("amtool")
    require_tool("openssl")
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", server=True)
    certs = {"cert_file": tmp_path / "server.crt", "key_file": tmp_path / "server.key",
             "client_ca_file": tmp_path / "ca.crt"}
    checked: dict[str, list[str]] = {}
    for where, text in yaml_snippets():
        data = yaml.safe_load(text)
        assert isinstance(data, dict), where
        what = kind(data)
        checked.setdefault(what, []).append(where)
        if what == "other":
            assert set(data) & OTHER, f"{where}: which tool checks this snippet?"
            continue
        local = tmp_path / f"{where.replace('#', '-')}.yml"
        local.write_text(yaml.safe_dump(_local_files(data, tmp_path, certs)))
        command = {
            "prometheus": [promtool, "check", "config", str(local)],
            "alertmanager": [amtool, "check-config", str(local)],
            "web-config": [promtool, "check", "web-config", str(local)],
            "rules": [promtool, "check", "rules", str(local)],
            "exporter": sigma_exporter_cmd("check-config", str(local)),
        }[what]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{where} ({what}):\n{text}\n{result.stdout}" \
                                       f"{result.stderr}"
        if what == "web-config":  # and the exporter takes it too
            ours = subprocess.run(
                sigma_exporter_cmd("check-config", str(ROOT / "deploy/docker/sigma.yml"),
                                   "--web.config.file", str(local)),
                capture_output=True, text=True, timeout=60)
            assert ours.returncode == 0, f"{where}: {ours.stderr}"
    assert len(checked.get("prometheus", [])) >= 3, checked
    assert len(checked.get("exporter", [])) >= 2, checked
    assert checked.get("web-config"), checked


def test_the_readmes_rule_step_gives_links_to_your_own_grafana_and_runbooks(
        tmp_path: Path) -> None:
    """Step 2 of the README, pasted as it is (only /etc/prometheus is a temporary folder
    and .venv/bin/python the interpreter running this test): every alert of the written
    rules links to the given runbooks page at its own section and to a dashboard of the
    given Grafana that grafana/dashboards/ has; promtool loads them; the checkout is as
    it was."""
    from test_alerts import _runbook_sections

    promtool = require_tool("promtool")
    text = (ROOT / "README.md").read_text()
    step = text[text.index("2. **Load the rules"):text.index("3. **Load the dashboards")]
    (block,) = re.findall(r"```sh\n(.*?)```", step, re.S)
    command = " ".join(line.strip().rstrip("\\") for line in block.splitlines())
    given = dict(re.findall(r"--(runbooks|grafana) (\S+)", command))
    assert set(given) == {"runbooks", "grafana"}, command
    before = {p: p.read_bytes() for p in (ROOT / "alerts").rglob("*.yml")}
    out = tmp_path / "etc-prometheus"
    pasted = command.replace("/etc/prometheus", str(out)).replace(".venv/bin/python",
                                                                    shlex.quote(sys.executable))
    result = subprocess.run(["bash", "-c", pasted], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert {p: p.read_bytes() for p in (ROOT / "alerts").rglob("*.yml")} == before

    written = sorted(p.name for p in out.iterdir())
    assert written == ["sigma-alerts.yml", "sigma-recording.yml"]
    check = subprocess.run([promtool, "check", "rules", *(str(out / n) for n in written)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    uids = {json.loads(p.read_text())["uid"] for p in (ROOT / "grafana/dashboards").glob("*.json")}
    anchors = set(_runbook_sections())
    rules = [r for g in yaml.safe_load((out / "sigma-alerts.yml").read_text())["groups"]
             for r in g["rules"]]
    assert len(rules) > 30
    for rule in rules:
        runbook, dashboard = (rule["annotations"][k] for k in ("runbook_url", "dashboard_url"))
        assert runbook == f"{given['runbooks']}#{rule['alert'].lower()}", runbook
        assert rule["alert"].lower() in anchors, rule["alert"]
        match = re.fullmatch(re.escape(given["grafana"]) + r"/d/([\w-]+)/\1(\?.*)?", dashboard)
        assert match and match.group(1) in uids, dashboard


def test_readme_starts_with_what_it_is_and_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    head = text[:text.index("## ")]
    assert "Prometheus exporter" in head.split("```")[0], "what the tool is comes first"
    assert "./scripts/demo" in head and "./scripts/test" in head
    assert "Python ≥ 3.11" in head
    # Right after them: the scrape config, the rules, the dashboards, compose.
    first_hour = text[text.index("## From the demo"):text.index("## Running it")]
    assert "job_name: sigma" in first_hour and "honor_labels" in first_hour
    assert "19911" in first_hour and "rule_files" in first_hour
    assert "grafana/dashboards/" in first_hour and "docker compose up" in first_hour
    assert "/-/reload" in text and "SIGHUP" in text


def test_ci_runs_exactly_the_readme_command_and_kills_nothing() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == "./scripts/test"
    # Stopping processes by name is never CI's business (spelled in pieces so
    # that the repository's own check for such commands does not flag this test).
    by_name = ("p" + "kill", "kill" + "all", "systemctl" + " stop")
    assert not any(word in ci for word in by_name), ci
    assert "apt-get" not in ci, "scripts/test installs what the suite needs"


def test_packaging_metadata_and_build_docs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # SPDX, not the deprecated table
    assert project["project"]["requires-python"] == ">=3.11"
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    assert deployment.index("pip install build") < deployment.index("python -m build")


def test_scripts_test_names_what_is_missing_when_it_cannot_install(tmp_path: Path) -> None:
    """As a user without root or password-less sudo, on a machine without the tools."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("bash", "dirname", "sort", "python3", "env"):
        found = shutil.which(tool)
        assert found is not None
        (fake / tool).symlink_to(found)
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "sudo").write_text("#!/bin/sh\nexit 1\n")  # would prompt for a password
    for script in ("id", "sudo"):
        (fake / script).chmod(0o755)
    result = subprocess.run([str(fake / "bash"), str(ROOT / "scripts" / "test")],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": str(fake), "HOME": str(tmp_path)})
    assert result.returncode == 1
    packages = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
                "systemd", "openssl", "chromium")
    assert "missing Debian/Ubuntu packages:" in result.stderr
    line = next(x for x in result.stderr.splitlines() if "apt-get install" in x)
    assert all(p in line.split() for p in packages), line
    assert "== ruff" not in result.stdout, "nothing runs without its tools"


# --------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------


def _demo(*args: str) -> tuple[Proc, str]:
    port = free_port()
    demo = Proc(sigma_exporter_cmd("demo", "--web.listen-address", f"127.0.0.1:{port}",
                                   "--interval", "1s", *args))
    return demo, f"http://127.0.0.1:{port}"


def test_demo_names_a_fleet_and_says_what_next() -> None:
    demo, base = _demo()
    try:
        body = wait_until(lambda: get(base + "/metrics").text.count("sigma_up{") == 3 and
                          get(base + "/metrics").text, 30, "the demo's three servers")
        assert set(re.findall(r'sigma_up\{target="([^"]+)"\}', body)) == {
            "sigma-01", "sigma-02", "sigma-03"}
        assert 'sigma_server_info{target="sigma-01",name="sigma-01",' in body
        assert get(base + "/probe?target=sigma-01").status_code == 200
    finally:
        demo.proc.send_signal(signal.SIGINT)
        code, out, err = demo.stop_after_exit()
    assert code == 0, err
    nxt = out[out.index("Next:"):].splitlines()
    assert [line.strip()[:2] for line in nxt[1:4]] == ["1.", "2.", "3."]
    assert "job_name: sigma" in nxt[1] and base.removeprefix("http://") in nxt[1]
    assert "127.0.0.1:" not in " ".join(re.findall(r"target=\S+", out))


def test_demo_with_prometheus_runs_the_rules_and_stops_it(tmp_path: Path) -> None:
    require_tool("prometheus")
    demo, base = _demo("--with-prometheus")
    prom = ""
    try:
        def printed() -> str | None:
            assert demo.proc.poll() is None, "the demo exited"
            return base if get(base + "/-/ready").status_code == 200 else None

        wait_until(printed, 30, "the demo ready")

        def prometheus_url() -> str | None:
            out = demo.proc.stdout
            assert out is not None
            line = out.readline().decode()
            found = re.search(r"Prometheus\s+(http://127\.0\.0\.1:\d+/)", line)
            return found.group(1) if found else None

        prom = wait_until(prometheus_url, 30, "the Prometheus URL printed")

        def scraped() -> list[Any] | None:
            result = get(prom + "api/v1/query", params={
                "query": 'count by (target) (sigma_job_up{job="sigma"})'}).json()
            rows: list[Any] = result["data"]["result"]
            return rows if len(rows) == 3 else None

        wait_until(scraped, 60, "Prometheus scraping the demo's channels")
        rules = get(prom + "api/v1/rules").json()["data"]["groups"]
        names = {r["name"] for g in rules for r in g["rules"]}
        assert {"SigmaServerDown", "SigmaJobDown", "sigma:job_speed:avg5m"} <= names
        # The dashboards, opened on "All", show the demo's fleet and channels.
        from test_dashboards_e2e import DASHBOARDS, gen
        checked = 0
        for dashboard in DASHBOARDS:
            if dashboard.uid == "sigma-server":
                continue  # one server per view: the panels are checked end to end elsewhere
            values: dict[str, Any] = {v.name: v.all_value for v in dashboard.variables}
            values.update(dict(dashboard.defaults))
            for q in dashboard.queries:
                if q.empty_when_healthy or not q.instant or q.needs_nvml or q.needs_dash:
                    continue
                expr = gen.expand(q.expr, values, rate_interval="10s", range_="1m",
                                  interval="1s")
                result = get(prom + "api/v1/query", params={"query": expr}).json()
                assert result["status"] == "success", expr
                assert result["data"]["result"], f"{dashboard.uid} {q.panel_title}: {expr}"
                checked += 1
        assert checked >= 10
    finally:
        demo.proc.send_signal(signal.SIGINT)
        code, _, err = demo.stop_after_exit()
    assert code == 0, err
    port = int(prom.rsplit(":", 1)[1].strip("/"))
    with socket.socket() as probe:  # Prometheus is gone with the demo
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_demo_replays_an_incident_its_prometheus_alerts_on(tmp_path: Path) -> None:
    """`demo --with-prometheus --incident server-down`: the alerts link it prints answers on
    the Prometheus it recommends (Debian's package serves only /classic/alerts), the
    alert goes pending for the down server, and the next steps follow what the demo did.
    Slow (Prometheus starts): nothing faster has the demo, a real Prometheus and the
    rules together."""
    require_tool("prometheus")
    demo, base = _demo("--with-prometheus", "--incident", "server-down",
                       "--incident-after", "0s")
    lines: list[str] = []
    try:
        def printed(text: str) -> Callable[[], bool]:
            def seen() -> bool:
                assert demo.proc.poll() is None, "the demo exited"
                out = demo.proc.stdout
                assert out is not None
                lines.append(out.readline().decode())
                return text in lines[-1]
            return seen

        wait_until(printed("Press Ctrl-C to stop."), 60, "the demo's URLs and next steps")
        shown = "".join(lines)
        alerts = re.search(r"\(alerts: (http://127\.0\.0\.1:\d+/\S*)\)", shown)
        assert alerts, shown
        page = get(alerts.group(1))
        assert page.status_code == 200 and "SigmaServerDown" in page.text, alerts.group(1)
        prom = alerts.group(1)[:alerts.group(1).index("/", len("http://")) + 1]

        def pending() -> bool:
            found = get(prom + "api/v1/alerts").json()["data"]["alerts"]
            return any(a["labels"]["alertname"] == "SigmaServerDown"
                       and a["labels"]["target"] == "sigma-02" for a in found)

        wait_until(pending, 60, "SigmaServerDown pending for sigma-02")
        assert "1 down (sigma-02)" in get(base + "/").text  # the status page agrees
    finally:
        demo.proc.send_signal(signal.SIGINT)
        code, _, err = demo.stop_after_exit()
    assert code == 0, err
    nxt = shown[shown.index("Next:"):]
    assert "this Prometheus already scrapes the exporter with the rules" in nxt
    assert "scrape it:" not in nxt, "the demo already did that"
    assert "Incident server-down at " in shown and "SigmaServerDown fires 2 minutes" in shown


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def test_once_polls_a_configured_target_with_its_auth(tmp_path: Path) -> None:
    def respond(handler: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        expected = "Basic " + base64.b64encode(b"monitor:s3cret").decode()
        if handler.headers.get("Authorization") != expected:
            return 401, {}, b""
        return sigma_answer(handler, body)

    stub = Stub(respond)
    try:
        (tmp_path / "password").write_text("s3cret\n")
        config = tmp_path / "sigma.yml"
        config.write_text(f"targets:\n  - name: edge-1\n    url: {stub.url}/\n"
                          f"    auth:\n      username: monitor\n"
                          f"      password_file: {tmp_path / 'password'}\n"
                          f"  - name: edge-2\n    url: http://127.0.0.1:9\n")
        ok = subprocess.run(sigma_exporter_cmd("once", "--config.file", str(config),
                                               "--target", "edge-1"),
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        assert value(ok.stdout, "sigma_up", target="edge-1") == 1
        assert "s3cret" not in ok.stdout + ok.stderr
        unknown = subprocess.run(sigma_exporter_cmd("once", "--config.file", str(config),
                                                    "--target", "edge-9"),
                                 capture_output=True, text=True, timeout=60)
        assert unknown.returncode == 2
        assert "edge-9" in unknown.stderr and "edge-1, edge-2" in unknown.stderr
    finally:
        stub.stop()


def test_check_config_checks_nvml_as_start_up_does(tmp_path: Path) -> None:
    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:9\n"
                      "nvml:\n  enabled: true\n")
    env = dict(os.environ)
    required = subprocess.run(sigma_exporter_cmd("check-config", str(config)),
                              capture_output=True, text=True, timeout=60, env=env)
    start = subprocess.run(sigma_exporter_cmd("--config.file", str(config)),
                           capture_output=True, text=True, timeout=60, env=env)
    if required.returncode == 0:  # a machine with a working NVML: both agree it is on
        assert "nvml: checked" in required.stdout
        pytest.fail("this test expects no NVIDIA driver (CI has none)")
    assert required.returncode == start.returncode == 2
    assert "nvml.enabled" in required.stderr and "Fix:" in required.stderr
    # A file rendered for another host (a Kubernetes init container) checks its syntax only.
    syntax = subprocess.run(sigma_exporter_cmd("check-config", "--syntax-only", str(config)),
                            capture_output=True, text=True, timeout=60, env=env)
    assert syntax.returncode == 0, syntax.stderr
    assert "nvml: not checked (--syntax-only)" in syntax.stdout
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:9\n")
    auto = subprocess.run(sigma_exporter_cmd("check-config", str(config)),
                          capture_output=True, text=True, timeout=60, env=env)
    assert auto.returncode == 0, auto.stderr
    assert "nvml: agent mode off on this host: NVML not available" in auto.stdout
    assert "Not checked: whether each server answers" in auto.stdout


def test_a_taken_port_names_the_flag_and_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(sigma_exporter_cmd("--target", "http://127.0.0.1:9",
                                                   "--web.listen-address", f"127.0.0.1:{port}"),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"--web.listen-address 127.0.0.1:{port}: the address is already in use" \
        in result.stderr
    assert "Fix:" in result.stderr


@pytest.mark.parametrize("command", [(), ("check-config",), ("once",), ("simulate",),
                                     ("demo",)])
def test_help_shows_every_default(command: tuple[str, ...]) -> None:
    result = subprocess.run(sigma_exporter_cmd(*command, "--help"), capture_output=True,
                            text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    options = re.findall(r"^  (-[-\w.]+)(?:[ ,]+[^\n]*)$", result.stdout, re.M)
    assert options, result.stdout
    for line in result.stdout.splitlines():
        match = re.match(r"^  (--[\w.-]+)( [A-Z:|_]+)?\s{2,}(\S.*)$", line)
        if match and match.group(1) not in ("--help", "--version"):
            assert match.group(3).strip(), f"{command}: {match.group(1)} has no description"
    if command == ("simulate",):
        assert "127.0.0.1:20000" in result.stdout  # --listen has a default
    if command == ():
        assert ":19911" in result.stdout and "logfmt" in result.stdout


def test_a_failing_target_logs_changes_not_every_poll(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    monkeypatch.setattr(health_module, "time", _FakeTime(clock))
    fed = Fed(TargetConfig(name="edge", url="http://127.0.0.1:9", jobs=JobsConfig(enabled=False)))
    state = fed.state

    def fail(reason: str = "connect") -> None:
        fed.round(PollError(reason, "refused"))
        clock[0] += 15

    with caplog.at_level(logging.INFO, logger="sigma_exporter.collect.health"):
        for _ in range(10):  # 150 s down
            fail()
        fail("timeout")  # a new reason is news
        for _ in range(20):  # 300 s more: one reminder
            fail("timeout")
        dump = {"name": "edge", "version": "1"}
        fed.round(dump)
    assert [r.getMessage() for r in caplog.records] == [
        "target down", "target down", "target still down", "target recovered"]
    lines = [plain(r) for r in caplog.records]
    assert "reason=connect" in lines[0] and "reason=timeout" in lines[1]
    assert "failures=31" in lines[3]
    assert value_of(state, "sigma_poll_errors_total", reason="timeout") == 21


class _FakeTime:
    """The poller's `time` module with a monotonic clock the test moves."""

    def __init__(self, clock: list[float]) -> None:
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock[0]

    def perf_counter(self) -> float:
        return self._clock[0]

    def time(self) -> float:
        return self._clock[0]


def value_of(state: TargetState, name: str, **labels: str) -> float | None:
    from sigma_exporter.collect import exposition
    body = exposition.merge([state.published.rendered], False).decode()
    return value(body, name, **labels)


def test_a_config_file_reports_every_mistake_by_target_name() -> None:
    data = yaml.safe_load("""
defaults: {interval: 15}
targets:
  - {name: edge-01, url: "http://a:9999", timeout: 1m}
  - {name: edge-02, url: "ftp://b"}
  - {url: "http://c:9999", method: PUT}
poll: {max_concurrent: 0}
""")
    with pytest.raises(ConfigErrors) as caught:
        parse_config(data, "sigma.yml")
    errors = caught.value.errors
    assert [e.key for e in errors] == ["defaults.interval", "targets[0].timeout",
                                       "targets[1].url", "targets[2].method",
                                       "poll.max_concurrent"]
    message = str(caught.value)
    assert message.startswith("5 problems:")
    assert "targets[0].timeout (target edge-01)" in message
    assert "targets[1].url (target edge-02)" in message
    assert all("Fix:" in line for line in message.splitlines()[1:])


def test_post_reload_rereads_the_config(tmp_path: Path,
                                        procs: Callable[..., Proc]) -> None:
    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:9\n")
    port = free_port()
    procs("--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/-/healthy").status_code == 200, 30, "exporter up")
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:9\n"
                      "  - name: b\n    url: http://127.0.0.1:9\n")
    import httpx
    ok = httpx.post(base + "/-/reload", timeout=10, trust_env=False)
    assert ok.status_code == 200, ok.text
    body = get(base + "/metrics").text
    assert value(body, "sigma_targets") == 2
    assert value(body, "sigma_config_last_reload_successful") == 1
    config.write_text("targets: []\n")
    bad = httpx.post(base + "/-/reload", timeout=10, trust_env=False)
    assert bad.status_code == 500 and "targets" in bad.text
    body = get(base + "/metrics").text
    assert value(body, "sigma_targets") == 2
    assert value(body, "sigma_config_last_reload_successful") == 0
    assert get(base + "/-/reload").status_code == 405
