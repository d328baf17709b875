"""Grafana dashboards: generated = committed, lint rules, metric coverage.

grafana/dashboard-linter cannot be installed here, so its rules (and a few
more of ours) are checked on the generated JSON. PromQL syntax is checked
with `promtool check rules` when promtool is on PATH.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sigma_grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _load_definitions() -> Any:
    try:
        return importlib.import_module("sigma_exporter.metrics")
    except ImportError:
        sys.path.insert(0, str(ROOT))
        return importlib.import_module("sigma_exporter.metrics")


gen = _load_generator()
metrics_mod = _load_definitions()
DEFS = {d.name: d for d in metrics_mod.DEFINITIONS}
DASHBOARDS = gen.build()
BY_UID = {d.uid: d for d in DASHBOARDS}
QUERY_OF = {(q.dashboard_uid, q.panel_id, q.ref_id): q for d in DASHBOARDS for q in d.queries}

RATE_FUNCS = {"rate", "irate", "increase"}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
}
AGGREGATORS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
}
BUILTIN_VARS = {"__rate_interval", "__range", "__interval"}
# Grafana unit ids the dashboards may use; a typo renders raw numbers.
KNOWN_UNITS = {
    "none",
    "short",
    "percentunit",
    "bytes",
    "bps",
    "Bps",
    "s",
    "celsius",
    "watt",
    "hertz",
    "dateTimeAsIso",
    "dateTimeFromNow",
    "cpm",
}
EXPECTED_UIDS = {"sigma-fleet", "sigma-server", "sigma-jobs"}


# --------------------------------------------------------------------------
# A small PromQL scanner: enough to find metric names, the functions around
# them and range windows. Strings and label matchers are skipped.
# --------------------------------------------------------------------------


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" else 1
    return i + 1


def scan(expr: str) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, tuple[str, ...]]]]:
    """(metric, enclosing calls) and (range window, enclosing calls), innermost last."""
    metrics: list[tuple[str, tuple[str, ...]]] = []
    windows: list[tuple[str, tuple[str, ...]]] = []
    stack: list[str] = []
    last_ident = ""
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "{":
            while expr[i] != "}":
                i = _skip_string(expr, i) if expr[i] in "\"'`" else i + 1
            i += 1
            last_ident = ""
        elif c == "[":
            j = expr.index("]", i)
            windows.append((expr[i + 1 : j], tuple(stack)))
            i = j + 1
        elif c == "(":
            stack.append(last_ident)
            last_ident = ""
            i += 1
        elif c == ")":
            assert stack, f"unbalanced ')' in {expr!r}"
            stack.pop()
            last_ident = ""
            i += 1
        elif c == "$":  # a Grafana variable ($__rate_interval), not a metric
            m = re.compile(r"\$\{?\w+\}?").match(expr, i)
            assert m is not None
            i = m.end()
        elif c.isalpha() or c == "_":
            m = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*").match(expr, i)
            assert m is not None
            ident = m.group(0)
            i = m.end()
            rest = expr[i:].lstrip()
            grouping = bool(stack) and stack[-1] in KEYWORDS  # by (target, job)
            named = ident in KEYWORDS or ident in AGGREGATORS
            if not rest.startswith("(") and not named and not grouping:
                metrics.append((ident, tuple(stack)))
            last_ident = ident
        else:
            last_ident = "" if not c.isspace() else last_ident
            i += 1
    assert not stack, f"unbalanced '(' in {expr!r}"
    return metrics, windows


def all_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def data_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in all_panels(dash) if p["type"] != "row")


def all_queries() -> Iterator[Any]:
    for d in DASHBOARDS:
        yield from d.queries


def exprs(d: Any) -> Iterator[tuple[str, str]]:
    """(where, expr) of every query of a dashboard: panels, then annotations."""
    for q in d.queries:
        yield q.panel_title, q.expr
    for a in d.annotations:
        yield f"annotation {a.name}", a.expr


def all_exprs() -> Iterator[tuple[str, str]]:
    for d in DASHBOARDS:
        yield from exprs(d)


# Prometheus' ALERTS series: its own labels plus those of the alerting series.
ALERT_LABELS = {"alertname", "alertstate", "severity"} | {
    label for d in metrics_mod.DEFINITIONS for label in d.labels}


def labels_of(expr: str) -> set[str]:
    names = {m for m, _ in scan(expr)[0] if m.startswith("sigma_")}
    out: set[str] = set()
    for n in names:
        out.update(DEFS[n].labels if n in DEFS else ())
    if re.search(r"\bALERTS\{", expr):
        out |= ALERT_LABELS
    return out


def case_id(d: Any) -> str:
    return str(d.uid)


# --------------------------------------------------------------------------
# 1. dashboards as code
# --------------------------------------------------------------------------


def test_committed_json_is_generated() -> None:
    problems = gen.check(DASHBOARDS, GRAFANA / "dashboards")
    assert not problems, "\n".join(problems) + "\nrun: python grafana/generate.py"


def test_generator_is_deterministic() -> None:
    again = gen.build()
    assert [gen.render(d) for d in again] == [gen.render(d) for d in DASHBOARDS]


def test_check_flag_exits_nonzero_on_drift(tmp_path: Path) -> None:
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / "sigma-fleet.json"
    victim.write_text(victim.read_text().replace("Sigma fleet", "Sigma fleat"))
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1
    (tmp_path / "stale.json").write_text("{}")
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert not (tmp_path / "stale.json").exists()
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0


MAX_FUNCTION_LINES = 150


def test_generator_is_a_library_plus_one_module_per_dashboard() -> None:
    """grafana/generate.py is a thin command line; no function grows past a screenful
    or two, so each dashboard section can be read in one look."""
    package = GRAFANA / "sigma_dashboards"
    modules = {p.stem for p in package.glob("*.py")}
    assert {"lib", "fleet", "server", "channels"} <= modules
    assert len((GRAFANA / "generate.py").read_text().splitlines()) < 120
    too_long = []
    for path in [GRAFANA / "generate.py", *sorted(package.glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not too_long, too_long


def test_script_runs_standalone() -> None:
    out = subprocess.run(
        [sys.executable, str(GRAFANA / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------
# 2. dashboard shape
# --------------------------------------------------------------------------


def test_uids_fixed_and_unique() -> None:
    assert [d.uid for d in DASHBOARDS] == ["sigma-fleet", "sigma-server", "sigma-jobs"]
    assert set(BY_UID) == EXPECTED_UIDS
    for d in DASHBOARDS:
        assert d.json["uid"] == d.uid
        assert d.filename == f"{d.uid}.json"
        assert d.json["id"] is None
        assert len(d.uid) <= 40


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_dashboard_metadata(d: Any) -> None:
    j = d.json
    assert j["title"].startswith("Sigma ")
    assert j["description"]
    assert "sigma" in j["tags"]
    assert 36 <= j["schemaVersion"] <= 41  # Grafana 10.x and 11.x
    assert "__inputs" not in j and "__requires" not in j
    assert "${DS_" not in gen.render(d)
    # Links to the other dashboards, by tag (so renames and sub-paths just work).
    tag_links = [lk for lk in j["links"] if lk["type"] == "dashboards"]
    assert tag_links and all("sigma" in lk["tags"] for lk in tag_links)
    assert all(lk["keepTime"] and lk["includeVars"] for lk in tag_links)


def test_dashboard_urls_point_at_generated_dashboards() -> None:
    for d in DASHBOARDS:
        for uid in re.findall(r"/d/([A-Za-z0-9_-]+)", gen.render(d)):
            assert uid in BY_UID, f"{d.uid}: link to unknown dashboard {uid}"
    # The fleet's server table links to the server dashboard with var-target.
    fleet_text = gen.render(BY_UID["sigma-fleet"])
    assert "/d/sigma-server/" in fleet_text
    assert "var-target=${__data.fields.target}" in fleet_text


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_panel_ids_unique_and_grid_not_overlapping(d: Any) -> None:
    panels = list(all_panels(d.json))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0
        assert g["x"] + g["w"] <= 24, f"{p['title']} runs off the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), p["title"])
                assert other == p["title"], f"{p['title']!r} overlaps {other!r}"


# --------------------------------------------------------------------------
# 3b. colours turn red where the alerts fire (alerts/thresholds.yml)
# --------------------------------------------------------------------------

THRESHOLDS_FILE = ROOT / "alerts" / "thresholds.yml"
# (dashboard, panel title, table column or None for the panel itself,
#  key of alerts/thresholds.yml). Clock skew is red on both sides: at +-value.
COLOURED_BY_AN_ALERT = [
    ("sigma-server", "Clock skew", None, "clock_skew_seconds"),
    ("sigma-server", "GPU $gpu temperature", None, "gpu_temperature_celsius"),
    ("sigma-server", "GPU $gpu temperature over time", None, "gpu_temperature_celsius"),
    ("sigma-server", "GPU $gpu memory used", None, "gpu_memory_utilization_ratio"),
    ("sigma-server", "GPU $gpu encoder", None, "gpu_encoder_utilization_ratio"),
    ("sigma-server", "GPU $gpu decoder", None, "gpu_decoder_utilization_ratio"),
    ("sigma-fleet", "Servers", "Memory used", "host_memory_utilization_ratio"),
    ("sigma-fleet", "GPU load, every GPU", "Encoder", "gpu_encoder_utilization_ratio"),
    ("sigma-fleet", "GPU load, every GPU", "Decoder", "gpu_decoder_utilization_ratio"),
    ("sigma-fleet", "GPU load, every GPU", "Memory used", "gpu_memory_utilization_ratio"),
    ("sigma-fleet", "GPU load, every GPU", "Temperature", "gpu_temperature_celsius"),
    ("sigma-fleet", "Hottest GPUs", None, "gpu_temperature_celsius"),
    ("sigma-fleet", "Slow channels", "Speed (5 min mean)", "job_speed_ratio"),
    ("sigma-server", "Down and slow channels", "Speed (5 min mean)", "job_speed_ratio"),
    ("sigma-jobs", "Worst channels", "Speed (5 min mean)", "job_speed_ratio"),
]


def _red_edges(panel: dict[str, Any], column: str | None) -> set[float]:
    """The values where the panel's (or column's) colour turns red or stops being red."""
    if column is None:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    else:
        [steps] = [prop["value"]["steps"] for o in panel["fieldConfig"]["overrides"]
                   if o["matcher"]["options"] == column
                   for prop in o["properties"] if prop["id"] == "thresholds"]
    edges = set()
    for before, step in itertools.pairwise(steps):
        if (before["color"] == "red") != (step["color"] == "red"):
            edges.add(step["value"])
    return edges


def _check_colours(dashboards: Any, numbers: dict[str, float]) -> list[str]:
    by_uid = {d.uid: d for d in dashboards}
    wrong = []
    for uid, title, column, key in COLOURED_BY_AN_ALERT:
        [panel] = [p for p in data_panels(by_uid[uid].json) if p["title"] == title]
        value = numbers[key]
        expected = {-value, value} if key == "clock_skew_seconds" else {value}
        got = _red_edges(panel, column)
        if got != expected:
            wrong.append(f"{uid} {title!r} {column or ''}: red at {sorted(got)}, "
                         f"{key} is {value}")
    return wrong


def test_panels_turn_red_where_the_alerts_fire() -> None:
    numbers = yaml.safe_load(THRESHOLDS_FILE.read_text())
    assert not _check_colours(DASHBOARDS, numbers)


def test_the_colours_come_from_the_thresholds_file(tmp_path: Path) -> None:
    """Not merely equal today: change the file and every coloured panel follows."""
    numbers = yaml.safe_load(THRESHOLDS_FILE.read_text())
    changed = {key: value * 0.5 + 1 for key, value in numbers.items()}
    path = tmp_path / "thresholds.yml"
    path.write_text(yaml.safe_dump(changed))
    dashboards = gen.build(gen.load_thresholds(path))
    assert not _check_colours(dashboards, changed)
    del changed["clock_skew_seconds"]
    path.write_text(yaml.safe_dump(changed))
    with pytest.raises(ValueError, match="clock_skew_seconds"):
        gen.load_thresholds(path)


# --------------------------------------------------------------------------
# 3c. what an operator opens the dashboards for
# --------------------------------------------------------------------------


def test_channels_open_on_the_worst() -> None:
    """Every per-channel panel of the channels dashboard shows the $worst worst
    channels (down first, then by mean speed), ranked once at the end of the range;
    only the overview counts (stats) count every selected channel."""
    d = BY_UID["sigma-jobs"]
    kinds = {p["id"]: p["type"] for p in data_panels(d.json)}
    per_channel = [q for q in d.queries if "sigma_job_" in q.expr and kinds[q.panel_id] != "stat"]
    assert len(per_channel) >= 15
    for q in per_channel:
        assert "and on (target, job_name) bottomk($worst, " in q.expr, q.panel_title
        assert "@ end()" in q.expr, q.panel_title
    for a in d.annotations:
        assert "bottomk($worst, " in a.expr, a.name


def test_a_row_per_gpu_with_its_model() -> None:
    d = BY_UID["sigma-server"]
    panels = d.json["panels"]
    [row] = [p for p in panels if p["type"] == "row" and p.get("repeat") == "gpu"]
    assert "$gpu" in row["title"]
    following = panels[panels.index(row) + 1:]
    in_row = following[:next((i for i, p in enumerate(following) if p["type"] == "row"),
                             len(following))]
    assert len(in_row) >= 5
    for p in in_row:
        assert "$gpu" in p["title"], "repeated panels need distinct titles"
        for target in p["targets"]:
            assert 'gpu=~"$gpu"' in target["expr"], p["title"]
    [model] = [p for p in in_row if "sigma_gpu_info" in p["targets"][0]["expr"]]
    assert model["targets"][0]["legendFormat"] == "{{name}}"
    assert model["options"]["textMode"] == "name"


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_restart_annotations(d: Any) -> None:
    expected = {
        "sigma-fleet": {"Server restarts"},
        "sigma-server": {"Server restarts", "App restarts", "Channel restarts"},
        "sigma-jobs": {"Channel restarts"},
    }[d.uid]
    listed = [a for a in d.json["annotations"]["list"] if not a.get("builtIn")]
    assert {a["name"] for a in listed} == expected
    for a in listed:
        assert a["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert re.search(r"increase\(sigma_(server|app|job)_restarts_total\{[^}]*\}"
                         r"\[\$__rate_interval\]\)\) > 0", a["expr"]), a["expr"]
        assert set(a["tagKeys"].split(",")) <= labels_of(a["expr"])
        assert a["titleFormat"]
    assert [a.expr for a in d.annotations] == [a["expr"] for a in listed]


# An incident replayed through promtool at 1-minute samples, evaluated at 10m,
# on server s1 (s2 is another server). Channel A keeps up but its last speed
# reads 0.9; B has been at half speed for 10 minutes; C is down; A's media time
# advances one second per second while B's is frozen. The server restarted at
# 9m. Prometheus' ALERTS holds firing and pending alerts of s1, s2 and none.
BASE = 'job="sigma", instance="e:1"'  # added to every sigma_ series, as a scrape does
INCIDENT = {
    'sigma_job_up{target="s1", job_name="A"}': "1x10",
    'sigma_job_up{target="s1", job_name="B"}': "1x10",
    'sigma_job_up{target="s1", job_name="C"}': "0x10",
    'sigma_job_up{target="s2", job_name="D"}': "1x10",
    'sigma_job_state{target="s1", job_name="A", state="running"}': "1x10",
    'sigma_job_state{target="s1", job_name="B", state="running"}': "1x10",
    'sigma_job_state{target="s1", job_name="C", state="stop"}': "1x10",
    'sigma_job_speed{target="s1", job_name="A"}': "1x9 0.9",
    'sigma_job_speed{target="s1", job_name="B"}': "0.5x10",
    'sigma_job_speed{target="s1", job_name="C"}': "0x10",
    'sigma_job_speed{target="s2", job_name="D"}': "1x10",
    'sigma_job_media_time_seconds{target="s1", job_name="A"}': "0+60x10",
    'sigma_job_media_time_seconds{target="s1", job_name="B"}': "300x10",
    'sigma_job_restarts_total{target="s1", job_name="A"}': "0x10",
    'sigma_server_restarts_total{target="s1"}': "0x8 1 1",
    # Error lines by class: C's feed fails (3 input lines a minute), A's CDN push
    # now and then (1 output line a minute); D, on s2, has input trouble of its own.
    'sigma_job_errors_by_class_total{target="s1", job_name="C", class="input"}': "0+3x10",
    'sigma_job_errors_by_class_total{target="s1", job_name="C", class="output"}': "0x10",
    'sigma_job_errors_by_class_total{target="s1", job_name="A", class="output"}': "0+1x10",
    'sigma_job_errors_by_class_total{target="s1", job_name="A", class="processing"}': "0x10",
    'sigma_job_errors_by_class_total{target="s2", job_name="D", class="input"}': "0+5x10",
    'ALERTS{alertname="SigmaServerDown", alertstate="firing", severity="critical", '
    'target="s1"}': "1x10",
    'ALERTS{alertname="SigmaServerDown", alertstate="firing", severity="critical", '
    'target="s2"}': "1x10",
    'ALERTS{alertname="SigmaJobBehindRealtime", alertstate="pending", severity="warning", '
    'target="s1", job_name="B"}': "1x10",
    'ALERTS{alertname="SigmaExporterDown", alertstate="firing", severity="warning"}': "1x10",
    'ALERTS{alertname="Watchdog", alertstate="firing", severity="none"}': "1x10",
}
S1, S1_A, S1_B, S1_C = ('{target="s1"}', '{target="s1", job_name="A"}',
                        '{target="s1", job_name="B"}', '{target="s1", job_name="C"}')
Expected = list[tuple[str, float | str]]  # (labels, value) as promtool prints them


def raw(labels: str) -> str:
    """`labels` plus those a query that does not aggregate keeps (job, instance)."""
    return '{instance="e:1", job="sigma", ' + labels[1:]


ALERTS_S1: Expected = [('{alertname="SigmaServerDown", severity="critical", target="s1"}', 1),
             ('{alertname="SigmaExporterDown", severity="warning"}', 1)]
# (dashboard, panel, ref, what the operator must see at 10m: [(labels, value)]).
# Values are wrapped by `* 0 + 1` where only which series show matters ("shown").
SEEN_IN_THE_INCIDENT: list[tuple[str, str, str, Expected]] = [
    # Behind real time is the 5-minute mean below job_speed_ratio: B, not A.
    ("sigma-fleet", "Channels behind real time", "A", [("{}", 1)]),
    ("sigma-fleet", "Slow channels", "A", [(S1_B, 0.5)]),
    ("sigma-jobs", "Behind real time", "A", [("{}", 1)]),
    # The server lists its down (C) and slow (B) channels, and nothing else.
    ("sigma-server", "Down and slow channels", "A", [(S1_B, 1), (S1_C, 0)]),
    ("sigma-server", "Down and slow channels", "C", [(S1_B, 0.5), (S1_C, 0)]),
    # Firing Sigma alerts of s1 and those naming no server; not pending, not s2.
    ("sigma-server", "Firing alerts", "A", ALERTS_S1),
    ("sigma-fleet", "Firing alerts", "A", ALERTS_S1),
    # Errors by class over 2 minutes: the feed (input) is s1's trouble, then the CDN.
    ("sigma-server", "Channel errors by class", "A",
     [('{class="input"}', 6), ('{class="output"}', 2), ('{class="processing"}', 0)]),
    ("sigma-fleet", "Channel errors by class", "A",
     [('{class="input"}', 6), ('{class="output"}', 2), ('{class="processing"}', 0)]),
    ("sigma-fleet", "Input and output errors by server", "A",
     [('{class="input", target="s1"}', 6), ('{class="output", target="s1"}', 2)]),
    ("sigma-jobs", "Errors by class", "A",
     [('{class="input", job_name="C", target="s1"}', 6),
      ('{class="output", job_name="C", target="s1"}', 0),
      ('{class="output", job_name="A", target="s1"}', 2),
      ('{class="processing", job_name="A", target="s1"}', 0)]),
    # Media time: A advances at 1, B is frozen at 0.
    ("sigma-jobs", "Media time advance", "A",
     [(raw(S1_A), 1), (raw(S1_B), 0)]),
]


def _replay(tmp_path: Path, cases: list[tuple[str, str, Expected]], worst: str = "10") -> str:
    """What promtool finds wrong when it evaluates each case's query in INCIDENT."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (apt-get install prometheus)")
    values = {"target": "s1", "job": ".*", "gpu": ".*", "worst": worst}
    checks = []
    for _, expr, expected in cases:
        expanded = gen.expand(expr, values, rate_interval="2m", range_="1h")
        if any(v == "shown" for _, v in expected):
            expanded, expected = f"({expanded}) * 0 + 1", [(lb, 1) for lb, _ in expected]
        checks.append({"expr": expanded, "eval_time": "10m", "exp_samples": [
            {"labels": labels, "value": value} for labels, value in expected]})
    (tmp_path / "rules.yml").write_text("groups: []\n")
    series = [{"series": s.replace("{", "{" + BASE + ", ", 1) if s.startswith("sigma_") else s,
               "values": v} for s, v in INCIDENT.items()]
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}]}))
    out = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    return out.stdout + out.stderr if out.returncode else ""


