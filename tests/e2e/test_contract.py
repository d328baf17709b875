"""The metric contract (1.0): what Prometheus users may rely on.

- No label of ours collides with Prometheus' own (`job`, `instance`): the
  channel is `job_name`, and no rule, dashboard, Alertmanager route or doc
  names a label the exporter does not emit.
- No first event is lost: counters with a closed set of label values exist
  at 0 from a target's first poll; the panels that read counters born at
  their first increment see that increment.
- A bug of ours while handling one target is that target's `sigma_up 0`
  (reason `internal`), never its old data, never the other targets' problem.
- Durations are Prometheus' own, everywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_ports, load_fixture, require_tool, sigma_exporter_cmd, value
from feed import Fed

from sigma_exporter.collect import exposition
from sigma_exporter.collect.sigma import DumpSource
from sigma_exporter.collect.source import COMMON_REASONS
from sigma_exporter.config import (
    Config,
    ConfigError,
    JobsConfig,
    TargetConfig,
    format_duration,
    parse_config,
    parse_duration,
)
from sigma_exporter.logsetup import plain
from sigma_exporter.metrics import DEFINITIONS
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.source.client import REASONS, PollError

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------

EMITTED = {label for d in DEFINITIONS for label in d.labels}
# Labels Prometheus and Alertmanager add themselves (alertstate: on the ALERTS
# series the dashboards' firing-alerts panels and the held channel alerts
# read), and the ones our rules and shipped configs set on purpose (`blind`:
# SigmaMonitoringBlind says why).
PROMETHEUS = {"job", "instance", "__name__", "alertname", "alertstate", "severity", "shard",
              "blind"}


def test_no_metric_has_a_label_prometheus_owns() -> None:
    for d in DEFINITIONS:
        assert not {"job", "instance"} & set(d.labels), d.name
        assert not any(label.startswith("exported_") for label in d.labels), d.name
    assert "job_name" in EMITTED
    per_channel = [d for d in DEFINITIONS if d.name.startswith("sigma_job_")]
    assert per_channel and all("job_name" in d.labels for d in per_channel)


def _documented_exposition() -> str:
    fed = Fed(TargetConfig(name="sigma-01", url="http://127.0.0.1:9999"))
    fed.round(load_fixture("dump-sample.json"), load_fixture("progress-sample.json"),
              received_at=1709398433.0)
    return fed.text()


def test_no_emitted_series_has_a_label_prometheus_owns() -> None:
    body = _documented_exposition()
    labels = set(re.findall(r"[{,]([a-zA-Z_]\w*)=\"", body))
    assert "job_name" in labels
    assert not labels & {"job", "instance"}


# PromQL label names: in matchers, groupings and label functions.
_MATCHER = re.compile(r"(?<![{$])\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_LABEL_VALUES = re.compile(r"label_values\([^,()]*(?:\([^()]*\))?[^,()]*,\s*(\w+)\s*\)")
_TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def promql_labels(expr: str) -> set[str]:
    found: set[str] = set()
    for block in _MATCHER.findall(expr):
        found |= set(_MATCHER_LABEL.findall(re.sub(r'"(?:[^"\\]|\\.)*"', '""', block)))
    for group in _GROUPING.findall(expr):
        found |= {g.strip() for g in group.split(",") if g.strip() not in ("", "...")}
    found |= set(_LABEL_VALUES.findall(expr))
    return found


def test_the_label_scanner_sees_what_it_must() -> None:
    expr = ('sum by (target, exported_job) (rate(x{job="sigma",job_name=~"$job"}[5m])) '
            'and on (instance) y unless ignoring (gpu) label_values(z{a="1"}, code)')
    assert promql_labels(expr) == {"target", "exported_job", "job", "job_name", "instance",
                                   "gpu", "a", "code"}


def _rule_references() -> list[tuple[str, set[str]]]:
    out = []
    for path in (ROOT / "alerts" / "sigma-recording.yml", ROOT / "alerts" / "sigma-alerts.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule["record"]
                used = promql_labels(rule["expr"])
                for text in (rule.get("annotations") or {}).values():
                    used |= set(_TEMPLATE_LABEL.findall(text))
                    for query in re.findall(r'query \(printf "([^"]*)"', text):
                        used |= promql_labels(query.replace("'", '"'))
                out.append((f"{path.name}:{name}", used))
    return out


def _dashboard_references() -> list[tuple[str, set[str]]]:
    out = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        text = path.read_text()
        doc = json.loads(text)
        used: set[str] = set()
        for var in doc["templating"]["list"]:
            used |= promql_labels(str(var.get("query", "")))
        panels = [p for p in doc["panels"]] + [c for p in doc["panels"]
                                               for c in p.get("panels", [])]
        for panel in panels:
            for target in panel.get("targets", []):
                used |= promql_labels(target.get("expr", ""))
                used |= set(_LEGEND.findall(target.get("legendFormat", "")))
        used |= set(re.findall(r"\$\{__data\.fields\.(\w+)\}", text))
        out.append((path.name, used))
    return out


def _alertmanager_references() -> list[tuple[str, set[str]]]:
    path = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    config = yaml.safe_load(path.read_text())
    used: set[str] = set()
    for rule in config.get("inhibit_rules", []):
        used |= set(rule.get("equal", []))
        for matcher in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            used |= set(_MATCHER_LABEL.findall(matcher))

    def routes(route: dict[str, Any]) -> None:
        nonlocal used
        used |= {g for g in route.get("group_by", []) if g != "..."}
        for matcher in route.get("matchers", []):
            used |= set(_MATCHER_LABEL.findall(matcher))
        for child in route.get("routes", []):
            routes(child)

    routes(config["route"])
    return [(path.name, used)]


def _doc_references() -> list[tuple[str, set[str]]]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        used: set[str] = set()
        for code in re.findall(r"```(?:promql|yaml|sh|text)?\n(.*?)```|`([^`\n]+)`", text,
                               flags=re.S):
            snippet = code[0] or code[1]
            if "{" in snippet or "(" in snippet:
                used |= {label for label in promql_labels(snippet)
                         if not label.isupper()}  # shell's ${VAR} and jq keys aside
        used |= set(re.findall(r"\b(exported_\w+)", text))
        out.append((path.name, used))
    return out


def test_nothing_names_a_label_the_exporter_does_not_emit() -> None:
    allowed = EMITTED | PROMETHEUS
    references = [*_rule_references(), *_dashboard_references(),
                  *_alertmanager_references(), *_doc_references()]
    assert len(references) > 40
    wrong = {where: sorted(used - allowed) for where, used in references if used - allowed}
    assert wrong == {}
    everything = set().union(*(used for _, used in references))
    assert "job_name" in everything and "exported_job" not in everything


# --------------------------------------------------------------------------
# Counters: no first event lost
# --------------------------------------------------------------------------


def _poll_errors(body: str) -> dict[tuple[str, str], float]:
    found = re.findall(r'sigma_poll_errors_total\{target="t",source="(\w+)",reason="(\w+)"\} '
                       r"(\S+)", body)
    return {(source, reason): float(v) for source, reason, v in found}


def test_closed_counters_exist_at_zero_from_the_first_poll() -> None:
    fed = Fed(TargetConfig(name="t", url="http://127.0.0.1:9999"))
    fed.round(load_fixture("dump-sample.json"), PollError("timeout", "no answer"),
              received_at=1.0)
    body = fed.text()
    errors = _poll_errors(body)
    assert set(errors) == {(s, r) for s in ("dump", "progress")
                           for r in (*REASONS, *COMMON_REASONS)}
    assert errors.pop(("progress", "timeout")) == 1
    assert set(errors.values()) == {0.0}
    assert value(body, "sigma_server_restarts_total", target="t") == 0
    # Progress off: no progress series at all.
    off = Fed(TargetConfig(name="t", url="http://127.0.0.1:9999",
                           jobs=JobsConfig(enabled=False)))
    off.round(PollError("connect", "refused"))
    body = off.text()
    assert {s for s, _ in _poll_errors(body)} == {"dump"}
    assert _poll_errors(body)[("dump", "connect")] == 1


def _panel_queries_of(counters: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        doc = json.loads(path.read_text())
        panels = [p for p in doc["panels"]] + [c for p in doc["panels"]
                                               for c in p.get("panels", [])]
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                if any(c in expr for c in counters):
                    out.append((f"{path.name}: {panel['title']}", expr))
    return out


def test_panels_see_a_counter_born_at_its_first_increment(tmp_path: Path) -> None:
    """Replay a counter born at 1 (never 0) through every panel that reads one:
    each must show the event (a positive value) right after it happened."""
    promtool = require_tool("promtool")
    counters = ("sigma_parse_errors_total", "sigma_job_errors_total")
    queries = _panel_queries_of(counters)
    assert len(queries) >= 4
    labels = 'job="sigma", instance="e:1", target="s1"'
    tests = []
    for where, expr in queries:
        expanded = (expr.replace("$__rate_interval", "2m").replace("$__range", "1h")
                    .replace('"$target"', '"s1"').replace('"$job"', '".*"')
                    .replace('"${target}"', '"s1"').replace("$worst", "10"))
        assert "$" not in expanded, (where, expanded)
        tests.append({
            "interval": "1m",
            "input_series": [
                {"series": f'sigma_parse_errors_total{{{labels}, field="APPS.Life"}}',
                 "values": "_x5 1x10"},
                {"series": f'sigma_job_errors_total{{{labels}, job_name="VTV1", code="X"}}',
                 "values": "_x5 1x10"},
                {"series": f'sigma_job_up{{{labels}, job_name="VTV1"}}', "values": "1x15"},
            ],
            "promql_expr_test": [{"expr": f"count(({expanded}) > 0)", "eval_time": "6m",
                                  "exp_samples": [{"labels": "{}", "value": 1}]}],
        })
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------
# An internal error is up 0, never old data
# --------------------------------------------------------------------------


def test_an_internal_error_is_up_0_counted_logged_once(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    real_render = exposition.render_parts
    broken = {"on": False}

    def render(parts: Any) -> Any:
        # A bug that only hits the data of target "bad" (its health renders).
        parts = list(parts)
        infos = [entry for part in parts for entry in part.get("sigma_server_info", [])]
        if broken["on"] and any(labels[0] == "bad" for labels, _ in infos):
            raise ZeroDivisionError("injected rendering bug")
        return real_render(parts)

    monkeypatch.setattr(exposition, "render_parts", render)

    async def run() -> None:
        servers = make_servers(3, gpus=1, seed=3, jobs=2)
        first = free_ports(3)
        sim = Simulator(servers, listen_host="127.0.0.1", first_port=first)
        async with sim:
            names = ("good-1", "bad", "good-2")
            config = Config(tuple(TargetConfig(name=n, url=sim.url(i), timeout=2.0)
                                  for i, n in enumerate(names)))
            poller = Poller(config)
            try:
                await poller.poll_all_once()  # all good: "bad" has data now
                body = _body(poller, "bad")
                assert value(body, "sigma_up", target="bad") == 1
                assert value(body, "sigma_host_cpu_cores", target="bad") is not None
                broken["on"] = True
                for _ in range(3):
                    await poller.poll_all_once()
                body = _body(poller, "bad")
                assert value(body, "sigma_up", target="bad") == 0
                assert value(body, "sigma_poll_errors_total", target="bad", source="dump",
                             reason="internal") == 3
                # Never the old data.
                assert value(body, "sigma_host_cpu_cores", target="bad") is None
                assert "sigma_job_up" not in body
                for good in ("good-1", "good-2"):
                    other = _body(poller, good)
                    assert value(other, "sigma_up", target=good) == 1
                    assert value(other, "sigma_host_cpu_cores", target=good) is not None
                    assert value(other, "sigma_poll_errors_total", target=good,
                                 source="dump", reason="internal") == 0
                assert "ZeroDivisionError" in (poller.targets["bad"].health.last_error or "")
                broken["on"] = False
                await poller.poll_all_once()
                assert value(_body(poller, "bad"), "sigma_up", target="bad") == 1
            finally:
                await poller.stop()

    with caplog.at_level(logging.DEBUG, logger="sigma_exporter.collect.health"):
        asyncio.run(run())
    tracebacks = [r for r in caplog.records if r.exc_info and "internal" in plain(r)]
    assert len(tracebacks) == 1, [plain(r) for r in tracebacks]
    assert "target=bad" in plain(tracebacks[0])


def _body(poller: Poller, name: str) -> str:
    return exposition.merge([poller.targets[name].published.rendered], False).decode()


def test_an_internal_error_on_the_first_poll_still_makes_the_exporter_ready(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug outside rendering (here: in the fetch itself) on the very first
    poll: the round still completes (ready), the target reads up 0."""
    async def exploding_fetch(self: Any, payload: Any, method: str = "POST") -> Any:
        raise RuntimeError("injected fetch bug")

    async def run() -> None:
        servers = make_servers(2, gpus=1, seed=5, jobs=1)
        first = free_ports(2)
        sim = Simulator(servers, listen_host="127.0.0.1", first_port=first)
        async with sim:
            config = Config(tuple(TargetConfig(name=f"s{i}", url=sim.url(i), timeout=2.0)
                                  for i in range(2)))
            poller = Poller(config)
            dump = poller.targets["s1"].sources[0]
            assert isinstance(dump, DumpSource)
            client = dump.client
            monkeypatch.setattr(client, "fetch", exploding_fetch.__get__(client))
            try:
                await asyncio.wait_for(poller.poll_all_once(), 10)
                assert poller.first_round.is_set()
                assert value(_body(poller, "s1"), "sigma_up", target="s1") == 0
                assert value(_body(poller, "s1"), "sigma_poll_errors_total", target="s1",
                             source="dump", reason="internal") == 1
                assert value(_body(poller, "s0"), "sigma_up", target="s0") == 1
            finally:
                await poller.stop()

    asyncio.run(run())


