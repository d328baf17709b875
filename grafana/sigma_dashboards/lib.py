"""The small library every Sigma dashboard is built with.

A dashboard module (fleet, server, channels) describes panels with the
builders here (`timeseries`, `stat`, `table`, ...) and places them on a
`Board`, which numbers the panels, lays them out on Grafana's 24-column grid
and records every query for the tests (`PanelQuery`, `VariableQuery`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Json = dict[str, Any]

SCHEMA_VERSION = 39  # Grafana 10.4; Grafana 11 loads it unchanged
TAGS = ("sigma",)
DS: Json = {"type": "prometheus", "uid": "${datasource}"}
DEFAULT_TIME = {"from": "now-6h", "to": "now"}

FLEET_UID = "sigma-fleet"
SERVER_UID = "sigma-server"
JOBS_UID = "sigma-jobs"

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
    # A DASH-only figure (minimumUpdatePeriod): no data on a fleet of HLS outputs,
    # as the simulator's are; tests/ops/test_outputs_e2e.py reads real DASH.
    needs_dash: bool = False


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
class AnnotationQuery:
    """An annotation query (a marker on every graph where it returns a value)."""

    dashboard_uid: str
    name: str
    expr: str  # with Grafana variables unexpanded; empty whenever nothing happened


@dataclass(frozen=True)
class Dashboard:
    uid: str
    filename: str
    json: Json
    queries: tuple[PanelQuery, ...]
    variables: tuple[VariableQuery, ...]
    annotations: tuple[AnnotationQuery, ...] = ()
    # Variables with a fixed list of values (custom): name -> the value it opens on.
    defaults: tuple[tuple[str, str], ...] = ()


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


def _needs_dash(expr: str) -> bool:
    return "sigma_output_update_period_seconds" in expr


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


def _two_states(zero: tuple[str, str], one: tuple[str, str], one_first: bool) -> list[Json]:
    """A value mapping of a 0/1 series: (color, text) for each value; `one_first`
    lists 1 first in the legend (the good state where 1 is good)."""
    return [{"type": "value", "options": {
        "0": {"color": zero[0], "index": int(one_first), "text": zero[1]},
        "1": {"color": one[0], "index": int(not one_first), "text": one[1]},
    }}]


UP_MAPPING = _two_states(("red", "down"), ("green", "up"), one_first=True)
# A licence status turned into 1 (VALID) or 0 (anything else): `licence_valid`.
LICENCE_MAPPING = _two_states(("red", "not valid"), ("green", "valid"), one_first=True)
# sigma_control_plane_connected. Orange, not red: Sigma keeps serving without it.
LINK_MAPPING = _two_states(("orange", "disconnected"), ("green", "connected"), one_first=True)


def licence_valid(selector: str) -> str:
    """1 per series of `selector` (sigma_license_status{...}) whose status is VALID, 0
    for any other status (SigmaLicenseNotValid fires on those)."""
    valid = selector[:-1] + ',status="VALID"}'
    return f"({valid} or {selector} * 0)"


MISMATCH_MAPPING = _two_states(("green", "agree"), ("red", "mismatch"), one_first=False)
MISSING_MAPPING = _two_states(("green", "both"), ("red", "missing"), one_first=False)


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


Steps = tuple[tuple[float | None, str], ...]


def red_from(red: float, orange_margin: float) -> Steps:
    """Green, orange from `orange_margin` below `red`, red from `red` on.

    `red` is usually an alert's threshold (alerts/thresholds.yml): the colour
    turns red where the alert fires, and orange warns a little before.
    """
    return ((None, "green"), (round(red - orange_margin, 6), "orange"), (red, "red"))


# SigmaJobBehindRealtime judges a channel by its speed averaged over 5 minutes
# against job_speed_ratio (alerts/thresholds.yml). The panels average the same
# way: a channel counts as behind when the alert sees it behind, and a
# one-poll dip of the instantaneous speed does not light a panel up.
SPEED_WINDOW = "5m"


def mean_speed(speed: str, at: str = "") -> str:
    """The channel speed `speed` (a selector) averaged like the alert averages it,
    evaluated `at` a fixed time (PromQL's @ modifier, e.g. "end()") if given."""
    return f"avg_over_time({speed}[{SPEED_WINDOW}]{' @ ' + at if at else ''})"


def behind_real_time(speed: str, up: str, ratio: float) -> str:
    """Running channels (`up` == 1) whose mean speed is below `ratio`, valued at that mean."""
    return f"({mean_speed(speed)} < {ratio}) and on (target, job_name) ({up} == 1)"


def speed_colours(ratio: float) -> Steps:
    """Red below `ratio` (where the alert fires), orange up to real time, green from 1."""
    return ((None, "red"), (ratio, "orange"), (1, "green"))


def ratio_gauge(name: str, red: float, orange_margin: float = 0.1) -> Col:
    """A 0-1 table column drawn as a gauge, red from `red` (see red_from)."""
    return Col(name, cell="gauge", min_=0, max_=1, thresholds=red_from(red, orange_margin))


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


def custom_variable(name: str, title: str, values: Sequence[str], default: str) -> Json:
    """A drop-down of fixed values, opening on `default`."""
    options = [{"selected": v == default, "text": v, "value": v} for v in values]
    return {
        "current": {"selected": True, "text": default, "value": default},
        "hide": 0,
        "includeAll": False,
        "label": title,
        "multi": False,
        "name": name,
        "options": options,
        "query": ",".join(values),
        "skipUrlSync": False,
        "type": "custom",
    }


def restart_annotation(name: str, counter: str, by: Sequence[str], title: str,
                       *, color: str = "orange", enable: bool = True, keep: str = "") -> Json:
    """Marks on every graph where a restart counter moved (a server, app or job restart).

    The counter exists at 0 from the first poll, so increase() sees the first
    restart. Grafana evaluates it every `step`; the window, $__rate_interval
    (at least 4 scrape intervals, one minute with the shipped 15 s), is no
    shorter than the step, so no restart falls between two evaluations.
    `keep` (a query) limits the marks to the series it returns, matched on `by`.
    """
    expr = f"sum by ({', '.join(by)}) (increase({counter}[$__rate_interval])) > 0"
    if keep:
        expr = f"{expr} and on ({', '.join(by)}) {keep}"
    return {
        "datasource": dict(DS),
        "enable": enable,
        "expr": expr,
        "hide": False,
        "iconColor": color,
        "name": name,
        "step": "60s",
        "tagKeys": ",".join(by),
        "textFormat": "",
        "titleFormat": title,
        "useValueForTime": False,
    }


def firing_alerts(matchers: str, *, w: int = 24, h: int = 6) -> Panel:
    """The Sigma alerts firing now, for the servers (and channels) `matchers` select.

    Prometheus keeps them in its ALERTS series; that is where Alertmanager's
    notifications come from, so the panel and the pages agree.
    """
    selector = f'ALERTS{{alertstate="firing", alertname=~"Sigma.*", {matchers}}}'
    return table(
        "Firing alerts",
        "Sigma alerts firing now (Prometheus' ALERTS series, alertstate firing) for the "
        "servers shown, and the alerts that name no server (the exporter itself), which "
        "leave every server unwatched. Empty when all is well.",
        [Q(f"max by (alertname, severity, target, job_name, gpu, app) ({selector})")],
        labels=("severity", "alertname", "target", "job_name", "gpu", "app"),
        w=w,
        h=h,
        sort_by=("severity", False),
        empty_when_healthy=True,
    )


@dataclass
class Board:
    uid: str
    title: str
    description: str
    variables: list[Json]
    panels: list[Json] = field(default_factory=list)
    queries: list[PanelQuery] = field(default_factory=list)
    annotations: list[Json] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_h: int = 0

    def _newline(self) -> None:
        self._y += self._row_h
        self._x = 0
        self._row_h = 0

    def row(self, title: str, *, repeat: str | None = None) -> None:
        """Start a row; with `repeat`, Grafana repeats it (and the panels up to the
        next row) once per selected value of that variable."""
        if self._x:
            self._newline()
        row: Json = {
            "collapsed": False,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self._y},
            "id": len(self.panels) + 1,
            "panels": [],
            "title": title,
            "type": "row",
        }
        if repeat is not None:
            row["repeat"] = repeat
        self.panels.append(row)
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
                        needs_dash=_needs_dash(q.expr),
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
                    },
                    *self.annotations,
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
            annotations=tuple(
                AnnotationQuery(self.uid, a["name"], a["expr"]) for a in self.annotations
            ),
            defaults=tuple(
                (v["name"], v["current"]["value"]) for v in self.variables if v["type"] == "custom"
            ),
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

