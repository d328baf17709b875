#!/usr/bin/env python3
"""Grafana dashboards for sigma-exporter, as code.

    python grafana/generate.py           write grafana/dashboards/*.json
    python grafana/generate.py --check   exit 1 if the committed JSON differs
    python grafana/generate.py --queries print every panel and variable query (JSON)

The module is standard-library only, so it runs without the exporter's
dependencies. It is also an API for tests: `build()` returns every dashboard
with, next to its JSON, the list of its panel queries (`PanelQuery`) and its
variable queries (`VariableQuery`); `expand()` substitutes Grafana variables
so a query can be sent to a real Prometheus. A panel query flagged
`empty_when_healthy` may legitimately return nothing on a healthy fleet
(errors, mismatches, jobs behind real time); `needs_nvml` marks queries that
only return data when the exporter runs in agent mode with NVML.

Conventions (checked by tests/test_dashboards.py):
- every panel and target uses the `${datasource}` template variable;
- every panel has a title, a description and a unit;
- rate()/irate()/increase() use `[$__rate_interval]`; the only exception is
  increase(...[$__range]) in an instant query that carries a `range_reason`
  (a count "over the shown period", e.g. restarts in a table);
- counters (`*_total`) only appear inside rate()/irate()/increase();
- metrics the dashboards do not show are listed in NOT_CHARTED with a reason.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

SCHEMA_VERSION = 39  # Grafana 10.4; Grafana 11 loads it unchanged
TAGS = ("sigma",)
DS: Json = {"type": "prometheus", "uid": "${datasource}"}
DEFAULT_TIME = {"from": "now-6h", "to": "now"}

FLEET_UID = "sigma-fleet"
SERVER_UID = "sigma-server"
JOBS_UID = "sigma-jobs"

# Exported metric families no panel shows, and why. The test fails for a
# defined metric that is neither charted nor listed here.
NOT_CHARTED: dict[str, str] = {
    "sigma_server_port": (
        "static configuration (the API port the server reports); it never changes while "
        "the server runs and carries no health signal. Query it in Explore when needed."
    ),
    "sigma_job_weight": (
        "undocumented scheduling weight reported per job; no operational meaning is "
        "known, so a panel would invite guesses."
    ),
    "sigma_job_media_time_seconds": (
        "media time (PTS) advances at the job's speed; the speed panel already shows a "
        "stalled or slow job, and PTS values are per-stream offsets, not comparable."
    ),
}

GRID_WIDTH = 24


# --------------------------------------------------------------------------
# The query model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """One query of a panel, before it is placed."""

    expr: str
    legend: str = ""
    instant: bool = False
    column: str | None = None  # table panels: name of the value column (None: hidden)
    unit: str | None = None  # table panels: unit of the value column
    empty_when_healthy: bool | None = None  # None: inherit the panel's flag
    range_reason: str = ""  # why increase() may use [$__range] here


@dataclass(frozen=True)
class PanelQuery:
    """A query as a later end-to-end test needs it."""

    dashboard_uid: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str  # with Grafana variables ($target, $__rate_interval, ...) unexpanded
    instant: bool
    empty_when_healthy: bool
    needs_nvml: bool
    range_reason: str


@dataclass(frozen=True)
class VariableQuery:
    dashboard_uid: str
    name: str
    query: str  # as Grafana holds it: label_values(<match>, <label>)
    label: str  # the label whose values are listed
    match: str  # series selector (may hold other variables; expand() it)
    multi: bool
    include_all: bool
    all_value: str | None


@dataclass(frozen=True)
class Dashboard:
    uid: str
    filename: str
    json: Json
    queries: tuple[PanelQuery, ...]
    variables: tuple[VariableQuery, ...]


@dataclass
class Panel:
    """A panel before placement: its JSON without id/gridPos, and its queries."""

    body: Json
    queries: tuple[Q, ...]
    empty_when_healthy: bool = False
    w: int = 12
    h: int = 8


def _needs_nvml(expr: str) -> bool:
    return bool(re.search(r"\bsigma_(nvml_|gpu_crosscheck_)", expr))


# --------------------------------------------------------------------------
# Panel builders
# --------------------------------------------------------------------------


def _thresholds(*steps: tuple[float | None, str]) -> Json:
    if not steps:
        steps = ((None, "green"),)
    return {
        "mode": "absolute",
        "steps": [{"color": c, "value": v} for v, c in steps],
    }


UP_MAPPING: list[Json] = [
    {
        "type": "value",
        "options": {
            "0": {"color": "red", "index": 1, "text": "down"},
            "1": {"color": "green", "index": 0, "text": "up"},
        },
    }
]
MISMATCH_MAPPING: list[Json] = [
    {
        "type": "value",
        "options": {
            "0": {"color": "green", "index": 0, "text": "agree"},
            "1": {"color": "red", "index": 1, "text": "mismatch"},
        },
    }
]
MISSING_MAPPING: list[Json] = [
    {
        "type": "value",
        "options": {
            "0": {"color": "green", "index": 0, "text": "both"},
            "1": {"color": "red", "index": 1, "text": "missing"},
        },
    }
]


def _base(kind: str, title: str, description: str, unit: str) -> Json:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DS),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "links": [],
    }


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    w: int = 12,
    h: int = 8,
    min_: float | None = None,
    max_: float | None = None,
    bars: bool = False,
    stack: bool = False,
    threshold_line: float | None = None,
    dashed: str | None = None,
    decimals: int | None = None,
    empty_when_healthy: bool = False,
    overrides: Sequence[Json] = (),
) -> Panel:
    """A time series; `dashed` is a regex of series drawn dashed (reference lines)."""
    body = _base("timeseries", title, description, unit)
    defaults = body["fieldConfig"]["defaults"]
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
    }
    if threshold_line is not None:
        custom["thresholdsStyle"] = {"mode": "dashed"}
        defaults["thresholds"] = _thresholds((None, "transparent"), (threshold_line, "red"))
    defaults["custom"] = custom
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if decimals is not None:
        defaults["decimals"] = decimals
    ovr = list(overrides)
    if dashed:
        ovr.append(
            {
                "matcher": {"id": "byRegexp", "options": dashed},
                "properties": [
                    {
                        "id": "custom.lineStyle",
                        "value": {"dash": [10, 10], "fill": "dash"},
                    },
                    {"id": "custom.fillOpacity", "value": 0},
                ],
            }
        )
    body["fieldConfig"]["overrides"] = ovr
    body["options"] = {
        # Short panels have no room below the plot: list the series on the right.
        "legend": {
            "calcs": ["lastNotNull", "max"] if h > 6 else [],
            "displayMode": "table" if h > 6 else "list",
            "placement": "bottom" if h > 6 else "right",
            "showLegend": True,
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return Panel(body, tuple(queries), empty_when_healthy, w, h)


def stat(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    w: int = 4,
    h: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = (),
    mappings: Sequence[Json] = (),
    text_mode: str = "auto",
    color_mode: str = "value",
    decimals: int | None = None,
    empty_when_healthy: bool = False,
) -> Panel:
    body = _base("stat", title, description, unit)
    defaults = body["fieldConfig"]["defaults"]
    defaults["thresholds"] = _thresholds(*thresholds)
    defaults["mappings"] = list(mappings)
    if decimals is not None:
        defaults["decimals"] = decimals
    body["options"] = {
        "colorMode": color_mode,
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": text_mode,
    }
    qs = tuple(replace(q, instant=True) for q in queries)
    return Panel(body, qs, empty_when_healthy, w, h)


def bargauge(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    w: int = 12,
    h: int = 8,
    min_: float | None = None,
    max_: float | None = None,
    thresholds: Sequence[tuple[float | None, str]] = (),
    empty_when_healthy: bool = False,
) -> Panel:
    body = _base("bargauge", title, description, unit)
    defaults = body["fieldConfig"]["defaults"]
    defaults["thresholds"] = _thresholds(*thresholds)
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    body["options"] = {
        "displayMode": "gradient",
        "minVizHeight": 10,
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
    }
    qs = tuple(replace(q, instant=True) for q in queries)
    return Panel(body, qs, empty_when_healthy, w, h)


def state_timeline(
    title: str,
    description: str,
    queries: Sequence[Q],
    mappings: Sequence[Json],
    *,
    w: int = 12,
    h: int = 8,
    empty_when_healthy: bool = False,
) -> Panel:
    body = _base("state-timeline", title, description, "none")
    defaults = body["fieldConfig"]["defaults"]
    defaults["mappings"] = list(mappings)
    defaults["thresholds"] = _thresholds((None, "green"), (1, "red"))
    defaults["custom"] = {"fillOpacity": 80, "lineWidth": 0}
    body["options"] = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "never",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return Panel(body, tuple(queries), empty_when_healthy, w, h)


@dataclass(frozen=True)
class Col:
    """Extra settings of a table's value column (matched by its display name)."""

    name: str
    mappings: tuple[Json, ...] = ()
    thresholds: tuple[tuple[float | None, str], ...] = ()
    cell: str | None = None  # color-background, color-text, gauge
    decimals: int | None = None
    min_: float | None = None
    max_: float | None = None
    links: tuple[Json, ...] = ()