# --------------------------------------------------------------------------
# Durations, as Prometheus writes them
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds", "canonical"), [
    ("15s", 15, "15s"), ("1m30s", 90, "1m30s"), ("90s", 90, "1m30s"), ("500ms", 0.5, "500ms"),
    ("1h", 3600, "1h"), ("1d2h", 93600, "1d2h"), ("2w", 14 * 86400, "2w"),
    ("1y", 365 * 86400, "1y"), ("1s500ms", 1.5, "1s500ms"), ("0", 0, "0s"),
])
def test_prometheus_durations(text: str, seconds: float, canonical: str) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == canonical


@pytest.mark.parametrize("text", ["", "15", "1.5s", "s", "30s1m", "1m1m", "1 m", " 1m",
                                  "1m ", "-1s", "1S", "5mss", "1ms1s", "9" * 70 + "s"])
def test_not_prometheus_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parsing_a_hostile_duration_is_linear() -> None:
    # Digits and units that a backtracking pattern would try many ways.
    for text in ("1" * 63 + "x", "1m" * 32, "1" * 10_000 + "s"):
        with pytest.raises(ValueError):
            parse_duration(text)


def _targets(yaml_text: str) -> dict[str, TargetConfig]:
    config = parse_config(yaml.safe_load(yaml_text), "sigma.yml")
    return {t.name: t for t in config.targets}


