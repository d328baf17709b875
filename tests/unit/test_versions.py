"""The oldest Prometheus and Alertmanager the shipped files work with, read from the files.

CI has one Prometheus (Debian 12's 2.42) and one Alertmanager (0.25), and cannot
download older ones. So this reads every rule and the Alertmanager config, finds the
version in which each PromQL function, rule field and config key it uses appeared
(the tables below, from the projects' changelogs), and holds the result to what
docs/compatibility.md says: the floors, and each distribution's verdict. A rule that
starts using a newer function (or a key nobody dated yet) fails here until the table
and the page say what it costs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = [ROOT / "alerts" / "sigma-recording.yml", ROOT / "alerts" / "sigma-alerts.yml"]
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PAGE = ROOT / "docs" / "compatibility.md"

Version = tuple[int, ...]

# PromQL functions, aggregations and keywords: the Prometheus release that added
# them (CHANGELOG.md of prometheus/prometheus). 2.0 is the rule file format itself.
_V2_0 = (2, 0)
PROMQL_SINCE: dict[str, Version] = {
    **dict.fromkeys((
        "abs", "absent", "avg_over_time", "ceil", "changes", "clamp_max", "clamp_min",
        "count_over_time", "day_of_month", "day_of_week", "days_in_month", "delta", "deriv",
        "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase",
        "irate", "label_join", "label_replace", "ln", "log10", "log2", "max_over_time",
        "min_over_time", "minute", "month", "predict_linear", "quantile_over_time", "rate",
        "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "stddev_over_time",
        "stdvar_over_time", "sum_over_time", "time", "timestamp", "vector", "year",
        # aggregations and binary-operator keywords
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "count_values", "topk",
        "bottomk", "quantile", "by", "without", "on", "ignoring", "group_left",
        "group_right", "bool", "and", "or", "unless", "offset",
    ), _V2_0),
    "absent_over_time": (2, 16),
    "last_over_time": (2, 26), "sgn": (2, 26), "clamp": (2, 26),
    "present_over_time": (2, 29),
    **dict.fromkeys(("acos", "asin", "atan", "cos", "sin", "tan", "deg", "rad", "pi"),
                    (2, 31)),
    **dict.fromkeys(("histogram_count", "histogram_sum", "histogram_fraction"), (2, 40)),
}
RULE_FIELD_SINCE: dict[str, Version] = {
    **dict.fromkeys(("record", "alert", "expr", "for", "labels", "annotations"), _V2_0),
    "keep_firing_for": (2, 42),
}
GROUP_FIELD_SINCE: dict[str, Version] = {
    **dict.fromkeys(("name", "rules", "interval"), _V2_0),
    "query_offset": (2, 53),
}
# Alertmanager config keys newer than 0.21 (CHANGELOG.md of prometheus/alertmanager);
# any key not listed is older.
AM_KEY_SINCE: dict[str, Version] = {
    "matchers": (0, 22), "source_matchers": (0, 22), "target_matchers": (0, 22),
    "api_url_file": (0, 22),  # Slack webhook URL from a file
    "mute_time_intervals": (0, 22),
    "time_intervals": (0, 24), "active_time_intervals": (0, 24),
    "routing_key_file": (0, 25), "service_key_file": (0, 25),  # PagerDuty keys from files
    "source": (0, 25),  # PagerDuty `source`
}
# Keys the shipped config uses that were there before 0.22: listed so that a new key
# has to be dated (added above) or declared old here on purpose.
AM_OLD_KEYS = {
    "global", "resolve_timeout", "route", "receiver", "group_by", "group_wait",
    "group_interval", "repeat_interval", "routes", "continue", "inhibit_rules", "equal",
    "receivers", "name", "pagerduty_configs", "send_resolved", "severity", "description",
    "details", "links", "href", "text", "slack_configs", "channel", "title", "title_link",
    "firing", "resolved", "num_firing",
}
# What each distribution's own packages install (apt-cache policy, December 2026).
DISTROS: dict[str, tuple[Version, Version]] = {
    "Ubuntu 22.04": ((2, 31, 2), (0, 23, 0)),
    "Ubuntu 24.04": ((2, 45, 3), (0, 26, 0)),
    "Debian 12": ((2, 42, 0), (0, 25, 0)),
}


def show(version: Version) -> str:
    return ".".join(map(str, version))


def _expr_words(expr: str) -> set[str]:
    """The function and keyword names of a PromQL expression (strings and comments out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"#[^\n]*", "", expr)
    names = set(re.findall(r"\b([a-z_]+)\s*\(", expr))
    names |= set(re.findall(r"\b(by|without|on|ignoring|group_left|group_right|bool|and|or|"
                            r"unless|offset)\b", expr))
    return names