def ratio_gauge(name: str, warn: float = 0.8, crit: float = 0.95) -> Col:
    """A 0-1 table column drawn as a gauge, orange from `warn`, red from `crit`."""
    return Col(name, cell="gauge", min_=0, max_=1,
               thresholds=((None, "green"), (warn, "orange"), (crit, "red")))


def table(
    title: str,
    description: str,
    queries: Sequence[Q],
    *,
    labels: Sequence[str],
    unit: str = "none",
    w: int = 24,
    h: int = 8,
    columns: Sequence[Col] = (),
    label_links: Mapping[str, Sequence[Json]] | None = None,
    sort_by: tuple[str, bool] | None = None,
    empty_when_healthy: bool = False,
) -> Panel:
    """An instant table; rows are joined on `labels` (the label columns kept).

    Each query's value column is renamed to its `Q.column` (hidden when None)
    and given `Q.unit`. Every query should aggregate `by` a subset of
    `labels`, so the rows of all queries merge.
    """
    body = _base("table", title, description, unit)
    qs = tuple(replace(q, instant=True) for q in queries)
    single = len(qs) == 1
    exclude: Json = {"Time": True}
    rename: Json = {}
    order: list[str] = list(labels)
    overrides: list[Json] = []
    for i, q in enumerate(qs):
        value_field = "Value" if single else f"Value #{_ref_id(i)}"
        if q.column is None:
            exclude[value_field] = True
            continue
        rename[value_field] = q.column
        order.append(value_field)
        if q.unit:
            overrides.append(
                {
                    "matcher": {"id": "byName", "options": q.column},
                    "properties": [{"id": "unit", "value": q.unit}],
                }
            )
    for col in columns:
        props: list[Json] = []
        if col.mappings:
            props.append({"id": "mappings", "value": list(col.mappings)})
        if col.thresholds:
            props.append({"id": "thresholds", "value": _thresholds(*col.thresholds)})
        if col.cell:
            cell: Json = {"type": col.cell}
            if col.cell == "gauge":
                cell["mode"] = "basic"
            props.append({"id": "custom.cellOptions", "value": cell})
        if col.decimals is not None:
            props.append({"id": "decimals", "value": col.decimals})
        if col.min_ is not None:
            props.append({"id": "min", "value": col.min_})
        if col.max_ is not None:
            props.append({"id": "max", "value": col.max_})
        if col.links:
            props.append({"id": "links", "value": list(col.links)})
        overrides.append({"matcher": {"id": "byName", "options": col.name}, "properties": props})
    for label, links in (label_links or {}).items():
        overrides.append(
            {
                "matcher": {"id": "byName", "options": label},
                "properties": [{"id": "links", "value": list(links)}],
            }
        )
    body["fieldConfig"]["overrides"] = overrides
    body["fieldConfig"]["defaults"]["custom"] = {"align": "auto", "filterable": True}
    body["fieldConfig"]["defaults"]["thresholds"] = _thresholds()
    transformations: list[Json] = []
    if not single:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "organize",
            "options": {
                "excludeByName": exclude,
                "indexByName": {name: i for i, name in enumerate(order)},
                "renameByName": rename,
            },
        }
    )
    body["transformations"] = transformations
    body["options"] = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
    }
    if sort_by is not None:
        body["options"]["sortBy"] = [{"desc": sort_by[1], "displayName": sort_by[0]}]
    return Panel(body, qs, empty_when_healthy, w, h)


def _ref_id(i: int) -> str:
    return chr(ord("A") + i)


# --------------------------------------------------------------------------
# Dashboard assembly
# --------------------------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def query_variable(
    name: str,
    label: str,
    match: str,
    *,
    title: str,
    multi: bool,
    include_all: bool,
) -> Json:
    query = f"label_values({match}, {label})"
    var: Json = {
        "current": {},
        "datasource": dict(DS),
        "definition": query,
        "hide": 0,
        "includeAll": include_all,
        "label": title,
        "multi": multi,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,  # on time range change: targets and jobs come and go
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if include_all:
        # ".*" rather than a list of the values seen, so series that appear later
        # (a new channel) are not left out of "All".
        var["allValue"] = ".*"
    return var


@dataclass
class Board:
    uid: str
    title: str
    description: str
    variables: list[Json]
    panels: list[Json] = field(default_factory=list)
    queries: list[PanelQuery] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_h: int = 0

    def _newline(self) -> None:
        self._y += self._row_h
        self._x = 0
        self._row_h = 0

    def row(self, title: str) -> None:
        if self._x:
            self._newline()
        self.panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self._y},
                "id": len(self.panels) + 1,
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        self._y += 1

    def add(self, *panels: Panel) -> None:
        for p in panels:
            if self._x + p.w > GRID_WIDTH:
                self._newline()
            pid = len(self.panels) + 1
            body = dict(p.body)
            body["id"] = pid
            body["gridPos"] = {"h": p.h, "w": p.w, "x": self._x, "y": self._y}
            targets: list[Json] = []
            for i, q in enumerate(p.queries):
                ref = _ref_id(i)
                target: Json = {
                    "datasource": dict(DS),
                    "editorMode": "code",
                    "expr": q.expr,
                    "instant": q.instant,
                    "legendFormat": q.legend or "__auto",
                    "range": not q.instant,
                    "refId": ref,
                }
                if body["type"] == "table":
                    target["format"] = "table"
                targets.append(target)
                empty = (
                    p.empty_when_healthy if q.empty_when_healthy is None else (q.empty_when_healthy)
                )
                self.queries.append(
                    PanelQuery(
                        dashboard_uid=self.uid,
                        panel_id=pid,
                        panel_title=str(body["title"]),
                        ref_id=ref,
                        expr=q.expr,
                        instant=q.instant,
                        empty_when_healthy=empty,
                        needs_nvml=_needs_nvml(q.expr),
                        range_reason=q.range_reason,
                    )
                )
            body["targets"] = targets
            self.panels.append(body)
            self._x += p.w
            self._row_h = max(self._row_h, p.h)

    def link(self, link: Json, *titles: str) -> None:
        """Add a panel link to the panels with these titles."""
        found = [p for p in self.panels if p["title"] in titles]
        if len(found) != len(titles):
            raise ValueError(f"no panel titled one of {titles}")
        for p in found:
            p["links"] = [*p["links"], link]

    def render(self) -> Dashboard:
        dash: Json = {
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [
                {
                    "asDropdown": False,
                    "icon": "external link",
                    "includeVars": True,
                    "keepTime": True,
                    "tags": list(TAGS),
                    "targetBlank": False,
                    "title": "Sigma dashboards",
                    "tooltip": "",
                    "type": "dashboards",
                    "url": "",
                }
            ],
            "liveNow": False,
            "panels": self.panels,
            "refresh": "1m",
            "schemaVersion": SCHEMA_VERSION,
            "tags": list(TAGS),
            "templating": {"list": self.variables},
            "time": dict(DEFAULT_TIME),
            "timepicker": {},
            "timezone": "",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }
        variables = tuple(
            _variable_query(self.uid, v) for v in self.variables if v["type"] == "query"
        )
        return Dashboard(
            uid=self.uid,
            filename=f"{self.uid}.json",
            json=dash,
            queries=tuple(self.queries),
            variables=variables,
        )


