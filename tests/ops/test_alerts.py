"""Checks for the alerting bundle: rules, rule unit tests, runbooks, Alertmanager.

These run promtool and amtool (Prometheus 2.42 / Alertmanager 0.25, Debian
packages `prometheus` and `prometheus-alertmanager`). They are never skipped:
without the tools the tests fail and say what to install.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sigma_exporter.metrics import DEFINITIONS

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts" / "sigma-alerts.yml"
RECORDING = ROOT / "alerts" / "sigma-recording.yml"
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
INCIDENT_TESTS = sorted((ROOT / "alerts" / "tests" / "incidents").glob("*.yml"))
THRESHOLDS = ROOT / "alerts" / "thresholds.yml"
LINKS = ROOT / "alerts" / "links.yml"
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
AM_ROUTES = ROOT / "deploy" / "alertmanager" / "tests" / "routes.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTING_DOC = ROOT / "docs" / "alerting.md"

SEVERITY_RECEIVERS = {"critical": ["sigma-pager", "sigma-chat"], "warning": ["sigma-chat"],
                      "info": ["sigma-null"]}
DASHBOARD_UIDS = ("sigma-fleet", "sigma-server", "sigma-jobs")
EXPECTED_GROUPS = {
    f"sigma-{g}"
    for g in ("exporter", "server", "host", "gpu", "crosscheck", "nvml", "apps", "jobs",
              "storage")
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
    # issue 14: paging that catches the outages viewers see
    "SigmaExporterAbsent",
    "SigmaExporterTargetMissing",
    "SigmaMonitoringBlind",
    "SigmaServerChannelsFailing",
    "SigmaJobStalled",
    "SigmaJobCrashLooping",
    "SigmaJobVanished",
    "SigmaJobOutputDown",
    "SigmaJobErrorBudgetFastBurn",
    "SigmaJobErrorBudgetSlowBurn",
    "SigmaGPUXidErrors",
    "SigmaGPUMemoryErrors",
    "SigmaGPURowRemapPending",
    "SigmaGPUThrottled",
    "SigmaGPUPowerAtLimit",
    "SigmaGPUEncoderSessionsNearCap",
    # issue 22: the end of the dump answer
    "SigmaLicenseNotValid",
    "SigmaControlPlaneDisconnected",
    # issue 23: the outputs viewers get
    "SigmaOutputStale",
    "SigmaOutputEnded",
    "SigmaOutputRenditionVanished",
    "SigmaOutputSegmentsOverlong",
    "SigmaOutputSegmentsMissing",
}
# The incidents of issue 14 and the quiet hours (alerts/tests/incidents/,
# written by tests/incidents.py).
INCIDENTS = {
    "host-dies-agent", "exporter-dies-central", "exporter-target-dropped", "channel-frozen",
    "channel-crash-loop", "channel-vanished", "output-dropped", "channel-half-speed",
    "gpu-off-bus", "field-format-change",
    # issue 22: the licence and the control-plane link
    "licence-lapsed", "control-plane-down",
    "output-frozen", "output-ended", "output-rendition-vanished", "output-overlong-segments",
    "channel-drift-095",
    "quiet-healthy-hour", "quiet-sigma-restart", "quiet-exporter-restart",
    # issue 22: job states and error classes
    "channel-stuck-starting", "channel-error", "output-errors", "quiet-channel-starting",
}
RUNBOOK_PARTS = ("**Meaning**", "**Impact**", "**Dashboard**", "**Confirm**", "**Act**",
                 "**Escalate**", "**Threshold**")
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
        # libyaml's loader: the incident files are megabytes, the pure-Python one slow.
        return yaml.load(f, Loader=yaml.CSafeLoader)


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


def test_every_rule_test_evaluates_the_groups_in_a_fixed_order() -> None:
    """promtool evaluates groups in a random order unless told: an alert that reads a
    recording rule then sees the previous evaluation's value half the time, and a
    test at the edge of a `for` passes or fails by chance (jobs.yml did)."""
    import incidents

    order = incidents.group_eval_order()
    for path in [*RULE_TESTS, *INCIDENT_TESTS]:
        assert _load(path).get("group_eval_order") == order, path.name


def test_there_are_rule_unit_tests() -> None:
    assert RULE_TESTS, "no promtool rule tests in alerts/tests/"


# One file a test: the two workers share them (slo-burn.yml alone is two days of rules).
@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.stem)
def test_rule_unit_tests_pass(path: Path) -> None:
    promtool = _tool("promtool")
    res = _run(promtool, "test", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("path", INCIDENT_TESTS, ids=lambda p: p.stem)
def test_incident_replays_pass(path: Path) -> None:
    """Each incident pages as its header says; each quiet file stays quiet."""
    promtool = _tool("promtool")
    res = _run(promtool, "test", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_incident_of_the_issue_has_its_file() -> None:
    assert {p.stem for p in INCIDENT_TESTS} == INCIDENTS


@pytest.mark.parametrize("path", INCIDENT_TESTS, ids=lambda p: p.stem)
def test_incident_states_the_expectation_and_replays_a_real_scrape(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "# Operator expects:" in text.split("rule_files:", 1)[0], path
    doc = _load(path)
    names = {re.match(r"[^{]+", s["series"]).group(0)  # type: ignore[union-attr]
             for t in doc["tests"] for s in t["input_series"]}
    # Every family a real scrape of an agent-mode host has (nvml included),
    # bar the NVML ones in the central-exporter files.
    scrape = {n for n in _agent_scrape_names()
              if ("central" not in path.stem and "dropped" not in path.stem)
              or not n.startswith(("sigma_nvml", "sigma_gpu_crosscheck"))}
    missing = scrape - names
    assert not missing, f"{path.name}: no input series for {sorted(missing)}"
    assert "up" in names
    for t in doc["tests"]:
        for s in t["input_series"]:
            assert 'job="sigma"' in s["series"] or s["series"].startswith("up{"), s["series"]
            # Counters with open label values are born at their first increment.
            if s["series"].startswith("sigma_parse_errors_total"):
                assert s["values"].lstrip("_x0123456789 ").strip() != "", s
                first = next(v for v in s["values"].split() if not v.startswith("_"))
                assert not first.startswith("0"), s


def _agent_scrape_names() -> set[str]:
    import incidents

    return {name for name, _, _ in incidents.base_samples(agent=True)}


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS + INCIDENT_TESTS:
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


def _links() -> dict[str, str]:
    data = _load(LINKS)
    return {"runbooks": str(data["runbooks"]), "grafana": str(data["grafana"])}


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_labels_and_annotations(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Sigma[A-Z][A-Za-z0-9]+", name)
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: explicit `for` needed"
    assert rule.get("labels", {}).get("severity") in SEVERITY_RECEIVERS, name
    ann = rule.get("annotations", {})
    assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"}, name
    summary = ann["summary"]
    assert "{{" not in summary, f"{name}: summary must be static"
    assert summary.endswith(".") and "\n" not in summary.strip(), f"{name}: one sentence"
    assert "$labels." in ann["description"], f"{name}: description must be templated"
    # Exporter-wide alerts (no target) name the exporter or the scrape job.
    assert re.search(r"\$labels\.(target|instance|job)\b", ann["description"]), name
    links = _links()
    assert ann["runbook_url"] == f"{links['runbooks']}#{name.lower()}", name
    uids = "|".join(DASHBOARD_UIDS)
    assert re.fullmatch(re.escape(links["grafana"]) + rf"/d/({uids})/\1(\?.*)?",
                        ann["dashboard_url"]), name


def test_links_come_from_one_place() -> None:
    """alerts/links.yml is the only place the link bases are written."""
    res = _run(sys.executable, str(ROOT / "alerts" / "links.py"), "--check")
    assert res.returncode == 0, res.stdout + res.stderr
    links = _links()
    assert "/blob/main/" not in links["runbooks"], "runbooks must not follow a moving branch"
    spec = importlib.util.spec_from_file_location("links", ROOT / "alerts" / "links.py")
    assert spec is not None and spec.loader is not None
    links_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(links_tool)
    text = ALERTS.read_text(encoding="utf-8")
    other = links_tool.rewrite(text, {"runbooks": "https://wiki.example.org/rb",
                                      "grafana": "https://g.example.org"})
    assert "https://wiki.example.org/rb#sigmajobdown" in other
    assert "https://g.example.org/d/sigma-jobs/sigma-jobs?var-target=" in other
    assert links["runbooks"] not in other and links["grafana"] not in other


def test_runbooks_say_how_to_use_auth_tls() -> None:
    text = RUNBOOKS.read_text(encoding="utf-8")
    for var in ("SIGMA_AUTH=", "SIGMA_TLS=", "EXPORTER_AUTH=", "EXPORTER_TLS=", "PROM_AUTH="):
        assert var in text, var
    assert "alerts/links.py" in text and "alerts/links.yml" in text


@pytest.mark.parametrize("name", sorted(_alert_names()))
def test_runbook_section_exists_and_is_complete(name: str) -> None:
    sections = _runbook_sections()
    anchor = name.lower()
    assert anchor in sections, f"docs/runbooks.md has no heading `## {name}`"
    text = sections[anchor]
    for part in RUNBOOK_PARTS:
        assert part in text, f"runbook {name} lacks {part}"
    # Commands that work with basic auth and TLS (the variables of "Before you start").
    assert re.search(r'curl -s (?:"\$\{(SIGMA|EXPORTER)_TLS\[@\]\}" "\$\{\1_AUTH\[@\]\}"'
                     r'|"\$\{PROM_AUTH\[@\]\}")', text), f"runbook {name}: no curl with auth/TLS"
    assert "http://HOST:9999" not in text, f"runbook {name}: plain-HTTP command"
    dashboard = text.split("**Dashboard**", 1)[1].split("\n\n", 1)[0]
    uids = "|".join(DASHBOARD_UIDS)
    assert re.search(rf"`GRAFANA/d/({uids})/", dashboard), f"runbook {name}: no dashboard link"


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


# Which rules use each number of alerts/thresholds.yml (alerts or records).
THRESHOLD_RULES: dict[str, tuple[str, ...]] = {
    "clock_skew_seconds": ("SigmaClockSkew",),
    "host_memory_utilization_ratio": ("SigmaHostMemoryHigh",),
    "host_swap_growth_bytes": ("SigmaHostSwapActive",),
    "gpu_temperature_celsius": ("SigmaGPUTemperatureHigh",),
    "gpu_encoder_utilization_ratio": ("SigmaGPUEncoderSaturated",),
    "gpu_decoder_utilization_ratio": ("SigmaGPUDecoderSaturated",),
    "gpu_memory_utilization_ratio": ("SigmaGPUMemoryNearFull",),
    "job_speed_ratio": ("SigmaJobBehindRealtime",),
    "job_output_profile_ratio": ("SigmaJobOutputBitrateLow",),
    "job_error_burst_lines": ("SigmaJobErrorBurst",),
    "log_folder_bytes": ("SigmaLogFolderFillingUp",),
    "log_folder_horizon_seconds": ("SigmaLogFolderFillingUp",),
    "app_flapping_restarts": ("SigmaAppFlapping",),
    "stale_poll_intervals": ("SigmaExporterStale", "SigmaMonitoringBlind"),
    "server_failing_channels": ("SigmaServerChannelsFailing",),
    "job_stalled_speed_ratio": ("SigmaJobStalled", "SigmaJobBehindRealtime"),
    "job_crashloop_up_ratio": ("SigmaJobCrashLooping",),
    "job_crashloop_up_changes": ("SigmaJobCrashLooping",),
    "job_crashloop_restarts": ("SigmaJobCrashLooping",),
    "job_availability_objective": ("sigma:job_availability:objective",),
    "slo_page_burn_rate_1h": ("SigmaJobErrorBudgetFastBurn",),
    "slo_page_burn_rate_6h": ("SigmaJobErrorBudgetFastBurn",),
    "slo_ticket_burn_rate_1d": ("SigmaJobErrorBudgetSlowBurn",),
    "slo_ticket_burn_rate_3d": ("SigmaJobErrorBudgetSlowBurn",),
    "gpu_power_limit_ratio": ("SigmaGPUPowerAtLimit",),
    "gpu_geforce_nvenc_sessions": ("SigmaGPUEncoderSessionsNearCap",),
}
# Thresholds that are durations: the rule's every range and offset says them.
DURATION_RULES: dict[str, tuple[str, ...]] = {
    "job_coming_up_seconds": ("sigma:job_down:bool",),
}
_NUMBER = re.compile(r"(?<![\w.:])(\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?![\w.])")


def _numbers(expr: str) -> set[float]:
    """Numeric literals of an expression: not in strings, ranges or offsets; not 0 or 1."""
    bare = _STRING.sub('""', expr)
    bare = re.sub(r"\[[^\]]*\]", "[]", bare)
    bare = re.sub(r"offset\s+\d+[smhdwy]", "offset", bare)
    return {float(n) for n in _NUMBER.findall(bare)} - {0.0, 1.0}


def _rule_numbers() -> dict[str, set[float]]:
    out: dict[str, set[float]] = {}
    for path in (ALERTS, RECORDING):
        for _, rule in _rules(path):
            name = rule.get("alert") or rule["record"]
            out.setdefault(name, set()).update(_numbers(str(rule["expr"])))
    return out


def test_rule_thresholds_are_those_of_thresholds_yml() -> None:
    """Every number a rule fires at is in alerts/thresholds.yml, and the other way round."""
    thresholds = _load(THRESHOLDS)
    assert set(thresholds) == set(THRESHOLD_RULES) | set(DURATION_RULES), (
        "map each threshold to its rules here")
    numbers = _rule_numbers()
    for key, value in thresholds.items():
        if key in DURATION_RULES:
            continue
        for rule in THRESHOLD_RULES[key]:
            assert rule in numbers, f"{key}: no rule {rule}"
            if float(value) not in (0.0, 1.0):  # 0 and 1 are everywhere; not checkable
                assert any(math.isclose(float(value), n) for n in numbers[rule]), (
                    f"{rule} does not use {key} = {value}; its numbers: {numbers[rule]}")
    for rule, found in numbers.items():
        allowed = {float(thresholds[k]) for k, rules in THRESHOLD_RULES.items() if rule in rules}
        stray = {n for n in found if not any(math.isclose(n, a) for a in allowed)}
        assert not stray, f"{rule} fires at {stray}, which alerts/thresholds.yml does not say"


_DURATION = re.compile(r"\[(\d+)([smhd])(?::[^\]]*)?\]|offset\s+(\d+)([smhd])")


def _durations(expr: str) -> set[float]:
    """Seconds of every range (`[3m]`) and offset (`offset 3m`) of an expression."""
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    bare = _STRING.sub('""', expr)
    return {float(int(m[0] or m[2]) * unit[m[1] or m[3]]) for m in _DURATION.findall(bare)}


def test_duration_thresholds_are_the_rules_windows() -> None:
    """A threshold that is a time (how long a channel may come up) is each window of its rules."""
    thresholds = _load(THRESHOLDS)
    rules = {r.get("alert") or r["record"]: r for p in (ALERTS, RECORDING) for _, r in _rules(p)}
    for key, names in DURATION_RULES.items():
        for name in names:
            found = _durations(str(rules[name]["expr"]))
            assert found == {float(thresholds[key])}, f"{name}: windows {found}, {key}"
    assert _durations('max_over_time(x[3m]) and y offset 3m or z{a="[1h]"}') == {180.0}


def test_threshold_number_parser() -> None:
    assert _numbers('rate(x{a="0.5"}[5m]) > 0.97 and y offset 10m < -10 * 3') == {0.97, 10, 3}


def test_expression_parser_ignores_strings() -> None:
    metrics, records = _expr_names(
        "sigma:gpus:count < max_over_time(sigma:gpus:count[1h]) "
        'and sigma_app_up{app=~"sigma_not_a_metric|x"} == 0'
    )
    assert metrics == {"sigma_app_up"}
    assert records == {"sigma:gpus:count"}


def test_alerting_doc_lists_every_alert() -> None:
    text = ALERTING_DOC.read_text(encoding="utf-8")
    section = text.split("\n## 6. The alerts\n", 1)
    assert len(section) == 2, "docs/alerting.md lacks the section `## 6. The alerts`"
    table = section[1].split("\n## ", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("|")]
    for rule in _alert_rules():
        name = rule["alert"]
        matching = [r for r in rows if r.startswith(f"| `{name}` |")]
        assert matching, f"docs/alerting.md table lacks {name}"
        row = matching[0]
        assert rule["labels"]["severity"] in row, f"{name}: severity missing in the table"
        assert str(rule["for"]) in row, f"{name}: `for` missing in the table"


def test_alerting_doc_has_the_incident_table() -> None:
    """incident -> alert -> time to page -> who, one row per replayed incident."""
    text = ALERTING_DOC.read_text(encoding="utf-8")
    section = text.split("\n## 5. The incidents and who hears about them\n", 1)
    assert len(section) == 2, "docs/alerting.md lacks the incident table"
    table = section[1].split("\n## ", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows[0] == "| incident | alert | time to page | who |"
    names = _alert_names()
    for incident in INCIDENTS:
        row = [r for r in rows if f"`{incident}`" in r]
        assert len(row) == 1, f"no row for {incident}"
        cells = [c.strip() for c in row[0].strip("|").split("|")]
        assert len(cells) == 4 and all(cells), row
        for alert in re.findall(r"`(Sigma\w+)`", cells[1]):
            assert alert in names, alert
        if not incident.startswith("quiet-"):
            assert re.search(r"`Sigma\w+`", cells[1]), row
            assert "on-call" in cells[3] or "owners" in cells[3], row


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


@pytest.mark.parametrize("severity", sorted(SEVERITY_RECEIVERS))
def test_every_severity_routes_to_its_receiver(severity: str) -> None:
    _route(
        {"alertname": "SigmaTest", "target": "edge1", "severity": severity},
        SEVERITY_RECEIVERS[severity],
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
            SEVERITY_RECEIVERS[key[1]],
        )


def _route_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The routes (root first) an alert with these labels takes to its first receiver."""
    def walk(route: dict[str, Any], path: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for child in route.get("routes", []):
            if all(_matches(m, labels) for m in child.get("matchers", [])):
                return walk(child, [*path, child])
        return path

    root = _load(AM_CONFIG)["route"]
    return walk(root, [root])


def _group_by(labels: dict[str, str]) -> list[str]:
    group: list[str] = []
    for route in _route_for(labels):
        group = route.get("group_by", group)
    return group


def test_channel_pages_of_one_server_are_grouped_into_one_notification() -> None:
    """Many channels of one server failing at once: one page, not one per channel."""
    for name in ("SigmaJobDown", "SigmaJobStalled", "SigmaJobInputLost",
                 "SigmaServerChannelsFailing"):
        labels = {"alertname": name, "severity": "critical", "job_name": "VTV3"}
        assert _group_by(labels) == ["job", "instance", "target"], name
    assert _group_by({"alertname": "SigmaServerDown", "severity": "critical"}) == [
        "alertname", "target"]
    rule = _inhibit_rule("SigmaServerChannelsFailing")
    assert rule["equal"] == ["job", "instance", "target"]
    for name in ("SigmaJobDown", "SigmaJobStalled", "SigmaJobCrashLooping", "SigmaJobInputLost",
                 "SigmaJobOutputDown", "SigmaJobErrorBudgetFastBurn"):
        assert _inhibited(rule, name), name


def test_a_dead_exporter_hands_over_every_alert_of_it() -> None:
    """Held channel pages of a dead host are muted under the host page."""
    rule = _inhibit_rule("SigmaExporterDown")
    assert rule["equal"] == ["job", "instance"]
    assert _inhibit_rule("SigmaExporterTargetMissing") == rule
    for name in _alert_names():
        exporter_level = name in {"SigmaExporterDown", "SigmaExporterTargetMissing",
                                  "SigmaExporterAbsent"}
        assert _inhibited(rule, name) == (not exporter_level), name


def _silences() -> list[list[str]]:
    """The matchers of each `amtool silence add` command in docs/alerting.md."""
    text = ALERTING_DOC.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip().startswith("amtool silence add"):
            out.append(re.findall(r"'(\w+\s*(?:=~|!~|!=|=)\s*\"[^\"]*\")'", line))
    return out


def test_documented_maintenance_silences_cover_a_whole_host_and_nothing_else() -> None:
    silences = _silences()
    assert len(silences) >= 2, "docs/alerting.md: the maintenance silences (agent, central)"
    agent, central = silences[0], silences[1]
    assert agent and central
    host = {"job": "sigma", "instance": "sigma-host-1:9877"}
    other_host = {"job": "sigma", "instance": "sigma-host-2:9877"}
    for name in _alert_names() - {"SigmaExporterAbsent"}:  # the fleet alert has no host
        exporter_level = name.startswith("SigmaExporter") and name != "SigmaExporterStale" \
            and name != "SigmaExporterParseErrors"
        labels = {"alertname": name, **host, **({} if exporter_level else {"target": "sigma-01"})}
        assert all(_matches(m, labels) for m in agent), (name, agent)
        assert not all(_matches(m, {**labels, **other_host}) for m in agent), name
        if not exporter_level:  # central mode: one Sigma server behind a shared exporter
            labels = {"alertname": name, "job": "sigma", "instance": "exp:9877",
                      "target": "sigma-01"}
            assert all(_matches(m, labels) for m in central), (name, central)
            assert not all(_matches(m, {**labels, "target": "sigma-02"}) for m in central)


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
