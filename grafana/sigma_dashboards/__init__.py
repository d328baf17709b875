"""Grafana dashboards for sigma-exporter, as code.

`lib` is the small library (query model, panel builders, the grid);
`thresholds` reads the alert thresholds (alerts/thresholds.yml) the colours
follow; `fleet`, `server` and `channels` hold one dashboard each. This module is the API the
command line (grafana/generate.py) and the tests use: `build()` returns every
dashboard with, next to its JSON, the list of its panel queries
(`PanelQuery`), variable queries (`VariableQuery`) and annotation queries
(`AnnotationQuery`); `expand()`
substitutes Grafana variables so a query can be sent to a real Prometheus.
A panel query flagged `empty_when_healthy` may legitimately return nothing on
a healthy fleet (errors, mismatches, jobs behind real time); `needs_nvml`
marks queries that only return data when the exporter runs in agent mode
with NVML.

Conventions (checked by tests/ops/test_dashboards.py):
- every panel and target uses the `${datasource}` template variable;
- every panel has a title, a description and a unit;
- rate()/irate()/increase() use `[$__rate_interval]`; the only exception is
  increase(...[$__range]) in an instant query that carries a `range_reason`
  (a count "over the shown period", e.g. restarts in a table);
- counters (`*_total`) only appear inside rate()/irate()/increase();
- metrics the dashboards do not show are listed in NOT_CHARTED with a reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from . import channels, fleet, server
from .lib import AnnotationQuery, Dashboard, PanelQuery, VariableQuery
from .thresholds import THRESHOLDS_FILE, Thresholds
from .thresholds import load as load_thresholds

__all__ = [
    "NOT_CHARTED",
    "THRESHOLDS_FILE",
    "AnnotationQuery",
    "Dashboard",
    "PanelQuery",
    "Thresholds",
    "VariableQuery",
    "build",
    "check",
    "expand",
    "load_thresholds",
    "panel_queries",
    "render",
    "variable_queries",
]

# Exported metric families no panel shows, and why. The test fails for a
# defined metric that is neither charted nor listed here.
NOT_CHARTED: dict[str, str] = {
    "sigma_outputs_up": (
        "poll health of the outputs source, as sigma_progress_up is: its failures show "
        "in sigma_poll_errors_total{source=\"outputs\"} on the server dashboard, and each "
        "output's in the channels dashboard's Outputs table"
    ),
    "sigma_server_port": (
        "static configuration (the API port the server reports); it never changes while "
        "the server runs and carries no health signal. Query it in Explore when needed."
    ),
    "sigma_server_reported_value": (
        "undocumented numbers of the dump's tail (`dt`, `nats.hook`) exported as reported; "
        "their meaning and unit are unknown, so a panel would invite guesses."
    ),
    "sigma_job_weight": (
        "undocumented scheduling weight reported per job; no operational meaning is "
        "known, so a panel would invite guesses."
    ),
    "sigma_polls_total": (
        "the denominator of the poll error ratio (rate of sigma_poll_errors_total over "
        "rate of sigma_polls_total) for queries and SLO rules; the panels already show "
        "poll errors per minute and whether each server answers."
    ),
    "sigma_series_dropped": (
        "a target over its series budget already shows in the poll-error panels as "
        "reason series_limit (and as down); this gauge only says by how much, for Explore."
    ),
}
# GPU health from NVML (issue 14): alerted on in tiers (SigmaGPUXidErrors,
# SigmaGPUMemoryErrors, SigmaGPURowRemapPending, SigmaGPUThrottled,
# SigmaGPUPowerAtLimit), so they show through the firing-alerts panels; a
# per-GPU health panel is still to be drawn.
_GPU_HEALTH = ("alerted on (GPU health alerts, see docs/runbooks.md); shown through the "
               "firing-alerts panels until a per-GPU health panel is drawn.")
NOT_CHARTED.update({name: _GPU_HEALTH for name in (
    "sigma_nvml_gpu_xid_errors_total",
    "sigma_nvml_gpu_last_xid",
    "sigma_nvml_gpu_ecc_uncorrected_errors_total",
    "sigma_nvml_gpu_row_remap_pending",
    "sigma_nvml_gpu_row_remap_failure",
    "sigma_nvml_gpu_throttle_active",
    "sigma_nvml_gpu_power_limit_watts",
)})


def build(thresholds: Thresholds | None = None) -> tuple[Dashboard, ...]:
    """Every dashboard, in a fixed order: fleet, server, channels.

    Colours follow `thresholds`, by default those of alerts/thresholds.yml.
    """
    t = thresholds or load_thresholds()
    return (fleet.dashboard(t), server.dashboard(t), channels.dashboard(t))


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


def check(dashboards: Iterable[Dashboard], out_dir: Path) -> list[str]:
    """What differs between the generated dashboards and the files in out_dir."""
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


def write(dashboards: Iterable[Dashboard], out_dir: Path) -> None:
    """Write every dashboard to out_dir and remove JSON files no longer generated."""
    names = set()
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in dashboards:
        (out_dir / d.filename).write_text(render(d), encoding="utf-8")
        names.add(d.filename)
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in names:
            path.unlink()
