"""Checks for the alerting bundle: rules, rule unit tests, runbooks, Alertmanager.

These run promtool and amtool (Prometheus 2.42 / Alertmanager 0.25, Debian
packages `prometheus` and `prometheus-alertmanager`). They are never skipped:
without the tools the tests fail and say what to install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sigma_exporter.metrics import DEFINITIONS

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts" / "sigma-alerts.yml"
RECORDING = ROOT / "alerts" / "sigma-recording.yml"
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
AM_ROUTES = ROOT / "deploy" / "alertmanager" / "tests" / "routes.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTING_DOC = ROOT / "docs" / "alerting.md"

RUNBOOK_BASE = "https://github.com/sigma-exporter/sigma-exporter/blob/main/docs/runbooks.md#"
SEVERITY_RECEIVER = {"critical": "sigma-pager", "warning": "sigma-chat", "info": "sigma-null"}
EXPECTED_GROUPS = {
    f"sigma-{g}"
    for g in ("exporter", "server", "host", "gpu", "crosscheck", "apps", "jobs", "storage")
}
REQUIRED_ALERTS = {
    "SigmaServerDown",
    "SigmaExporterStale",
    "SigmaServerRestarted",
    "SigmaClockSkew",
    "SigmaHostMemoryHigh",
    "SigmaHostSwapActive",
    "SigmaGPUTemperatureHigh",
    "SigmaGPUEncoderSaturated",
    "SigmaGPUDecoderSaturated",
    "SigmaGPUMemoryNearFull",
    "SigmaGPUMissing",
    "SigmaGPUCrossCheckMismatch",
    "SigmaGPUUnknownToSigma",
    "SigmaNVMLDown",
    "SigmaAppDown",
    "SigmaAppFlapping",
    "SigmaJobQueueBacklog",
    "SigmaJobDown",
    "SigmaJobBehindRealtime",
    "SigmaJobInputLost",
    "SigmaJobErrorBurst",
    "SigmaJobOutputBitrateLow",
    "SigmaLogFolderFillingUp",
    "SigmaStorageRetentionChanged",
}
RUNBOOK_PARTS = ("**Meaning**", "**Impact**", "**Confirm**", "**Act**", "**Threshold**")
TOOL_TIMEOUT = 120


# --- helpers ------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found on PATH: install Prometheus 2.42 / Alertmanager 0.25 tools "
            "(Debian: apt-get install prometheus prometheus-alertmanager). "
            "These checks must run, they are never skipped."
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=ROOT, check=False
    )


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _rules(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for group in _load(path)["groups"]:
        for rule in group["rules"]:
            yield group["name"], rule


def _alert_rules() -> list[dict[str, Any]]:
    return [r for _, r in _rules(ALERTS) if "alert" in r]


def _alert_names() -> set[str]:
    return {r["alert"] for r in _alert_rules()}


def _recording_names() -> set[str]:
    return {r["record"] for _, r in _rules(RECORDING) if "record" in r}


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def _runbook_sections() -> dict[str, str]:
    """Anchor -> text of each `## ` section of docs/runbooks.md."""
    sections: dict[str, str] = {}
    current: str | None = None
    in_code = False
    for line in RUNBOOKS.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^(#{1,6})\s+(.*)$", line)
        if m and len(m.group(1)) <= 2:
            current = _github_anchor(m.group(2))
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_METRIC = re.compile(r"(?<![\w:])sigma_[a-z0-9_]+")
_RECORDED = re.compile(r"(?<![\w:])sigma:[a-zA-Z0-9_:]+")


def _expr_names(expr: str) -> tuple[set[str], set[str]]:
    """Metric names and recording-rule names an expression reads (not inside strings)."""
    bare = _STRING.sub('""', expr)
    return set(_METRIC.findall(bare)), set(_RECORDED.findall(bare))


# --- promtool -----------------------------------------------------------------


def test_rules_pass_promtool_lint() -> None:
    promtool = _tool("promtool")
    res = _run(
        promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RECORDING), str(ALERTS)
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_rule_unit_tests_pass() -> None:
    promtool = _tool("promtool")
    assert RULE_TESTS, "no promtool rule tests in alerts/tests/"
    res = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        doc = _load(path)
        files = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert files == {ALERTS.resolve(), RECORDING.resolve()}, path
        for case in doc["tests"]:
            for t in case.get("alert_rule_test", []):
                (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = _alert_names()
    assert names <= firing, f"alerts without a firing unit test: {sorted(names - firing)}"
    assert names <= quiet, f"alerts without a must-not-fire unit test: {sorted(names - quiet)}"
    unknown = (firing | quiet) - names
    assert not unknown, f"unit tests name alerts that do not exist: {sorted(unknown)}"


# --- rule content -------------------------------------------------------------


def test_required_alerts_and_groups_exist() -> None:
    missing = REQUIRED_ALERTS - _alert_names()
    assert not missing, sorted(missing)
    groups = {g for g, _ in _rules(ALERTS)}
    assert groups == EXPECTED_GROUPS


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_labels_and_annotations(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Sigma[A-Z][A-Za-z0-9]+", name)
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: explicit `for` needed"
    assert rule.get("labels", {}).get("severity") in SEVERITY_RECEIVER, name
    ann = rule.get("annotations", {})
    assert set(ann) == {"summary", "description", "runbook_url"}, name
    summary = ann["summary"]
    assert "{{" not in summary, f"{name}: summary must be static"
    assert summary.endswith(".") and "\n" not in summary.strip(), f"{name}: one sentence"
    assert "$labels." in ann["description"], f"{name}: description must be templated"
    assert re.search(r"\$labels\.(target|instance)", ann["description"]), name
    assert ann["runbook_url"] == RUNBOOK_BASE + name.lower(), name


@pytest.mark.parametrize("name", sorted(_alert_names()))
def test_runbook_section_exists_and_is_complete(name: str) -> None:
    sections = _runbook_sections()
    anchor = name.lower()
    assert anchor in sections, f"docs/runbooks.md has no heading `## {name}`"
    text = sections[anchor]
    for part in RUNBOOK_PARTS:
        assert part in text, f"runbook {name} lacks {part}"
    assert re.search(r"curl -s -X POST http://HOST:9999", text), f"runbook {name}: no curl"
    assert "| jq " in text, f"runbook {name}: no jq filter"


def test_recording_rule_names_follow_convention() -> None:
    names = [r["record"] for _, r in _rules(RECORDING)]
    assert len(names) == len(set(names))
    for n in names:
        assert re.fullmatch(r"sigma:[a-z0-9_]+:[a-z0-9_]+", n), n


def test_rules_use_only_defined_metrics() -> None:
    defined = {d.name for d in DEFINITIONS}
    recorded = _recording_names()
    used_metrics: set[str] = set()
    used_records: set[str] = set()
    for path in (ALERTS, RECORDING):
        for _, rule in _rules(path):
            metrics, records = _expr_names(str(rule["expr"]))
            used_metrics |= metrics
            used_records |= records
            # Metric names inside annotation templates (query "...") count too.
            for text in rule.get("annotations", {}).values():
                used_metrics |= set(_METRIC.findall(text))
    assert used_metrics, "parser found no metric names: the check itself is broken"
    assert not used_metrics - defined, f"not in DEFINITIONS: {sorted(used_metrics - defined)}"
    assert not used_records - recorded, f"not recorded: {sorted(used_records - recorded)}"
    # Recording rules no alert reads are for the dashboards; they too must be
    # built from defined metrics (checked above).


def test_expression_parser_ignores_strings() -> None:
    metrics, records = _expr_names(
        "sigma:gpus:count < max_over_time(sigma:gpus:count[1h]) "
        'and sigma_app_up{app=~"sigma_not_a_metric|x"} == 0'
    )
    assert metrics == {"sigma_app_up"}
    assert records == {"sigma:gpus:count"}


def test_alerting_doc_lists_every_alert() -> None:
    text = ALERTING_DOC.read_text(encoding="utf-8")
    section = text.split("\n## 5. The alerts\n", 1)
    assert len(section) == 2, "docs/alerting.md lacks the section `## 5. The alerts`"
    table = section[1].split("\n## ", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("|")]
    for rule in _alert_rules():
        name = rule["alert"]
        matching = [r for r in rows if r.startswith(f"| `{name}` |")]
        assert matching, f"docs/alerting.md table lacks {name}"
        row = matching[0]
        assert rule["labels"]["severity"] in row, f"{name}: severity missing in the table"
        assert str(rule["for"]) in row, f"{name}: `for` missing in the table"


# --- Alertmanager -------------------------------------------------------------


def test_alertmanager_config_passes_amtool() -> None:
    amtool = _tool("amtool")
    res = _run(amtool, "check-config", str(AM_CONFIG))
    assert res.returncode == 0, res.stdout + res.stderr


def _route(labels: dict[str, str], expected: list[str]) -> None:
    amtool = _tool("amtool")
    args = [f"{k}={v}" for k, v in labels.items()]
    res = _run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG}",
        f"--verify.receivers={','.join(expected)}",
        *args,
    )
    assert res.returncode == 0, f"{labels} -> {res.stdout.strip()}, want {expected}"
    assert res.stdout.strip() == ",".join(expected)


@pytest.mark.parametrize("case", _load(AM_ROUTES)["cases"], ids=lambda c: str(c["labels"]))
def test_alertmanager_routes(case: dict[str, Any]) -> None:
    _route({k: str(v) for k, v in case["labels"].items()}, case["receivers"])


@pytest.mark.parametrize("severity", sorted(SEVERITY_RECEIVER))
def test_every_severity_routes_to_its_receiver(severity: str) -> None:
    _route(
        {"alertname": "SigmaTest", "target": "edge1", "severity": severity},
        [SEVERITY_RECEIVER[severity]],
    )


def test_every_alert_routes_by_its_severity() -> None:
    seen: set[tuple[str, str]] = set()
    for rule in _alert_rules():
        key = (rule["alert"], rule["labels"]["severity"])
        if key in seen:
            continue
        seen.add(key)
        _route(
            {"alertname": key[0], "target": "edge1", "severity": key[1]},
            [SEVERITY_RECEIVER[key[1]]],
        )


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    m = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"(.*)"\s*', matcher)
    assert m, f"unsupported matcher syntax: {matcher}"
    name, op, value = m.groups()
    got = labels.get(name, "")
    if op == "=":
        return got == value
    if op == "!=":
        return got != value
    hit = re.fullmatch(value, got) is not None
    return hit if op == "=~" else not hit


def _inhibit_rule(source: str) -> dict[str, Any]:
    for rule in _load(AM_CONFIG)["inhibit_rules"]:
        if any(_matches(m, {"alertname": source}) for m in rule["source_matchers"]):
            found: dict[str, Any] = rule
            return found
    pytest.fail(f"no inhibit rule with source {source}")


def _inhibited(rule: dict[str, Any], name: str) -> bool:
    return all(_matches(m, {"alertname": name}) for m in rule["target_matchers"])


def test_server_down_inhibits_the_targets_other_alerts() -> None:
    rule = _inhibit_rule("SigmaServerDown")
    assert "target" in rule["equal"]
    names = _alert_names()
    assert not _inhibited(rule, "SigmaServerDown")
    for name in names - {"SigmaServerDown"}:
        assert _inhibited(rule, name), name


def test_nvml_down_inhibits_crosscheck_alerts() -> None:
    rule = _inhibit_rule("SigmaNVMLDown")
    assert "target" in rule["equal"]
    crosscheck = {
        r["alert"] for g, r in _rules(ALERTS) if g == "sigma-crosscheck" and "alert" in r
    } - {"SigmaNVMLDown"}
    assert {"SigmaGPUCrossCheckMismatch", "SigmaGPUUnknownToSigma"} <= crosscheck
    for name in _alert_names():
        assert _inhibited(rule, name) == (name in crosscheck), name


def test_inhibit_rules_name_real_alerts() -> None:
    names = _alert_names()
    for rule in _load(AM_CONFIG)["inhibit_rules"]:
        sources = [
            n for n in names if all(_matches(m, {"alertname": n}) for m in rule["source_matchers"])
        ]
        targets = [n for n in names if _inhibited(rule, n)]
        assert sources and targets, rule


def test_alertmanager_notification_templates_render(tmp_path: Path) -> None:
    """Every templated field of the receivers parses and executes (amtool's sample data)."""
    amtool = _tool("amtool")
    glob = tmp_path / "none.tmpl"
    glob.write_text('{{ define "unused" }}{{ end }}\n', encoding="utf-8")
    texts: list[str] = []
    for receiver in _load(AM_CONFIG)["receivers"]:
        for cfg in receiver.get("slack_configs", []) + receiver.get("pagerduty_configs", []):
            for key in ("title", "title_link", "text", "description"):
                if key in cfg:
                    texts.append(cfg[key])
            texts.extend(cfg.get("details", {}).values())
            texts.extend(link["href"] for link in cfg.get("links", []))
    assert texts
    for text in texts:
        res = _run(
            amtool, "template", "render", f"--template.glob={glob}", f"--template.text={text}"
        )
        assert res.returncode == 0, f"{text!r}: {res.stderr}"