def test_panels_show_what_the_operator_must_see(tmp_path: Path) -> None:
    cases: list[tuple[str, str, Expected]] = []
    for uid, title, ref, expected in SEEN_IN_THE_INCIDENT:
        [q] = [q for q in BY_UID[uid].queries if q.panel_title == title and q.ref_id == ref]
        cases.append((f"{uid} {title} {ref}", q.expr, expected))
    assert not _replay(tmp_path, cases)


def test_the_channels_dashboard_opens_on_the_worst(tmp_path: Path) -> None:
    """With room for two, the down channel and the slow one, on every per-channel panel."""
    cases: list[tuple[str, str, Expected]] = []
    for q in BY_UID["sigma-jobs"].queries:
        if "bottomk($worst" in q.expr and "sigma_job_speed" in q.expr.split(" and on ")[0]:
            labels = [S1_B, S1_C] if q.expr.startswith("max by") else [raw(S1_B), raw(S1_C)]
            cases.append((q.panel_title, q.expr, [(lb, "shown") for lb in labels]))
    assert {c[0] for c in cases} == {"Worst channels", "Speed"}
    assert not _replay(tmp_path, cases, worst="2")


def test_restart_annotations_mark_the_restart(tmp_path: Path) -> None:
    [server] = [a for a in BY_UID["sigma-server"].annotations if a.name == "Server restarts"]
    [fleet] = [a for a in BY_UID["sigma-fleet"].annotations if a.name == "Server restarts"]
    [channel] = [a for a in BY_UID["sigma-jobs"].annotations]
    assert not _replay(tmp_path, [("server", server.expr, [(S1, 1)]),
                                  ("fleet", fleet.expr, [(S1, 1)]),
                                  ("channel", channel.expr, [])])