def test_timeout_defaults_like_prometheus() -> None:
    targets = _targets("""
targets:
  - {name: fast, url: "http://a:9999", interval: 1s}
  - {name: plain, url: "http://b:9999"}
  - {name: compound, url: "http://c:9999", interval: 1m30s, timeout: 1m}
""")
    assert targets["fast"].timeout == 1  # min(5s, interval)
    assert targets["plain"].timeout == 5 and targets["plain"].interval == 15
    assert targets["compound"].interval == 90 and targets["compound"].timeout == 60
    # A default timeout longer than a target's interval is cut to the interval.
    cut = _targets("""
defaults: {interval: 30s, timeout: 20s}
targets:
  - {name: a, url: "http://a:9999", interval: 10s}
""")
    assert cut["a"].timeout == 10


@pytest.mark.parametrize(("text", "key", "words"), [
    ("targets:\n  - {url: 'http://a:9999', interval: 1s, timeout: 2s}\n",
     "targets[0].timeout", "longer than the interval 1s"),
    ("defaults: {interval: 10s, timeout: 20s}\ntargets:\n  - url: 'http://a:9999'\n",
     "defaults.timeout", "longer than the interval 10s"),
    ("targets:\n  - {url: 'http://a:9999', interval: 15}\n", "targets[0].interval", "15"),
    ("targets:\n  - {url: 'http://a:9999', interval: 1.5s}\n", "targets[0].interval", "1.5s"),
])
def test_bad_durations_are_refused_with_key_and_fix(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_load(text), "sigma.yml")
    assert caught.value.key == key
    assert words in caught.value.problem
    assert "Fix:" in str(caught.value)


def test_check_config_echoes_durations_as_written(tmp_path: Path) -> None:
    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: a\n    url: http://127.0.0.1:9\n"
                      "    interval: 1m30s\n  - name: b\n    url: http://127.0.0.1:9\n"
                      "    interval: 1s\n")
    out = subprocess.run(sigma_exporter_cmd("check-config", str(config)), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "a: http://127.0.0.1:9 every 1m30s, timeout 5s" in out.stdout
    assert "b: http://127.0.0.1:9 every 1s, timeout 1s" in out.stdout


def test_flags_take_the_same_grammar() -> None:
    bad = subprocess.run(sigma_exporter_cmd("once", "--target", "http://127.0.0.1:9",
                                            "--timeout", "1.5"),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--timeout" in bad.stderr and "1m30s" in bad.stderr
    ok = subprocess.run(sigma_exporter_cmd("once", "--target", "http://127.0.0.1:9",
                                           "--timeout", "1s500ms"),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 1  # parsed; nothing listens on port 9
    assert "sigma_up" in ok.stdout
