"""Alerts end to end: simulator -> exporter -> Prometheus -> Alertmanager -> webhook.

Every piece is a real process on 127.0.0.1 (free ports):

* `sigma-exporter simulate` with three servers and its control API;
* `sigma-exporter` polling them every 1 s (timeout 0.8 s);
* Prometheus 2.42 scraping the exporter every 1 s with Prometheus' default labels
  (job name "sigma"), evaluating every 1 s a time-compressed copy of
  alerts/sigma-recording.yml and alerts/sigma-alerts.yml (`compress_rules`);
* Alertmanager 0.25 with a copy of deploy/alertmanager/alertmanager.yml whose
  receivers send to a webhook in this test (`alertmanager_config`);
* a webhook receiver (http.server thread) recording every notification with
  the receiver it was sent to.

Scenario A takes simulated server sim-2 down (control API fault=refuse):
SigmaServerDown must page (sigma-pager, critical) for sim-2 only, any other
alert of sim-2 must be inhibited, and the page must resolve once sim-2 answers
again. Scenario B slows channel VTV3 on sim-1 to 0.9x real time (a drift;
a deep drop is SigmaJobStalled's): SigmaJobBehindRealtime must page with the
channel in `job_name` and in the description. Scenario C freezes the media
time (PTS) of channel HTV7 on sim-3 while it keeps claiming speed 1:
SigmaJobStalled must page, grouped per server. Scenario D kills the exporter itself: a critical page
(SigmaExporterDown, or SigmaExporterAbsent which inhibits it as this is the
only exporter) must arrive and keep firing while it is dead, and resolve
once a new exporter process answers on the same port. Scenario E adds the
maintenance silence docs/alerting.md documents, with amtool, for sim-3 and
takes sim-3 down: nothing may be notified for it.

Only the rule timings are compressed (a test-only copy of the rules, see
`compress_rules`); expressions, thresholds and the routing tree are the
shipped ones.

Nothing sleeps to decide pass or fail: each step polls with a deadline.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ROOT, Proc, get, require_tool, value
from promstack import (
    Alertmanager,
    Prometheus,
    alertmanager_binary,
    poll,
    prometheus_binary,
)
from stack import Exporter, Simulator, exporter_config

pytestmark = pytest.mark.e2e

ALERTS_DIR = ROOT / "alerts"
RULE_FILES = ("sigma-recording.yml", "sigma-alerts.yml")
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

NAMES = ("sim-1", "sim-2", "sim-3")
DOWN_INDEX, DOWN = 1, "sim-2"  # scenario A
SLOW_INDEX, SLOW_TARGET, SLOW_JOB = 0, "sim-1", "VTV3"  # scenario B
FROZEN_INDEX, FROZEN_TARGET, FROZEN_JOB = 2, "sim-3", "HTV7"  # scenario C

# --------------------------------------------------------------------------
# Time compression of the rules.
#
# The shipped rules wait minutes (`for: 5m`) and look back minutes to hours
# (`avg_over_time(x[5m])`). Here one minute of the real rules becomes one
# second, by a text transformation of the two rule files (nothing else in
# them changes):
#
#   for: D        ->  for: D/60, at least 2s and at most 5s; `for: 0m` stays
#   [D] in PromQL ->  [D/60], at least 30s (30 scrapes at 1 s, so rate(),
#                     increase(), deriv() and avg_over_time() have points to
#                     use, and polls delayed a few seconds on a loaded test
#                     machine, which repeat every job's media time meanwhile,
#                     do not look like stalled channels as they do over 5
#                     or 10 scrapes; in production the window is 2 minutes of
#                     15 s polls and `for` a minute)
#
# D is a single-unit Prometheus duration (30s, 5m, 1h, 6h, 1d); the rules use
# no other form, which `compress_rules` asserts. Annotations keep the original
# wording ("for 10 minutes"): only timing changes, not text.
# --------------------------------------------------------------------------

SCALE = 60
FOR_MIN_S, FOR_MAX_S = 2, 5
RANGE_MIN_S = 30
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FOR = re.compile(r"^(?P<head>\s*for:\s*)(?P<n>\d+)(?P<unit>[smhd])\s*$", re.MULTILINE)
_RANGE = re.compile(r"\[(?P<n>\d+)(?P<unit>[smhd])\]")
_ANY_FOR = re.compile(r"^\s*for:", re.MULTILINE)
_ANY_RANGE = re.compile(r"\[[^\]\[]*\d[smhdwy][^\]\[]*\]")


def _short_for(m: re.Match[str]) -> str:
    seconds = int(m["n"]) * _UNIT_S[m["unit"]]
    if seconds == 0:
        return m.group(0)
    short = min(FOR_MAX_S, max(FOR_MIN_S, seconds // SCALE))
    return f"{m['head']}{short}s"


def _short_range(m: re.Match[str]) -> str:
    seconds = int(m["n"]) * _UNIT_S[m["unit"]]
    return f"[{max(RANGE_MIN_S, seconds // SCALE)}s]"


def compress_rules(text: str) -> str:
    """The rule file `text` with every `for:` and every range window shortened."""
    fors, ranges = len(_ANY_FOR.findall(text)), len(_ANY_RANGE.findall(text))
    text, n_for = _FOR.subn(_short_for, text)
    text, n_range = _RANGE.subn(_short_range, text)
    # Every `for:` and every range selector had the simple form: none escaped.
    assert (n_for, n_range) == (fors, ranges), (n_for, fors, n_range, ranges)
    return text


def write_compressed_rules(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in RULE_FILES:
        path = directory / name
        path.write_text(compress_rules((ALERTS_DIR / name).read_text()))
        paths.append(path)
    check = subprocess.run([require_tool("promtool"), "check", "rules", *map(str, paths)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    return paths


# --------------------------------------------------------------------------
# Alertmanager: the shipped routing tree and inhibitions, webhook receivers.
#
# From deploy/alertmanager/alertmanager.yml: every receiver that has
# integrations (`*_configs`: PagerDuty, Slack) gets instead one webhook to
# <webhook>/<receiver name> with send_resolved; a receiver without any
# (sigma-null) stays without. group_wait, group_interval and repeat_interval
# are shortened wherever the routing tree sets them (and on the root).
# Routes, matchers and inhibit rules are used unchanged.
# --------------------------------------------------------------------------

TIMINGS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1m"}


def alertmanager_config(webhook: str) -> dict[str, Any]:
    original = yaml.safe_load(AM_CONFIG.read_text())
    doc = yaml.safe_load(AM_CONFIG.read_text())
    for receiver in doc["receivers"]:
        integrations = [key for key in receiver if key.endswith("_configs")]
        for key in integrations:
            del receiver[key]
        if integrations:
            receiver["webhook_configs"] = [
                {"url": f"{webhook}/{receiver['name']}", "send_resolved": True}]

    def shorten(route: dict[str, Any], root: bool) -> None:
        for key, short in TIMINGS.items():
            if root or key in route:
                route[key] = short
        for child in route.get("routes", []):
            shorten(child, False)

    shorten(doc["route"], True)
    # Only receivers' integrations and timings differ from the shipped file.
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if k not in TIMINGS and not k.endswith("_configs")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    assert strip(doc) == strip(original)
    assert [r["name"] for r in doc["receivers"]] == [r["name"] for r in original["receivers"]]
    checked: dict[str, Any] = doc
    return checked


# --------------------------------------------------------------------------
# The webhook receiver.
# --------------------------------------------------------------------------


@dataclass
class Notification:
    receiver: str  # the receiver's name as Alertmanager sent it
    path: str  # the URL path it was sent to (/<receiver name>)
    body: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.body["status"])

    @property
    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.body["alerts"]
        return alerts


@dataclass
class Webhook:
    server: ThreadingHTTPServer
    received: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def notifications(self) -> list[Notification]:
        with self.lock:
            return list(self.received)

    def quiet(self) -> bool:
        """Every alert notified as firing has been notified as resolved since."""
        state: dict[tuple[str, str], str] = {}
        for note in self.notifications():
            for alert in note.alerts:
                key = (note.receiver, alert["fingerprint"])
                state[key] = alert["status"]
        return all(status == "resolved" for status in state.values())

    def find(self, receiver: str, status: str, alertname: str, **labels: str
             ) -> tuple[Notification, dict[str, Any]] | None:
        """The first notification to `receiver` with an alert of that status and labels."""
        for note in self.notifications():
            if note.receiver != receiver or note.path != "/" + receiver:
                continue
            for alert in note.alerts:
                ls = alert["labels"]
                if (alert["status"] == status and ls.get("alertname") == alertname
                        and all(ls.get(k) == v for k, v in labels.items())):
                    return note, alert
        return None

    def describe(self) -> str:
        return "notifications:\n" + "\n".join(
            f"  {n.receiver} {n.status}: "
            + ", ".join(f"{a['labels'].get('alertname')}/{a['labels'].get('target')}"
                        f"/{a['status']}" for a in n.alerts)
            for n in self.notifications())


def start_webhook() -> Webhook:
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with hook.lock:
                hook.received.append(Notification(str(body.get("receiver")), self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    hook = Webhook(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    return hook


# --------------------------------------------------------------------------
# The stack.
# --------------------------------------------------------------------------


@dataclass
class Stack:
    control: str
    exporter_url: str
    instance: str  # the exporter's scrape address: the `instance` label
    prom: Prometheus
    am: Alertmanager
    webhook: Webhook
    procs: list[Proc]
    restart_exporter: Any = None  # () -> Proc: a new exporter on the same port
    baseline: int = 0  # notifications received before the tests began

    def control_post(self, path: str, **params: str) -> None:
        response = httpx.post(f"{self.control}{path}", params=params, timeout=5,
                              trust_env=False)
        response.raise_for_status()

    def diagnose(self) -> str:
        parts = [self.webhook.describe()]
        try:
            parts.append("prometheus alerts: " + json.dumps(
                [(a["labels"].get("alertname"), a["labels"].get("target"), a["state"])
                 for a in self.prom.alerts()]))
            parts.append("alertmanager alerts: " + json.dumps(
                [(a["labels"].get("alertname"), a["labels"].get("target"),
                  a["status"]["state"]) for a in self.am.alerts()]))
        except (httpx.HTTPError, AssertionError) as exc:
            parts.append(f"(cannot list alerts: {exc!r})")
        parts += [p.tail(15) for p in self.procs]
        parts += [self.prom.logs(15), self.am.logs(15)]
        return "\n".join(parts)


def pin_job_speeds(control: str, servers: int, log: Path) -> None:
    """Hold every simulated job at speed 1.0, and every queue empty.

    The simulator dips each job below real time in about one 2-minute window
    in 8. With the real rules such a dip never pages (it is shorter than the
    5-minute average plus 5 minutes of `for`); compressed 60 times it lasts
    "two hours" and would page at random. The tests decide which job is slow.
    Likewise a job waits in the queue in about one 5-minute window in 10:
    shorter than SigmaJobQueueBacklog's 15 minutes of `for`, but five hours
    once compressed.
    """
    def jobs(i: int) -> list[str]:
        response = httpx.get(f"{control}/servers/{i}/emitted", timeout=5, trust_env=False)
        response.raise_for_status()
        return sorted(response.json())

    names = poll(lambda: [jobs(i) for i in range(servers)], 30, "the simulator's control API",
                 lambda: log.read_text())
    for i, server_jobs in enumerate(names):
        assert server_jobs, f"server {i} has no jobs"
        httpx.post(f"{control}/servers/{i}/queue", params={"jobs": "0"},
                   timeout=5, trust_env=False).raise_for_status()
        for job in server_jobs:
            response = httpx.post(f"{control}/servers/{i}/jobs/{job}", params={"speed": "1"},
                                  timeout=5, trust_env=False)
            response.raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alerts-e2e")
    rule_files = write_compressed_rules(tmp / "rules")
    webhook = start_webhook()
    procs: list[Proc] = []
    am: Alertmanager | None = None
    prom: Prometheus | None = None
    try:
        sim = Simulator(tmp, len(NAMES))
        procs.append(sim.proc)
        control = sim.control
        pin_job_speeds(control, len(NAMES), tmp / "simulator.log")
        config = tmp / "sigma.yml"
        config.write_text(exporter_config(dict(zip(NAMES, sim.urls, strict=True))))
        exporter = Exporter(config, tmp)
        procs.append(exporter.proc)
        exporter_port, exporter_url = exporter.port, exporter.base
        am = Alertmanager(tmp / "am", alertmanager_config(webhook.url))
        prom = Prometheus(tmp / "prom", scrape_targets=[f"127.0.0.1:{exporter_port}"],
                          rule_files=rule_files, alertmanager=am.address)
        stack = Stack(control, exporter_url,
                      f"127.0.0.1:{exporter_port}", prom, am, webhook, procs)

        def restart_exporter() -> Proc:
            proc = Exporter(config, tmp, port=exporter_port, log_name="exporter-2.log").proc
            procs.append(proc)
            return proc

        stack.restart_exporter = restart_exporter
        poll(lambda: all(value(get(exporter_url + "/metrics").text, "sigma_up", target=n) == 1
                         for n in NAMES), 30, "the exporter sees every server up",
             stack.diagnose)
        prom.wait_targets_up(1)
        poll(lambda: prom.value("count(sigma_up == 1)") == len(NAMES), 20,
             "Prometheus has sigma_up 1 for every server", stack.diagnose)
        # Start-up transients: before Prometheus' first scrape the job has no
        # `up == 1`, and SigmaExporterAbsent's compressed `for` (3 s; 3 minutes
        # in production, twelve scrapes) can be shorter than a slow first
        # scrape. Wait until nothing fires and every notification sent so far
        # has its "resolved"; the tests look at what comes after.
        # And the shortest window of the compressed rules must hold data first.
        poll(lambda: (prom.value(
                f"min(count_over_time(sigma_job_media_time_seconds[{RANGE_MIN_S}s]))") or 0)
             >= RANGE_MIN_S * 0.8, 3 * RANGE_MIN_S, "full rule windows", stack.diagnose)
        poll(lambda: prom.alerts() == [] and stack.am.alerts() == []
             and stack.webhook.quiet(), 60, "a quiet start", stack.diagnose)
        stack.baseline = len(webhook.notifications())
        yield stack
    finally:
        for server in (prom, am):
            if server is not None:
                server.stop()
        for proc in reversed(procs):
            proc.stop()
        webhook.server.shutdown()
        webhook.server.server_close()


# --------------------------------------------------------------------------
# Tests.
# --------------------------------------------------------------------------


def test_prometheus_and_alertmanager_are_installed() -> None:
    # Missing binaries fail the suite (never skip); this names them plainly.
    assert prometheus_binary() and alertmanager_binary()


def test_rule_compression_is_the_documented_one() -> None:
    text = "        for: 15m\n        for: 0m\n        for: 1m\n  expr: rate(x[5m]) + y[1h]\n"
    assert compress_rules(text) == (
        "        for: 5s\n        for: 0m\n        for: 2s\n  expr: rate(x[30s]) + y[60s]\n")
    shipped = compress_rules((ALERTS_DIR / "sigma-alerts.yml").read_text())
    assert not re.search(r"^\s*for: (?!0m$)\d+[mhd]$", shipped, re.MULTILINE)


def test_a_down_server_pages_once_inhibits_the_rest_and_resolves(stack: Stack) -> None:
    stack.control_post(f"/servers/{DOWN_INDEX}/fault", mode="refuse")
    try:
        found = poll(lambda: stack.webhook.find("sigma-pager", "firing", "SigmaServerDown",
                                                target=DOWN),
                     40, f"SigmaServerDown for {DOWN} paged", stack.diagnose)
        _, alert = found
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["instance"] == stack.instance
        assert alert["labels"]["job"] == "sigma"
        assert DOWN in alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"].endswith("#sigmaserverdown")

        # Inhibition: while SigmaServerDown fires, any other Sigma alert of the
        # same instance and target is suppressed. The data alerts cannot fire
        # for a down target (its data series are gone), so a channel alert for
        # it is sent to Alertmanager the way Prometheus sends alerts; the real
        # SigmaServerDown from Prometheus must inhibit it, and it must never
        # reach a receiver.
        now = time.time()
        stack.am.post_alerts([{
            "labels": {"alertname": "SigmaJobBehindRealtime", "severity": "critical",
                       "job": "sigma", "job_name": "VTV1", "instance": stack.instance,
                       "target": DOWN},
            "annotations": {"description": "synthetic: must be inhibited"},
            "startsAt": _rfc3339(now), "endsAt": _rfc3339(now + 300),
        }])

        def inhibited() -> list[dict[str, Any]] | None:
            mine = [a for a in stack.am.alerts() if a["labels"].get("target") == DOWN]
            source = [a for a in mine if a["labels"]["alertname"] == "SigmaServerDown"]
            others = [a for a in mine if a["labels"]["alertname"] != "SigmaServerDown"]
            if not (source and source[0]["status"]["state"] == "active"
                    and any(a["labels"]["alertname"] == "SigmaJobBehindRealtime"
                            for a in others)):
                return None
            ok = all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]
                     for a in others)
            return others if ok else None

        others = poll(inhibited, 15, f"the other alerts of {DOWN} inhibited", stack.diagnose)
        fingerprint = next(a["fingerprint"] for a in stack.am.alerts()
                           if a["labels"]["alertname"] == "SigmaServerDown")
        assert all(fingerprint in a["status"]["inhibitedBy"] for a in others)
        # Withdraw the synthetic alert before the inhibition ends.
        stack.am.post_alerts([{
            "labels": {"alertname": "SigmaJobBehindRealtime", "severity": "critical",
                       "job": "sigma", "job_name": "VTV1", "instance": stack.instance,
                       "target": DOWN},
            "startsAt": _rfc3339(now), "endsAt": _rfc3339(time.time()),
        }])
    finally:
        stack.control_post(f"/servers/{DOWN_INDEX}/fault", mode="none")

    poll(lambda: stack.webhook.find("sigma-pager", "resolved", "SigmaServerDown", target=DOWN),
         40, f"SigmaServerDown for {DOWN} resolved", stack.diagnose)

    notes = stack.webhook.notifications()[stack.baseline:]
    # Of the down server, only SigmaServerDown was ever notified.
    for note in notes:
        for alert in note.alerts:
            if alert["labels"].get("target") == DOWN:
                assert alert["labels"]["alertname"] == "SigmaServerDown", stack.diagnose()
                # Paged, and (criticals reach chat too) posted in chat.
                assert note.receiver in ("sigma-pager", "sigma-chat"), stack.diagnose()
    assert stack.webhook.find("sigma-chat", "firing", "SigmaServerDown", target=DOWN), (
        stack.diagnose())
    # Nothing paged for the servers that stayed healthy.
    pages = [a["labels"] for n in notes if n.receiver == "sigma-pager" for a in n.alerts]
    assert all(ls.get("target") == DOWN for ls in pages), stack.diagnose()
    # And Prometheus itself had no critical alert firing for them either.
    critical = [a["labels"] for a in stack.prom.alerts()
                if a["labels"].get("severity") == "critical" and a["state"] == "firing"
                and a["labels"].get("target") != DOWN]
    assert critical == [], stack.diagnose()


def test_a_job_behind_real_time_pages_with_its_name(stack: Stack) -> None:
    # A drift, not a dip: below 0.8 the window is SigmaJobStalled's.
    stack.control_post(f"/servers/{SLOW_INDEX}/jobs/{SLOW_JOB}", speed="0.9")
    try:
        found = poll(lambda: stack.webhook.find("sigma-pager", "firing",
                                                "SigmaJobBehindRealtime", target=SLOW_TARGET),
                     40, f"SigmaJobBehindRealtime for {SLOW_JOB} paged", stack.diagnose)
    finally:
        stack.control_post(f"/servers/{SLOW_INDEX}/jobs/{SLOW_JOB}", speed="1")
    note, alert = found
    labels = alert["labels"]
    # The channel is named in `job_name`; `job` stays the scrape job.
    assert labels["job_name"] == SLOW_JOB, labels
    assert labels["job"] == "sigma", labels
    assert labels["severity"] == "critical"
    assert labels["instance"] == stack.instance
    description = alert["annotations"]["description"]
    assert f"Job {SLOW_JOB} on Sigma target {SLOW_TARGET}" in description, description
    # Only the slowed channel fell behind.
    behind = {a["labels"].get("job_name") for n in stack.webhook.notifications() for a in n.alerts
              if a["labels"]["alertname"] == "SigmaJobBehindRealtime"}
    assert behind == {SLOW_JOB}, stack.diagnose()
    # Channel pages are grouped per server, whatever the alert.
    assert note.body["groupLabels"] == {"job": "sigma", "instance": stack.instance,
                                        "target": SLOW_TARGET}
    # Criticals reach chat too.
    poll(lambda: stack.webhook.find("sigma-chat", "firing", "SigmaJobBehindRealtime",
                                    target=SLOW_TARGET),
         20, "the page also in chat", stack.diagnose)


def test_a_stalled_channel_pages(stack: Stack) -> None:
    """Running at speed 1 by its own account, but its media time stands still."""
    path = f"/servers/{FROZEN_INDEX}/jobs/{FROZEN_JOB}"
    stack.control_post(path, freeze="1")
    try:
        found = poll(lambda: stack.webhook.find("sigma-pager", "firing", "SigmaJobStalled",
                                                target=FROZEN_TARGET, job_name=FROZEN_JOB),
                     40, f"SigmaJobStalled for {FROZEN_JOB} paged", stack.diagnose)
    finally:
        stack.control_post(path, freeze="0")
    note, alert = found
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == "sigma" and alert["labels"]["instance"] == stack.instance
    assert note.body["groupLabels"] == {"job": "sigma", "instance": stack.instance,
                                        "target": FROZEN_TARGET}
    assert alert["annotations"]["runbook_url"].endswith("#sigmajobstalled")
    assert "/d/sigma-jobs/" in alert["annotations"]["dashboard_url"]
    # The channel did not go down: no SigmaJobDown for it.
    assert not stack.webhook.find("sigma-pager", "firing", "SigmaJobDown",
                                  target=FROZEN_TARGET), stack.diagnose()
    poll(lambda: stack.webhook.find("sigma-pager", "resolved", "SigmaJobStalled",
                                    target=FROZEN_TARGET, job_name=FROZEN_JOB),
         40, "SigmaJobStalled resolved once the media time moves", stack.diagnose)


SILENCED_INDEX, SILENCED = 2, "sim-3"  # scenario E


def _documented_central_silence() -> list[str]:
    """The matchers of the documented silence for one server behind a central exporter."""
    text = (ROOT / "docs" / "alerting.md").read_text(encoding="utf-8")
    commands = [ln for ln in text.splitlines() if ln.startswith("amtool silence add")]
    assert len(commands) >= 2, "docs/alerting.md: the maintenance silences"
    matchers = re.findall(r"'(\w+=\"[^\"]*\")'", commands[1])
    assert matchers == ['target="sigma-01"'], matchers
    return [m.replace("sigma-01", SILENCED) for m in matchers]


def test_the_documented_maintenance_silence_mutes_a_server(stack: Stack) -> None:
    """Planned work: amtool's silence (as docs/alerting.md writes it) mutes the page."""
    amtool = require_tool("amtool")
    url = f"--alertmanager.url=http://{stack.am.address}"
    added = subprocess.run(
        [amtool, "silence", "add", url, "--author=e2e", "--duration=10m",
         "--comment=planned Sigma upgrade", *_documented_central_silence()],
        capture_output=True, text=True, timeout=30, check=False)
    assert added.returncode == 0, added.stdout + added.stderr
    silence_id = added.stdout.strip()
    before = len(stack.webhook.notifications())
    stack.control_post(f"/servers/{SILENCED_INDEX}/fault", mode="refuse")
    try:
        def silenced() -> bool:
            mine = [a for a in stack.am.alerts() if a["labels"].get("target") == SILENCED
                    and a["labels"]["alertname"] == "SigmaServerDown"]
            return bool(mine) and all(a["status"]["state"] == "suppressed"
                                      and silence_id in a["status"]["silencedBy"] for a in mine)

        poll(silenced, 40, f"SigmaServerDown for {SILENCED} silenced", stack.diagnose)
        # A window of several group intervals (1 s here) in which a notification
        # would have gone out; its absence, not a speed, is what is checked.
        time.sleep(3)
        sent = [a for n in stack.webhook.notifications()[before:] for a in n.alerts
                if a["labels"].get("target") == SILENCED]
        assert sent == [], stack.diagnose()
    finally:
        stack.control_post(f"/servers/{SILENCED_INDEX}/fault", mode="none")
        subprocess.run([amtool, "silence", "expire", url, silence_id], capture_output=True,
                       text=True, timeout=30, check=False)
    poll(lambda: not any(a["labels"].get("target") == SILENCED
                         and a["labels"]["alertname"] == "SigmaServerDown"
                         and a["state"] == "firing" for a in stack.prom.alerts()),
         40, f"{SILENCED} back", stack.diagnose)