def _variable_query(uid: str, var: Json) -> VariableQuery:
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"])
    if m is None:
        raise ValueError(f"unsupported variable query {var['query']!r}")
    return VariableQuery(
        dashboard_uid=uid,
        name=var["name"],
        query=var["query"],
        label=m.group(2),
        match=m.group(1),
        multi=var["multi"],
        include_all=var["includeAll"],
        all_value=var.get("allValue"),
    )


def new_events(counter: str, window: str) -> str:
    """Events a counter with open label values gained over `window`, per series.

    Such a counter (errors by field or code) is born at its first increment,
    so rate() and increase() never see its first events: the second arm
    counts a series that is new within the window. A reset (the exporter
    restarted and counted the lines Sigma still lists once more) counts
    nothing rather than all of them again.
    """
    return (f"(({counter} - {counter} offset {window}) >= 0 "
            f"or ({counter} unless {counter} offset {window}))")


def _link(title: str, url: str) -> Json:
    return {"targetBlank": False, "title": title, "url": url}


SERVER_LINK = _link(
    "Open the Sigma server dashboard for ${__data.fields.target}",
    f"/d/{SERVER_UID}/sigma-server?${{__url_time_range}}&${{datasource:queryparam}}"
    "&var-target=${__data.fields.target}",
)
JOBS_LINK_FOR_ROW = _link(
    "Show only this channel",
    f"/d/{JOBS_UID}/sigma-channels?${{__url_time_range}}&${{datasource:queryparam}}"
    "&var-target=${__data.fields.target}&var-job=${__data.fields.job_name}",
)
JOBS_LINK = _link(
    "Sigma channels",
    f"/d/{JOBS_UID}/sigma-channels?${{__url_time_range}}&${{datasource:queryparam}}"
    "&${target:queryparam}",
)


# --------------------------------------------------------------------------
# Sigma fleet
# --------------------------------------------------------------------------