def test_the_replay_can_fail(tmp_path: Path) -> None:
    """The instantaneous speed (what the panels used to read) sees A as behind too."""
    old = ('count((sigma_job_speed{target=~"$target"} < 1) and on (target, job_name) '
           '(sigma_job_up{target=~"$target"} == 1)) or vector(0)')
    assert _replay(tmp_path, [("old", old, [("{}", 1)])])


# --------------------------------------------------------------------------
# 4. lint (dashboard-linter's rules and ours)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_template_variables(d: Any) -> None:
    variables = {v["name"]: v for v in d.json["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert d.json["templating"]["list"][0] is ds, "datasource variable comes first"
    for v in variables.values():
        if v["type"] != "query":
            continue
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert v["refresh"] == 2, f"{v['name']}: refresh on time range change"
        assert v["definition"] == v["query"]
        if v["includeAll"]:
            assert v["multi"], f"{v['name']}: All without multi"
            assert v.get("allValue") == ".*", f"{v['name']}: All must match new series"
    target = variables["target"]
    assert target["query"] == "label_values(sigma_up, target)"
    if d.uid == "sigma-server":
        assert not target["multi"] and not target["includeAll"], "one server per view"
    else:
        assert target["multi"] and target["includeAll"]
    if d.uid == "sigma-jobs":
        job = variables["job"]
        assert job["query"] == 'label_values(sigma_job_up{target=~"$target"}, job_name)'
        assert job["multi"] and job["includeAll"]
        # Opens on a few channels, not All x All (see test_channels_open_on_the_worst).
        worst = variables["worst"]
        assert worst["type"] == "custom" and not worst["multi"] and not worst["includeAll"]
        assert worst["current"]["value"] == "10"
        assert [o["value"] for o in worst["options"]] == worst["query"].split(",")
        assert dict(d.defaults) == {"worst": "10"}
    if d.uid == "sigma-server":
        gpu = variables["gpu"]
        assert gpu["query"] == 'label_values(sigma_gpu_info{target="$target"}, gpu)'
        assert gpu["multi"] and gpu["includeAll"], "a row per GPU needs All"
    # Variable queries exposed for the end-to-end test match the JSON.
    exposed = {v.name: v for v in d.variables}
    assert set(exposed) == {n for n, v in variables.items() if v["type"] == "query"}
    for name, vq in exposed.items():
        assert f"label_values({vq.match}, {vq.label})" == variables[name]["query"]


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_panels_use_datasource_variable(d: Any) -> None:
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for p in data_panels(d.json):
        assert p.get("datasource") == ref, p["title"]
        assert p["targets"], f"{p['title']}: no queries"
        for t in p["targets"]:
            assert t.get("datasource") == ref, f"{p['title']} {t['refId']}"


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_panels_have_title_description_unit(d: Any) -> None:
    titles = []
    for p in all_panels(d.json):
        assert p.get("title", "").strip(), f"panel {p['id']} has no title"
        if p["type"] == "row":
            continue
        titles.append(p["title"])
        assert len(p.get("description", "")) >= 20, f"{p['title']}: no description"
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert unit, f"{p['title']}: no unit"
        units = [unit] + [
            prop["value"]
            for o in p["fieldConfig"]["overrides"]
            for prop in o["properties"]
            if prop["id"] == "unit"
        ]
        for u in units:
            assert u in KNOWN_UNITS or u.startswith("suffix:"), f"{p['title']}: unit {u!r}"
    assert len(titles) == len(set(titles)), "duplicate panel titles (the e2e test names them)"


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_rate_functions_use_rate_interval(d: Any) -> None:
    for p in data_panels(d.json):
        for t in p["targets"]:
            q = QUERY_OF[(d.uid, p["id"], t["refId"])]
            for window, stack in scan(t["expr"])[1]:
                assert ":" not in window, f"{p['title']}: subquery {window!r}"
                if not stack or stack[-1] not in RATE_FUNCS:
                    continue
                if window == "$__rate_interval":
                    continue
                # The one exception: a count over the shown period, in an instant
                # query, with its reason written down.
                assert window == "$__range" and stack[-1] == "increase", (
                    f"{p['title']}: {stack[-1]}() over [{window}]"
                )
                assert q.range_reason and q.instant and t["instant"], (
                    f"{p['title']}: increase over $__range needs an instant query and a reason"
                )


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_counters_only_inside_rate_functions(d: Any) -> None:
    """A counter is read through rate()/increase(), or through new_events() when
    its series are born at their first increment (open label values)."""
    for where, expr in exprs(d):
        for metric, stack in scan(expr)[0]:
            if metric.endswith("_total"):
                born = re.search(rf"\(\({metric}(\{{[^}}]*\}}) - {metric}\1 offset (\S+)\) "
                                 rf">= 0 or \({metric}\1 unless {metric}\1 offset \2\)\)",
                                 expr)
                assert born or (stack and stack[-1] in RATE_FUNCS), f"{where}: bare {metric}"


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_queries_filter_by_the_dashboard_variables(d: Any) -> None:
    """Every selector of a per-target metric honours $target (and $job on channels)."""
    variables = {v["name"] for v in d.json["templating"]["list"]}
    target_matcher = 'target="$target"' if d.uid == "sigma-server" else 'target=~"$target"'
    for where, expr in exprs(d):
        for name, matchers in re.findall(r"\b(sigma_\w+)(\{[^}]*\})?", expr):
            labels = DEFS[name].labels if name in DEFS else ()
            if "target" in labels:
                assert target_matcher in matchers, f"{where}: {name} unfiltered"
            if d.uid == "sigma-jobs" and "job_name" in labels:
                assert 'job_name=~"$job"' in matchers, f"{where}: {name} without $job"
        # The firing-alerts panel: the dashboard's servers, and alerts naming none.
        for matchers in re.findall(r"\bALERTS(\{[^}]*\})", expr):
            assert 'alertstate="firing"' in matchers and 'alertname=~"Sigma.*"' in matchers
            assert 'target=~"$target|"' in matchers, f"{where}: ALERTS unfiltered"
        for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", expr):
            used = a or b
            assert used in variables or used in BUILTIN_VARS, f"{where}: ${used}"


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_legends_and_groupings_use_real_labels(d: Any) -> None:
    legends = {
        (p["id"], t["refId"]): t.get("legendFormat", "")
        for p in data_panels(d.json)
        for t in p["targets"]
    }
    for q in d.queries:
        known = labels_of(q.expr)
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legends[(q.panel_id, q.ref_id)]):
            assert label in known, f"{q.panel_title}: legend uses unknown label {label!r}"
    for where, expr in exprs(d):
        known = labels_of(expr)
        grouped = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
        for group in grouped:
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in known, f"{where}: groups by unknown label {label!r}"


@pytest.mark.parametrize("d", DASHBOARDS, ids=case_id)
def test_table_queries_merge_on_the_shown_labels(d: Any) -> None:
    """Table queries aggregate `by` the label columns, so their rows join cleanly."""
    for p in data_panels(d.json):
        if p["type"] != "table":
            continue
        organize = next(t for t in p["transformations"] if t["id"] == "organize")
        columns = set(organize["options"]["indexByName"])
        for t in p["targets"]:
            assert t["format"] == "table" and t["instant"], p["title"]
            m = re.match(r"\s*(?:max|min|sum|count|avg) by \(([^)]*)\)", t["expr"])
            assert m, f"{p['title']} {t['refId']}: table query must aggregate by labels"
            by = {x.strip() for x in m.group(1).split(",")}
            assert by <= columns, f"{p['title']}: {by - columns} not shown"
        renamed = organize["options"]["renameByName"]
        if len(p["targets"]) > 1:
            assert p["transformations"][0]["id"] == "merge"
            assert all(k.startswith("Value #") for k in renamed)
        for o in p["fieldConfig"]["overrides"]:
            name = o["matcher"]["options"]
            assert name in columns or name in renamed.values(), f"{p['title']}: {name}"


# --------------------------------------------------------------------------
# 6. metric coverage against the exporter's contract
# --------------------------------------------------------------------------


def _charted() -> set[str]:
    return {m for _, expr in all_exprs() for m, _ in scan(expr)[0] if m.startswith("sigma_")}


def test_every_used_metric_exists() -> None:
    unknown = sorted(_charted() - set(DEFS))
    assert not unknown, f"dashboards use metrics the exporter does not define: {unknown}"


def test_every_defined_metric_is_charted_or_explained() -> None:
    charted = _charted()
    missing = sorted(set(DEFS) - charted - set(gen.NOT_CHARTED))
    assert not missing, (
        f"defined metrics no panel shows; add a panel or a reason to NOT_CHARTED: {missing}"
    )
    for name, reason in gen.NOT_CHARTED.items():
        assert name in DEFS, f"NOT_CHARTED lists unknown metric {name}"
        assert name not in charted, f"{name} is charted but listed in NOT_CHARTED"
        assert len(reason) > 20, f"{name}: give a real reason"


def test_nothing_queries_unprefixed_or_recording_rule_series() -> None:
    """Dashboards query raw metrics only, never recording rules (level:metric:op)."""
    for where, expr in all_exprs():
        for m, _ in scan(expr)[0]:
            assert ":" not in m, f"{where}: recording rule {m}"
            assert m.startswith("sigma_") or m in {"vector", "time", "ALERTS"}, f"{where}: {m}"


# --------------------------------------------------------------------------
# The query API the end-to-end test (issue 8 part 5) will use
# --------------------------------------------------------------------------


def test_query_api_matches_the_json() -> None:
    for d in DASHBOARDS:
        targets = {(p["id"], t["refId"]): (p, t) for p in data_panels(d.json) for t in p["targets"]}
        assert set(targets) == {(q.panel_id, q.ref_id) for q in d.queries}
        for q in d.queries:
            p, t = targets[(q.panel_id, q.ref_id)]
            assert (q.expr, q.instant, q.panel_title) == (t["expr"], t["instant"], p["title"])
            assert q.needs_nvml == bool(re.search(r"sigma_(nvml|gpu_crosscheck)_", q.expr))
    flagged = {q.panel_title for q in all_queries() if q.empty_when_healthy}
    assert {"Poll errors by reason", "Errors by code", "Slow channels",
            "Down and slow channels"} <= flagged
    assert not any(q.empty_when_healthy for q in all_queries() if q.panel_title == "Servers")


def test_expand_substitutes_like_grafana() -> None:
    expr = 'rate(x{target=~"$target",job=~"${job}"}[$__rate_interval])'
    got = gen.expand(expr, {"target": ["a.b", "c"], "job": ".*"}, rate_interval="2m")
    assert got == 'rate(x{target=~"(a\\\\.b|c)",job=~".*"}[2m])'
    assert gen.expand('x{target="$target"}[$__range]', {"target": "s1"}) == 'x{target="s1"}[1h]'
    with pytest.raises(KeyError):
        gen.expand('x{a="$nope"}', {})


def test_queries_flag_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(GRAFANA / "generate.py"), "--queries"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert len(doc["panels"]) == sum(len(d.queries) for d in DASHBOARDS)
    assert {v["name"] for v in doc["variables"]} == {"target", "job", "gpu"}
    assert len(doc["annotations"]) == sum(len(d.annotations) for d in DASHBOARDS) >= 3


def test_promql_parses(tmp_path: Path) -> None:
    """Every expanded query is valid PromQL for Prometheus (promtool check rules)."""
    promtool = require_tool("promtool")  # fails, never skips: CI installs it
    values = {"target": "sigma-server-01", "job": ".*", "gpu": ".*", "worst": "10"}
    rules = []
    for n, (_, expr) in enumerate(all_exprs()):
        rules.append({"record": f"dashboard_query_{n}", "expr": gen.expand(expr, values)})
    for n, v in enumerate(gen.variable_queries()):
        rules.append({"record": f"variable_query_{n}", "expr": gen.expand(v.match, values)})
    for n, v in enumerate(gen.variable_queries()):
        rules.append(
            {"record": f"variable_multi_{n}", "expr": gen.expand(v.match, {"target": ["a", "b"]})}
        )
    # Grafana's own form of a multi selection with "|" appended (firing alerts).
    rules.append({"record": "alerts_multi", "expr": gen.expand(
        'ALERTS{target=~"$target|"}', {"target": ["a", "b"]})})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------
# 3. provisioning and docs
# --------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/sigma.yml").read_text())
    assert doc["apiVersion"] == 1
    [ds] = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["access"] == "proxy"
    assert ds["url"].startswith("http")
    assert ds["uid"] and ds["name"]
    # $__rate_interval is 4 x this; it must be the scrape interval.
    assert re.fullmatch(r"\d+[smh]", ds["jsonData"]["timeInterval"])


def test_dashboard_provisioning() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning/dashboards/sigma.yml").read_text())
    assert doc["apiVersion"] == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["options"]["foldersFromFilesStructure"] is False
    assert provider["folder"]


def test_docs_cover_the_ways_in() -> None:
    text = (ROOT / "docs/dashboards.md").read_text()
    for needle in (
        "grafana/provisioning/datasources/sigma.yml",
        "grafana/provisioning/dashboards/sigma.yml",
        "Import",
        'grafana_dashboard: "1"',
        "python grafana/generate.py",
        "--check",
        *EXPECTED_UIDS,
        *gen.NOT_CHARTED,
    ):
        assert needle in text, f"docs/dashboards.md does not mention {needle}"