EXPORTER_DEAD = ("SigmaExporterDown", "SigmaExporterAbsent")


def test_a_dead_exporter_pages_and_keeps_paging(stack: Stack) -> None:
    """Runs last: the exporter is killed, then a new one starts on the same port."""
    exporter = stack.procs[1]
    assert exporter.alive()
    before = len(stack.webhook.notifications())
    exporter.stop()

    def paged() -> tuple[Notification, dict[str, Any]] | None:
        for name in EXPORTER_DEAD:
            found = stack.webhook.find("sigma-pager", "firing", name, job="sigma")
            if found:
                return found
        return None

    try:
        _, alert = poll(paged, 40, "a page for the dead exporter", stack.diagnose)
        assert alert["labels"]["severity"] == "critical"
        if alert["labels"]["alertname"] == "SigmaExporterDown":
            assert alert["labels"]["instance"] == stack.instance

        # Still paging a while later: firing in Prometheus, active in Alertmanager.
        def still_firing() -> bool:
            time.sleep(0.5)
            firing = {a["labels"]["alertname"] for a in stack.prom.alerts()
                      if a["state"] == "firing"}
            active = {a["labels"]["alertname"] for a in stack.am.alerts()
                      if a["status"]["state"] == "active"}
            return bool(firing & set(EXPORTER_DEAD)) and bool(active & set(EXPORTER_DEAD))

        for _ in range(3):
            assert poll(still_firing, 20, "the exporter page still firing", stack.diagnose)
        # The dead exporter's server and channel alerts stay quiet: no page
        # pretends a Sigma server or channel failed.
        for n in stack.webhook.notifications()[before:]:
            if n.receiver == "sigma-pager" and n.status == "firing":
                names = {a["labels"]["alertname"] for a in n.alerts}
                assert not names & {"SigmaServerDown", "SigmaJobDown"}, stack.diagnose()
    finally:
        stack.restart_exporter()
    poll(lambda: all(stack.webhook.find("sigma-pager", "resolved", name, job="sigma")
                     or not stack.webhook.find("sigma-pager", "firing", name, job="sigma")
                     for name in EXPORTER_DEAD),
         60, "the exporter page resolved once a new exporter answers", stack.diagnose)


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