def fleet() -> Dashboard:
    def s(metric: str, *matchers: str) -> str:
        return metric + "{" + ",".join(('target=~"$target"', *matchers)) + "}"

    b = Board(
        uid=FLEET_UID,
        title="Sigma fleet",
        description="Every Sigma Media Server the exporters poll: who is up, what runs, "
        "how loaded the GPUs are.",
        variables=[
            datasource_variable(),
            query_variable(
                "target", "target", "sigma_up", title="Server", multi=True, include_all=True
            ),
        ],
    )
    running = f"({s('sigma_job_speed')} < 1) and on (target, job_name) ({s('sigma_job_up')} == 1)"
    b.row("Overview")
    b.add(
        stat(
            "Servers up",
            "Targets whose last dump poll succeeded, out of all selected targets "
            "(sigma_up). A server counts as up when the exporter could read its API.",
            "none",
            [
                Q(f"sum({s('sigma_up')})", "up"),
                Q(f"count({s('sigma_up')})", "of"),
            ],
            text_mode="value_and_name",
            color_mode="none",
        ),
        stat(
            "Servers down",
            "Targets whose last dump poll failed (sigma_up == 0). Their data series are "
            "gone until the next successful poll; see the server dashboard's exporter health.",
            "none",
            [Q(f"count({s('sigma_up')} == 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
        ),
        stat(
            "Channels running",
            "Jobs whose state is started or running (sigma_job_up == 1).",
            "none",
            [Q(f"sum({s('sigma_job_up')})")],
        ),
        stat(
            "Channels behind real time",
            "Running jobs processing slower than real time (sigma_job_speed < 1): the "
            "channel falls behind and viewers will see stalls.",
            "none",
            [Q(f"count({running}) or vector(0)")],
            thresholds=((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        stat(
            "Channels down",
            "Jobs the server knows that are not started or running (sigma_job_up == 0).",
            "none",
            [Q(f"count({s('sigma_job_up')} == 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
        ),
        stat(
            "Queued jobs",
            "Jobs waiting to be started, summed over the selected servers (sigma_jobs_queued).",
            "none",
            [Q(f"sum({s('sigma_jobs_queued')})")],
            thresholds=((None, "green"), (1, "orange")),
        ),
    )
    b.link(
        JOBS_LINK, "Channels running", "Channels behind real time", "Channels down", "Queued jobs"
    )
    b.add(
        bargauge(
            "Server versions",
            "How many selected servers run each Sigma version (sigma_server_info). "
            "More than one bar means a rollout is in progress or a server was missed.",
            "none",
            [Q(f"count by (version) ({s('sigma_server_info')})", "{{version}}")],
            w=8,
            h=6,
            min_=0,
        ),
        timeseries(
            "Channels by state",
            "Jobs per state as the servers count them (sigma_tasks, dump `task`), summed "
            "over the selected servers.",
            "none",
            [Q(f"sum by (state) ({s('sigma_tasks')})", "{{state}}")],
            w=8,
            h=6,
            stack=True,
            decimals=0,
        ),
        timeseries(
            "Queued jobs by server",
            "Jobs waiting to be started per server (sigma_jobs_queued). A queue that "
            "does not drain means the server cannot place new jobs (GPU full, licence).",
            "none",
            [Q(f"sum by (target) ({s('sigma_jobs_queued')})", "{{target}}")],
            w=8,
            h=6,
            decimals=0,
        ),
    )
    b.add(
        table(
            "Slow channels",
            "Running jobs with speed below 1 right now. Empty when every channel keeps up.",
            [Q(f"max by (target, job_name) ({running})", column="Speed")],
            labels=("target", "job_name"),
            h=6,
            columns=(
                Col(
                    "Speed",
                    decimals=2,
                    cell="color-text",
                    thresholds=((None, "red"), (0.95, "orange")),
                ),
            ),
            label_links={"job_name": [JOBS_LINK_FOR_ROW]},
            sort_by=("Speed", False),
            empty_when_healthy=True,
        )
    )

    b.row("Servers")
    b.add(
        table(
            "Servers",
            "One row per selected target. Uptime is now minus the server's start time; "
            "last poll is the exporter's last successful dump poll. Click a target to open "
            "its server dashboard. A target that is down keeps only its health columns.",
            [
                Q(f"max by (target) ({s('sigma_up')})", column="Up"),
                Q(f"max by (target, version) ({s('sigma_server_info')})"),
                Q(
                    f"max by (target) (time() - {s('sigma_server_start_timestamp_seconds')})",
                    column="Uptime",
                    unit="s",
                ),
                Q(f"count by (target) ({s('sigma_gpu_info')})", column="GPUs"),
                Q(f"sum by (target) ({s('sigma_job_up')})", column="Channels running"),
                Q(f"max by (target) ({s('sigma_jobs')})", column="Jobs known"),
                Q(
                    f"max by (target) ({s('sigma_host_cpu_utilization_ratio')})",
                    column="Host CPU",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target) ({s('sigma_host_memory_used_bytes')} / "
                    f"{s('sigma_host_memory_total_bytes')})",
                    column="Memory used",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target) ({s('sigma_last_poll_success_timestamp_seconds')}) * 1000",
                    column="Last poll",
                    unit="dateTimeFromNow",
                ),
            ],
            labels=("target", "version"),
            h=10,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                ratio_gauge("Host CPU"),
                ratio_gauge("Memory used"),
            ),
            label_links={"target": [SERVER_LINK]},
            sort_by=("Up", False),
        )
    )

    b.row("GPUs")
    gpu_cols = (
        ratio_gauge("Core"),
        ratio_gauge("Encoder"),
        ratio_gauge("Decoder"),
        ratio_gauge("Memory used", 0.9, 0.97),
        Col(
            "Temperature",
            cell="color-text",
            thresholds=((None, "green"), (75, "orange"), (85, "red")),
        ),
    )
    b.add(
        table(
            "GPU load, every GPU",
            "One row per GPU of the selected servers, as Sigma reports it: core, NVENC "
            "(encoder) and NVDEC (decoder) utilisation, memory and temperature. Sort by a "
            "column to find the busiest encoders.",
            [
                Q(f"max by (target, gpu, name) ({s('sigma_gpu_info')})"),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_utilization_ratio')})",
                    column="Core",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_encoder_utilization_ratio')})",
                    column="Encoder",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_decoder_utilization_ratio')})",
                    column="Decoder",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_memory_used_bytes')} / "
                    f"{s('sigma_gpu_memory_total_bytes')})",
                    column="Memory used",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_temperature_celsius')})",
                    column="Temperature",
                    unit="celsius",
                ),
            ],
            labels=("target", "gpu", "name"),
            h=10,
            columns=gpu_cols,
            label_links={"target": [SERVER_LINK]},
            sort_by=("Encoder", True),
        )
    )
    b.add(
        bargauge(
            "Hottest GPUs",
            "The ten hottest GPUs of the selected servers (sigma_gpu_temperature_celsius).",
            "celsius",
            [
                Q(
                    f"sort_desc(topk(10, {s('sigma_gpu_temperature_celsius')}))",
                    "{{target}} GPU {{gpu}}",
                )
            ],
            w=8,
            h=9,
            min_=20,
            max_=100,
            thresholds=((None, "green"), (75, "orange"), (85, "red")),
        ),
        timeseries(
            "Encoder load by server",
            "NVENC utilisation averaged over each server's GPUs; the dashed line is the "
            "busiest single GPU of the fleet.",
            "percentunit",
            [
                Q(f"avg by (target) ({s('sigma_gpu_encoder_utilization_ratio')})", "{{target}}"),
                Q(f"max({s('sigma_gpu_encoder_utilization_ratio')})", "busiest GPU"),
            ],
            w=8,
            h=9,
            min_=0,
            max_=1,
            dashed="busiest GPU",
        ),
        timeseries(
            "Decoder load by server",
            "NVDEC utilisation averaged over each server's GPUs; the dashed line is the "
            "busiest single GPU of the fleet.",
            "percentunit",
            [
                Q(f"avg by (target) ({s('sigma_gpu_decoder_utilization_ratio')})", "{{target}}"),
                Q(f"max({s('sigma_gpu_decoder_utilization_ratio')})", "busiest GPU"),
            ],
            w=8,
            h=9,
            min_=0,
            max_=1,
            dashed="busiest GPU",
        ),
    )

    b.row("Exporters")
    b.add(
        stat(
            "Configured targets",
            "Sigma targets configured in all exporters (sigma_targets). Compare with the "
            "targets Prometheus sees above.",
            "none",
            [Q("sum(sigma_targets)")],
            w=4,
        ),
        stat(
            "Config reload",
            "Whether every exporter's last configuration (re)load succeeded "
            "(sigma_config_last_reload_successful). A failed reload keeps the old config.",
            "none",
            [Q("min(sigma_config_last_reload_successful)")],
            w=4,
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"color": "red", "index": 1, "text": "failed"},
                        "1": {"color": "green", "index": 0, "text": "ok"},
                    },
                }
            ],
            color_mode="background",
        ),
        stat(
            "Last config load",
            "When the oldest of the exporters' last successful configuration loads was "
            "(sigma_config_last_reload_success_timestamp_seconds).",
            "dateTimeFromNow",
            [Q("min(sigma_config_last_reload_success_timestamp_seconds) * 1000")],
            w=4,
            color_mode="none",
        ),
        bargauge(
            "Exporter versions",
            "How many exporter processes run each sigma-exporter and Python version "
            "(sigma_exporter_build_info).",
            "none",
            [
                Q(
                    "count by (version, python_version) (sigma_exporter_build_info)",
                    "{{version}} (Python {{python_version}})",
                )
            ],
            w=12,
            h=4,
            min_=0,
        ),
    )
    b.add(
        timeseries(
            "Poll errors by server and reason",
            "Failed polls per minute, by target, source (dump, progress) and reason "
            "(timeout, connect, tls, http_status, too_large, invalid_json, invalid_schema). "
            "Empty while every poll succeeds.",
            "cpm",
            [
                Q(
                    "sum by (target, source, reason) "
                    f"(rate({s('sigma_poll_errors_total')}[$__rate_interval])) * 60",
                    "{{target}} {{source}} {{reason}}",
                )
            ],
            w=24,
            h=7,
            empty_when_healthy=True,
        )
    )
    return b.render()


# --------------------------------------------------------------------------
# Sigma server
# --------------------------------------------------------------------------