def rules_floor() -> tuple[Version, dict[str, Version]]:
    """The oldest Prometheus that loads the rules, and what each used name needs."""
    needs: dict[str, Version] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for key in group:
                assert key in GROUP_FIELD_SINCE, f"{path.name}: group field {key}: date it"
                needs[f"group field {key}"] = GROUP_FIELD_SINCE[key]
            for rule in group["rules"]:
                for key in rule:
                    assert key in RULE_FIELD_SINCE, f"{path.name}: rule field {key}: date it"
                    needs[f"rule field {key}"] = RULE_FIELD_SINCE[key]
                for word in _expr_words(rule["expr"]):
                    assert word in PROMQL_SINCE, (
                        f"{rule.get('alert') or rule.get('record')} uses {word}(): add the "
                        "Prometheus version that added it to PROMQL_SINCE")
                    needs[word] = PROMQL_SINCE[word]
    return max(needs.values()), needs


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def alertmanager_floor() -> tuple[Version, set[str]]:
    """The oldest Alertmanager that loads the shipped config, and the keys that need it."""
    keys = _keys(yaml.safe_load(AM_CONFIG.read_text()))
    undated = keys - set(AM_KEY_SINCE) - AM_OLD_KEYS
    assert not undated, f"date these Alertmanager keys in AM_KEY_SINCE: {sorted(undated)}"
    dated = {k: AM_KEY_SINCE[k] for k in keys & set(AM_KEY_SINCE)}
    floor = max(dated.values(), default=(0, 21))
    return floor, {k for k, v in dated.items() if v == floor}


def _table() -> dict[str, dict[str, str]]:
    """docs/compatibility.md's table: row label -> column -> cell."""
    lines = [line for line in PAGE.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return rows


def test_the_rules_need_the_prometheus_the_page_names() -> None:
    floor, needs = rules_floor()
    assert floor == (2, 26), needs
    newest = sorted(name for name, version in needs.items() if version == floor)
    assert newest == ["last_over_time"]
    text = PAGE.read_text()
    assert f"rules (need Prometheus ≥ {show(floor)})" in text
    assert f"**Rules: Prometheus {show(floor)} or later.** The newest thing they use is\n" \
           f"`last_over_time` (Prometheus {show(floor)})" in text
    assert "keep_firing_for" not in needs, "the design notes say the rules do without it"


def test_the_alertmanager_config_needs_the_version_the_page_names() -> None:
    floor, blockers = alertmanager_floor()
    assert (floor, blockers) == ((0, 25), {"routing_key_file"})
    assert f"`alertmanager.yml` (needs Alertmanager ≥ {show(floor)})" in PAGE.read_text()
    # Without the blocker (the page's one change), the rest needs 0.22.
    rest = {AM_KEY_SINCE[k] for k in _keys(yaml.safe_load(AM_CONFIG.read_text()))
            if k in AM_KEY_SINCE and k not in blockers}
    assert max(rest) == (0, 22)
    assert "works on 0.22 and later" in PAGE.read_text()


def test_each_distributions_row_follows_from_its_versions() -> None:
    rules, _ = rules_floor()
    manager, _ = alertmanager_floor()
    table = _table()
    for distro, (prometheus, alertmanager) in DISTROS.items():
        assert table["Prometheus package"][distro] == show(prometheus)
        assert table["Alertmanager package"][distro] == show(alertmanager)
        assert table[f"rules (need Prometheus ≥ {show(rules)})"][distro] == \
            ("yes" if prometheus[:2] >= rules else "no")
        assert table[f"`alertmanager.yml` (needs Alertmanager ≥ {show(manager)})"][distro] == \
            ("yes" if alertmanager[:2] >= manager else "one change, below")


def test_the_docs_claim_no_other_floor() -> None:
    """No page still says the rules are "written for" one version, or that a version
    lacks a feature it has."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "written for Prometheus" not in text, path.name
        assert "Prometheus 2.42 has no" not in text, path.name