def server() -> Dashboard:
    def s(metric: str, *matchers: str) -> str:
        return metric + "{" + ",".join(('target="$target"', *matchers)) + "}"

    b = Board(
        uid=SERVER_UID,
        title="Sigma server",
        description="One Sigma Media Server: host, the Sigma process, GPUs (with the NVML "
        "cross-check), supervised apps, storage and the exporter's view of it.",
        variables=[
            datasource_variable(),
            query_variable(
                "target", "target", "sigma_up", title="Server", multi=False, include_all=False
            ),
        ],
    )
    gpu = "GPU {{gpu}}"
    b.row("Server")
    b.add(
        stat(
            "Up",
            "Whether the exporter's last dump poll of this server succeeded (sigma_up). "
            "While down, every other panel except exporter health is empty.",
            "none",
            [Q(s("sigma_up"))],
            w=3,
            mappings=UP_MAPPING,
            color_mode="background",
        ),
        stat(
            "Version",
            "Sigma version and edition (sigma_server_info).",
            "none",
            [Q(s("sigma_server_info"), "{{version}} ({{branch}})")],
            w=4,
            text_mode="name",
            color_mode="none",
        ),
        stat(
            "Uptime",
            "Time since the Sigma server process started (now minus dump `start`).",
            "s",
            [Q(f"time() - {s('sigma_server_start_timestamp_seconds')}")],
            w=3,
            thresholds=((None, "orange"), (3600, "green")),
        ),
        stat(
            "Restarts in range",
            "Times the server's start time moved during the shown time range "
            "(sigma_server_restarts_total).",
            "none",
            [
                Q(
                    f"round(increase({s('sigma_server_restarts_total')}[$__range]))",
                    range_reason="count of restarts over the shown period, not a rate",
                )
            ],
            w=3,
            thresholds=((None, "green"), (1, "orange")),
            decimals=0,
        ),
        stat(
            "Clock skew",
            "Server clock minus the exporter's clock when the answer arrived "
            "(sigma_server_clock_skew_seconds). Beyond a few seconds, job start times and "
            "recordings are off.",
            "s",
            [Q(s("sigma_server_clock_skew_seconds"))],
            w=3,
            thresholds=((None, "red"), (-2, "green"), (2, "red")),
        ),
        stat(
            "Build",
            "When this Sigma build was made (sigma_server_build_timestamp_seconds).",
            "dateTimeAsIso",
            [Q(f"{s('sigma_server_build_timestamp_seconds')} * 1000")],
            w=4,
            color_mode="none",
        ),
        stat(
            "Speed factor",
            "Server speed factor exactly as the dump reports it (`speed`); its meaning is "
            "undocumented.",
            "none",
            [Q(s("sigma_server_speed"))],
            w=4,
            color_mode="none",
        ),
    )
    b.add(
        stat(
            "Jobs known",
            "Jobs the server knows (sigma_jobs, dump `total`).",
            "none",
            [Q(s("sigma_jobs"))],
            w=3,
        ),
        stat(
            "Queued jobs",
            "Jobs waiting to be started (sigma_jobs_queued).",
            "none",
            [Q(s("sigma_jobs_queued"))],
            w=3,
            thresholds=((None, "green"), (1, "orange")),
        ),
        stat(
            "Jobs left out",
            "Jobs the exporter's include/exclude filters or per-target maximum leave out "
            "(sigma_jobs_dropped); they have no per-channel series.",
            "none",
            [Q(s("sigma_jobs_dropped"))],
            w=3,
            thresholds=((None, "green"), (1, "orange")),
        ),
        timeseries(
            "Jobs by state",
            "Jobs per state as the server counts them (sigma_tasks, dump `task`).",
            "none",
            [Q(f"sum by (state) ({s('sigma_tasks')})", "{{state}}")],
            w=15,
            h=4,
            stack=True,
            decimals=0,
        ),
    )
    b.link(JOBS_LINK, "Jobs by state")

    b.row("Host")
    b.add(
        timeseries(
            "Host CPU",
            "Host CPU usage, 0-100 % of all cores (sigma_host_cpu_utilization_ratio).",
            "percentunit",
            [Q(s("sigma_host_cpu_utilization_ratio"), "host CPU")],
            w=8,
            min_=0,
            max_=1,
        ),
        timeseries(
            "Host memory and swap",
            "Host RAM and swap, used and total (dashed), as the server reports them.",
            "bytes",
            [
                Q(s("sigma_host_memory_used_bytes"), "memory used"),
                Q(s("sigma_host_memory_total_bytes"), "memory total"),
                Q(s("sigma_host_swap_used_bytes"), "swap used"),
                Q(s("sigma_host_swap_total_bytes"), "swap total"),
            ],
            w=8,
            min_=0,
            dashed="total",
        ),
        stat(
            "CPU cores",
            "CPU cores of the host (System.cores).",
            "none",
            [Q(s("sigma_host_cpu_cores"))],
            w=4,
            color_mode="none",
        ),
        stat(
            "Operating system",
            "Host operating system (sigma_host_info).",
            "none",
            [Q(s("sigma_host_info"), "{{os}}")],
            w=4,
            text_mode="name",
            color_mode="none",
        ),
        stat(
            "System figures age",
            "Time since the server last refreshed its own system figures "
            "(System.updateTime). If it grows, host and GPU figures are stale even "
            "though polls succeed.",
            "s",
            [Q(f"time() - {s('sigma_host_stats_timestamp_seconds')}")],
            w=8,
            thresholds=((None, "green"), (300, "orange")),
        ),
    )
    b.add(
        table(
            "Network interfaces",
            "Host network interfaces and addresses the server reports (sigma_host_network_info).",
            [Q(f"max by (interface, address, cidr) ({s('sigma_host_network_info')})")],
            labels=("interface", "address", "cidr"),
            w=24,
            h=5,
        )
    )

    b.row("Sigma process")
    b.add(
        timeseries(
            "Process CPU",
            "CPU of the Sigma server process; 100 % is one core (sigma_process_cpu_ratio).",
            "percentunit",
            [Q(s("sigma_process_cpu_ratio"), "sigma")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Process memory",
            "Resident memory of the Sigma server process (sigma_process_resident_memory_bytes). "
            "Steady growth hints at a leak.",
            "bytes",
            [Q(s("sigma_process_resident_memory_bytes"), "resident")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Process children and threads",
            "Child processes (one per running transcoder, roughly) and threads of the "
            "Sigma server process.",
            "none",
            [
                Q(s("sigma_process_children"), "children"),
                Q(s("sigma_server_threads"), "threads"),
            ],
            w=8,
            min_=0,
            decimals=0,
        ),
    )

    b.row("GPUs (as Sigma reports them)")
    for title, metric, desc in (
        ("GPU core utilisation", "sigma_gpu_utilization_ratio", "GPU core utilisation"),
        ("GPU encoder (NVENC)", "sigma_gpu_encoder_utilization_ratio", "NVENC utilisation"),
        ("GPU decoder (NVDEC)", "sigma_gpu_decoder_utilization_ratio", "NVDEC utilisation"),
    ):
        b.add(
            timeseries(
                title,
                f"{desc} per GPU, 0-100 %, as Sigma reports it ({metric}).",
                "percentunit",
                [Q(s(metric), gpu)],
                w=8,
                min_=0,
                max_=1,
            )
        )
    b.add(
        timeseries(
            "GPU temperature",
            "GPU temperature as Sigma reports it (sigma_gpu_temperature_celsius).",
            "celsius",
            [Q(s("sigma_gpu_temperature_celsius"), gpu)],
            w=8,
        ),
        timeseries(
            "GPU memory",
            "GPU memory used per GPU, and its total (dashed), as Sigma reports them.",
            "bytes",
            [
                Q(s("sigma_gpu_memory_used_bytes"), gpu + " used"),
                Q(s("sigma_gpu_memory_total_bytes"), gpu + " total"),
            ],
            w=8,
            min_=0,
            dashed="total",
        ),
        timeseries(
            "Other GPU fields (undocumented)",
            "Numeric GPU fields Sigma reports without documentation (soft, speed, percent, "
            "count, ...), exactly as reported. `count` looks like jobs placed on the GPU and "
            "`percent` like Sigma's own load figure; no unit is assumed.",
            "none",
            [Q(s("sigma_gpu_reported_value"), gpu + " {{field}}")],
            w=8,
        ),
    )
    b.add(
        table(
            "GPUs",
            "The GPUs Sigma uses (sigma_gpu_info) and, in agent mode, the GPUs the NVIDIA "
            "driver sees (sigma_nvml_gpu_info) with UUID and PCI bus id.",
            [
                Q(f"max by (gpu, name) ({s('sigma_gpu_info')})"),
                Q(f"max by (gpu, uuid, pci_bus_id) ({s('sigma_nvml_gpu_info')})"),
            ],
            labels=("gpu", "name", "uuid", "pci_bus_id"),
            w=12,
            h=6,
        ),
        table(
            "Codecs",
            "Codecs each device can encode or decode (sigma_codec_info, dump `supported[]`).",
            [Q(f"max by (device, direction, codec) ({s('sigma_codec_info')})")],
            labels=("device", "direction", "codec"),
            w=12,
            h=6,
        ),
    )

    b.row("Cross-check: Sigma against the NVIDIA driver (agent mode)")
    for title, sig, nv, unit, max_ in (
        (
            "Core utilisation: Sigma vs NVML",
            "sigma_gpu_utilization_ratio",
            "sigma_nvml_gpu_utilization_ratio",
            "percentunit",
            1.0,
        ),
        (
            "Encoder: Sigma vs NVML",
            "sigma_gpu_encoder_utilization_ratio",
            "sigma_nvml_gpu_encoder_utilization_ratio",
            "percentunit",
            1.0,
        ),
        (
            "Decoder: Sigma vs NVML",
            "sigma_gpu_decoder_utilization_ratio",
            "sigma_nvml_gpu_decoder_utilization_ratio",
            "percentunit",
            1.0,
        ),
        (
            "Temperature: Sigma vs NVML",
            "sigma_gpu_temperature_celsius",
            "sigma_nvml_gpu_temperature_celsius",
            "celsius",
            None,
        ),
        (
            "Memory used: Sigma vs NVML",
            "sigma_gpu_memory_used_bytes",
            "sigma_nvml_gpu_memory_used_bytes",
            "bytes",
            None,
        ),
        (
            "Memory total: Sigma vs NVML",
            "sigma_gpu_memory_total_bytes",
            "sigma_nvml_gpu_memory_total_bytes",
            "bytes",
            None,
        ),
    ):
        b.add(
            timeseries(
                title,
                f"Sigma's figure ({sig}, solid) and the driver's ({nv}, dashed) per GPU. "
                "The lines should lie on top of each other; a gap means Sigma's view of the "
                "GPU is wrong or stale.",
                unit,
                [Q(s(sig), "Sigma " + gpu), Q(s(nv), "NVML " + gpu)],
                w=8,
                min_=0,
                max_=max_,
                dashed="^NVML",
            )
        )
    b.add(
        state_timeline(
            "Cross-check state",
            "Per GPU and field: agree (green) or mismatch (red) when Sigma and NVML "
            "disagree beyond tolerance over the window (sigma_gpu_crosscheck_mismatch).",
            [Q(s("sigma_gpu_crosscheck_mismatch"), gpu + " {{field}}")],
            MISMATCH_MAPPING,
            w=8,
        ),
        timeseries(
            "Cross-check difference (Sigma minus NVML)",
            "Sigma's figure minus NVML's per GPU and field, in the field's base unit: "
            "bytes for memory, ratio for utilisation, degrees for temperature, a count for "
            "encoder sessions (sigma_gpu_crosscheck_difference).",
            "none",
            [Q(s("sigma_gpu_crosscheck_difference"), gpu + " {{field}}")],
            w=8,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": "/memory/"},
                    "properties": [{"id": "unit", "value": "bytes"}],
                },
                {
                    "matcher": {"id": "byRegexp", "options": "/utili[sz]ation|load/"},
                    "properties": [{"id": "unit", "value": "percentunit"}],
                },
                {
                    "matcher": {"id": "byRegexp", "options": "/temp/"},
                    "properties": [{"id": "unit", "value": "celsius"}],
                },
            ],
        ),
        state_timeline(
            "GPU seen by one side only",
            "A GPU that Sigma reports and the driver does not, or the other way round "
            "(sigma_gpu_crosscheck_gpu_missing; `side` names the side missing it). Empty or "
            "green when both see the same GPUs.",
            [
                Q(
                    f"max by (gpu, side) ({s('sigma_gpu_crosscheck_gpu_missing')})",
                    gpu + " missing in {{side}}",
                )
            ],
            MISSING_MAPPING,
            w=8,
            empty_when_healthy=True,
        ),
    )
    b.add(
        stat(
            "NVML up",
            "Whether NVML answered in the exporter's last round (sigma_nvml_up). Only set in "
            "agent mode, where the exporter runs on the server itself.",
            "none",
            [Q(s("sigma_nvml_up"))],
            w=4,
            h=8,
            mappings=UP_MAPPING,
            color_mode="background",
        ),
        timeseries(
            "GPU power (NVML)",
            "Power draw per GPU as the driver reports it (sigma_nvml_gpu_power_watts).",
            "watt",
            [Q(s("sigma_nvml_gpu_power_watts"), gpu)],
            w=10,
            min_=0,
        ),
        timeseries(
            "Video clock (NVML)",
            "Video engine clock per GPU (sigma_nvml_gpu_video_clock_hz). A drop under load "
            "means throttling (heat or power).",
            "hertz",
            [Q(s("sigma_nvml_gpu_video_clock_hz"), gpu)],
            w=10,
            min_=0,
        ),
    )
    b.add(
        timeseries(
            "NVENC sessions (NVML)",
            "Active NVENC encoder sessions per GPU as the driver counts them "
            "(sigma_nvml_gpu_encoder_sessions).",
            "none",
            [Q(s("sigma_nvml_gpu_encoder_sessions"), gpu)],
            w=6,
            min_=0,
            decimals=0,
        ),
        timeseries(
            "NVENC frame rate (NVML)",
            "Average NVENC frames per second per GPU (sigma_nvml_gpu_encoder_fps).",
            "suffix: fps",
            [Q(s("sigma_nvml_gpu_encoder_fps"), gpu)],
            w=6,
            min_=0,
        ),
        timeseries(
            "NVENC latency (NVML)",
            "Average NVENC encode latency per GPU (sigma_nvml_gpu_encoder_latency_seconds).",
            "s",
            [Q(s("sigma_nvml_gpu_encoder_latency_seconds"), gpu)],
            w=6,
            min_=0,
        ),
        timeseries(
            "Memory controller load (NVML)",
            "GPU memory controller utilisation per GPU (sigma_nvml_gpu_memory_utilization_ratio).",
            "percentunit",
            [Q(s("sigma_nvml_gpu_memory_utilization_ratio"), gpu)],
            w=6,
            min_=0,
            max_=1,
        ),
    )

    b.row("Supervised apps")
    b.add(
        table(
            "Apps",
            "Helper apps the server supervises (portal, nginx, origin, ...): state, uptime, "
            "CPU (100 % = one core), resident memory, children and restarts during the "
            "shown time range.",
            [
                Q(f"max by (app) ({s('sigma_app_up')})", column="Up"),
                Q(f"max by (app, state) ({s('sigma_app_state')})"),
                Q(f"max by (app) ({s('sigma_app_uptime_seconds')})", column="Uptime", unit="s"),
                Q(f"max by (app) ({s('sigma_app_cpu_ratio')})", column="CPU", unit="percentunit"),
                Q(
                    f"max by (app) ({s('sigma_app_resident_memory_bytes')})",
                    column="Memory",
                    unit="bytes",
                ),
                Q(f"max by (app) ({s('sigma_app_children')})", column="Children"),
                Q(
                    f"max by (app) (round(increase({s('sigma_app_restarts_total')}[$__range])))",
                    column="Restarts in range",
                    range_reason="count of app restarts over the shown period, not a rate",
                ),
            ],
            labels=("app", "state"),
            h=8,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                Col(
                    "Restarts in range",
                    decimals=0,
                    cell="color-text",
                    thresholds=((None, "green"), (1, "orange")),
                ),
            ),
            sort_by=("Up", False),
        )
    )
    b.add(
        timeseries(
            "App CPU",
            "CPU per supervised app; 100 % is one core (sigma_app_cpu_ratio).",
            "percentunit",
            [Q(s("sigma_app_cpu_ratio"), "{{app}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "App memory",
            "Resident memory per supervised app (sigma_app_resident_memory_bytes).",
            "bytes",
            [Q(s("sigma_app_resident_memory_bytes"), "{{app}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Restarts",
            "Restarts of the Sigma server and of each supervised app per rate window "
            "(increase of sigma_server_restarts_total and sigma_app_restarts_total).",
            "none",
            [
                Q(f"increase({s('sigma_server_restarts_total')}[$__rate_interval])", "server"),
                Q(
                    f"sum by (app) (increase({s('sigma_app_restarts_total')}[$__rate_interval]))",
                    "{{app}}",
                ),
            ],
            w=8,
            bars=True,
            min_=0,
        ),
    )

    b.row("Storage and logs")
    b.add(
        table(
            "Storages",
            "Media storages: retention (media older than this is deleted), clean-up delay "
            "and number of folders.",
            [
                Q(
                    f"max by (storage) ({s('sigma_storage_retention_seconds')})",
                    column="Retention",
                    unit="s",
                ),
                Q(
                    f"max by (storage) ({s('sigma_storage_cleanup_delay_seconds')})",
                    column="Clean-up delay",
                    unit="s",
                ),
                Q(f"count by (storage) ({s('sigma_storage_folder_info')})", column="Folders"),
            ],
            labels=("storage",),
            w=8,
            h=7,
        ),
        table(
            "Storage folders",
            "Folders of each media storage (sigma_storage_folder_info).",
            [Q(f"max by (storage, folder) ({s('sigma_storage_folder_info')})")],
            labels=("storage", "folder"),
            w=6,
            h=7,
        ),
        timeseries(
            "Log folder size and trend",
            "Size of the server's log folder, and (dashed) where the last 6 hours' trend "
            "puts it in 7 days (predict_linear). A rising trend means logs are not rotated.",
            "bytes",
            [
                Q(s("sigma_log_used_bytes"), "{{folder}}"),
                Q(
                    f"predict_linear({s('sigma_log_used_bytes')}[6h], 7 * 86400)",
                    "{{folder}} in 7 days (trend)",
                ),
            ],
            w=10,
            h=7,
            min_=0,
            dashed="trend",
        ),
    )

    b.row("Exporter health for this server")
    b.add(
        stat(
            "Progress poll",
            "Whether the last per-channel progress poll succeeded (sigma_progress_up). "
            "When it fails, channel series vanish while server series stay.",
            "none",
            [Q(s("sigma_progress_up"))],
            w=4,
            h=7,
            mappings=UP_MAPPING,
            color_mode="background",
        ),
        timeseries(
            "Poll duration",
            "Wall time of the exporter's last poll by source (dump, progress), against the "
            "configured poll interval (dashed).",
            "s",
            [
                Q(f"max by (source) ({s('sigma_poll_duration_seconds')})", "{{source}}"),
                Q(s("sigma_poll_interval_seconds"), "poll interval"),
            ],
            w=10,
            h=7,
            min_=0,
            dashed="interval",
        ),
        timeseries(
            "Time since last successful poll",
            "Seconds since the last successful dump poll "
            "(now minus sigma_last_poll_success_timestamp_seconds), against the poll "
            "interval (dashed). Grows while the server cannot be read.",
            "s",
            [
                Q(f"time() - {s('sigma_last_poll_success_timestamp_seconds')}", "since last"),
                Q(s("sigma_poll_interval_seconds"), "poll interval"),
            ],
            w=10,
            h=7,
            min_=0,
            dashed="interval",
        ),
    )
    b.add(
        timeseries(
            "Poll errors by reason",
            "Failed polls per minute by source and reason (timeout, connect, tls, "
            "http_status, too_large, invalid_json, invalid_schema). Empty while every poll "
            "succeeds.",
            "cpm",
            [
                Q(
                    "sum by (source, reason) "
                    f"(rate({s('sigma_poll_errors_total')}[$__rate_interval])) * 60",
                    "{{source}} {{reason}}",
                )
            ],
            w=12,
            h=7,
            bars=True,
            empty_when_healthy=True,
        ),
        timeseries(
            "Parse errors by field",
            "Answers with a field present but unparsable, per rate window and field path "
            "(new in sigma_parse_errors_total, first error included). Non-zero after a "
            "Sigma upgrade usually means the API changed a field.",
            "short",
            [
                Q(
                    "sum by (field) "
                    f"{new_events(s('sigma_parse_errors_total'), '$__rate_interval')}",
                    "{{field}}",
                )
            ],
            w=12,
            h=7,
            bars=True,
            empty_when_healthy=True,
        ),
    )
    return b.render()


# --------------------------------------------------------------------------
# Sigma channels
# --------------------------------------------------------------------------


def jobs() -> Dashboard:
    def s(metric: str, *matchers: str) -> str:
        return metric + "{" + ",".join(('target=~"$target"', 'job_name=~"$job"', *matchers)) + "}"

    b = Board(
        uid=JOBS_UID,
        title="Sigma channels",
        description="Transcoding jobs (channels) of the selected Sigma servers: state, "
        "speed against real time, bitrates, errors and restarts.",
        variables=[
            datasource_variable(),
            query_variable(
                "target", "target", "sigma_up", title="Server", multi=True, include_all=True
            ),
            query_variable(
                "job",
                "job_name",
                'sigma_job_up{target=~"$target"}',
                title="Channel",
                multi=True,
                include_all=True,
            ),
        ],
    )
    tj = "{{target}} / {{job_name}}"
    b.row("Overview")
    b.add(
        stat(
            "Channels running",
            "Selected jobs whose state is started or running (sigma_job_up == 1).",
            "none",
            [Q(f"sum({s('sigma_job_up')})")],
            w=6,
        ),
        stat(
            "Behind real time",
            "Running selected jobs with speed below 1 (sigma_job_speed < 1).",
            "none",
            [
                Q(
                    f"count(({s('sigma_job_speed')} < 1) and on (target, job_name) "
                    f"({s('sigma_job_up')} == 1)) or vector(0)"
                )
            ],
            w=6,
            thresholds=((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        stat(
            "Channels down",
            "Selected jobs not started or running (sigma_job_up == 0).",
            "none",
            [Q(f"count({s('sigma_job_up')} == 0) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
        ),
        stat(
            "New errors",
            "New error lines in the shown range over all selected jobs "
            "(sigma_job_errors_total; each line counts once, when first seen).",
            "short",
            [Q(f"sum({new_events(s('sigma_job_errors_total'), '$__range')}) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "orange")),
        ),
    )
    b.add(
        table(
            "Channels",
            "Every selected job: state, speed (1 = real time), uptime, start time, total "
            "input and output bitrate, new errors per minute, error lines listed now and "
            "restarts during the shown range. Click a job to show only it.",
            [
                Q(f"max by (target, job_name) ({s('sigma_job_up')})", column="Up"),
                Q(f"max by (target, job_name, state) ({s('sigma_job_state')})"),
                Q(f"max by (target, job_name) ({s('sigma_job_speed')})", column="Speed"),
                Q(
                    f"max by (target, job_name) ({s('sigma_job_uptime_seconds')})",
                    column="Uptime",
                    unit="s",
                ),
                Q(
                    f"max by (target, job_name) ({s('sigma_job_start_timestamp_seconds')}) * 1000",
                    column="Started",
                    unit="dateTimeAsIso",
                ),
                Q(
                    f"sum by (target, job_name) ({s('sigma_job_input_bytes_per_second')}) * 8",
                    column="Input",
                    unit="bps",
                ),
                Q(
                    f"sum by (target, job_name) ({s('sigma_job_output_bytes_per_second')}) * 8",
                    column="Output",
                    unit="bps",
                ),
                Q(
                    "sum by (target, job_name) "
                    f"{new_events(s('sigma_job_errors_total'), '$__range')}",
                    column="New errors",
                    unit="short",
                    # A channel that has logged no error line yet has no
                    # sigma_job_errors_total series: its cell stays blank.
                    empty_when_healthy=True,
                ),
                Q(
                    f"max by (target, job_name) ({s('sigma_job_errors_listed')})",
                    column="Errors listed",
                ),
                Q(
                    "max by (target, job_name) "
                    f"(round(increase({s('sigma_job_restarts_total')}[$__range])))",
                    column="Restarts in range",
                    range_reason="count of channel restarts over the shown period, not a rate",
                ),
            ],
            labels=("target", "job_name", "state"),
            h=12,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                Col(
                    "Speed",
                    decimals=2,
                    cell="color-background",
                    thresholds=((None, "red"), (0.95, "orange"), (1, "green")),
                ),
                Col("New errors", cell="color-text", thresholds=((None, "green"), (1, "orange"))),
                Col(
                    "Restarts in range",
                    decimals=0,
                    cell="color-text",
                    thresholds=((None, "green"), (1, "orange")),
                ),
            ),
            label_links={"job_name": [JOBS_LINK_FOR_ROW], "target": [SERVER_LINK]},
            sort_by=("Speed", False),
        )
    )
    b.add(
        state_timeline(
            "Channel up",
            "Per job: up (started or running) or down over time (sigma_job_up).",
            [Q(s("sigma_job_up"), tj)],
            UP_MAPPING,
            w=24,
            h=8,
        )
    )

    b.row("Speed")
    b.add(
        timeseries(
            "Speed",
            "Processing speed per job relative to real time (sigma_job_speed). The red line "
            "is 1: below it the channel falls behind.",
            "none",
            [Q(s("sigma_job_speed"), tj)],
            w=16,
            min_=0,
            threshold_line=1,
            decimals=2,
        ),
        timeseries(
            "Uptime",
            "Uptime per job (sigma_job_uptime_seconds); a drop to zero is a restart.",
            "s",
            [Q(s("sigma_job_uptime_seconds"), tj)],
            w=8,
            min_=0,
        ),
    )

    b.row("Bitrates")
    b.add(
        timeseries(
            "Input bitrate",
            "Bitrate of each job input (sigma_job_input_bytes_per_second x 8). A flat zero "
            "means the source stopped sending.",
            "bps",
            [Q(f"{s('sigma_job_input_bytes_per_second')} * 8", tj + " in {{input}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Output profile bitrate",
            "Bitrate of each output profile (rendition) per job "
            "(sigma_job_profile_bytes_per_second x 8).",
            "bps",
            [Q(f"{s('sigma_job_profile_bytes_per_second')} * 8", tj + " profile {{profile}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Output bitrate",
            "Bitrate of each job output by format (sigma_job_output_bytes_per_second x 8).",
            "bps",
            [Q(f"{s('sigma_job_output_bytes_per_second')} * 8", tj + " {{output}} ({{format}})")],
            w=8,
            min_=0,
        ),
    )
    b.add(
        table(
            "Inputs",
            "Input URLs per job, with credentials and query removed (sigma_job_input_info).",
            [Q(f"max by (target, job_name, input, url) ({s('sigma_job_input_info')})")],
            labels=("target", "job_name", "input", "url"),
            h=6,
        )
    )

    b.row("Errors and restarts")
    b.add(
        timeseries(
            "Errors by code",
            "New error lines per rate window, per job and error code (sigma_job_errors_total, "
            "first lines of a code included; `unknown` when the line carries no code). Empty "
            "while no job logs errors.",
            "short",
            [
                Q(
                    "sum by (target, job_name, code) "
                    f"{new_events(s('sigma_job_errors_total'), '$__rate_interval')}",
                    tj + " {{code}}",
                )
            ],
            w=12,
            bars=True,
            empty_when_healthy=True,
        ),
        timeseries(
            "Error lines listed",
            "Error lines the server currently lists per job (sigma_job_errors_listed).",
            "none",
            [Q(s("sigma_job_errors_listed"), tj)],
            w=6,
            min_=0,
            decimals=0,
        ),
        timeseries(
            "Restarts",
            "Restarts per job and rate window (increase of sigma_job_restarts_total).",
            "none",
            [Q(f"increase({s('sigma_job_restarts_total')}[$__rate_interval])", tj)],
            w=6,
            bars=True,
            min_=0,
        ),
    )
    return b.render()


# --------------------------------------------------------------------------
# API for tests, and the command line
# --------------------------------------------------------------------------


def build() -> tuple[Dashboard, ...]:
    """Every dashboard, in a fixed order: fleet, server, channels."""
    return (fleet(), server(), jobs())


def render(dashboard: Dashboard) -> str:
    """The committed file's exact text."""
    return json.dumps(dashboard.json, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def panel_queries() -> tuple[PanelQuery, ...]:
    return tuple(q for d in build() for q in d.queries)


def variable_queries() -> tuple[VariableQuery, ...]:
    return tuple(v for d in build() for v in d.variables)


_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}])")


def _regex_escape(value: str) -> str:
    # Like Grafana's Prometheus datasource: escape for the regex, then double the
    # backslash for the PromQL string literal.
    return _REGEX_SPECIAL.sub(r"\\\\\1", value)


def expand(
    expr: str,
    values: Mapping[str, str | Sequence[str]],
    *,
    rate_interval: str = "1m",
    range_: str = "1h",
    interval: str = "15s",
) -> str:
    """Substitute Grafana variables in a query, as Grafana would send it.

    `values` maps a template variable to one value (used as is) or to a list
    of values (regex-escaped and joined as `(a|b)`, as Grafana does for multi
    selections). Use the variable's `all_value` (".*") for "All". Built-ins:
    $__rate_interval, $__range, $__interval. Unknown variables raise KeyError.
    """
    builtins = {"__rate_interval": rate_interval, "__range": range_, "__interval": interval}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        value = values[name]
        if isinstance(value, str):
            return value
        items = [_regex_escape(v) for v in value]
        return items[0] if len(items) == 1 else "(" + "|".join(items) + ")"

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def _check(dashboards: Iterable[Dashboard], out_dir: Path) -> list[str]:
    problems: list[str] = []
    expected = {d.filename: render(d) for d in dashboards}
    for name, text in expected.items():
        path = out_dir / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the generator's output")
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path}: not made by the generator (stale?)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the committed JSON differs from the generated",
    )
    mode.add_argument(
        "--queries", action="store_true", help="print every panel and variable query as JSON"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dashboards = build()
    out_dir: Path = args.out
    if args.queries:
        doc = {
            "panels": [asdict(q) for d in dashboards for q in d.queries],
            "variables": [asdict(v) for d in dashboards for v in d.variables],
        }
        print(json.dumps(doc, indent=2))
        return 0
    if args.check:
        problems = _check(dashboards, out_dir)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run: python grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in dashboards:
        (out_dir / d.filename).write_text(render(d), encoding="utf-8")
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in {d.filename for d in dashboards}:
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
