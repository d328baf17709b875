"""docs/metrics.md is generated from the metric definitions and cannot drift."""

from __future__ import annotations

import pytest
from conftest import ROOT

from sigma_exporter import docs, metrics
from sigma_exporter.metrics import DEFINITIONS, MetricDef


def test_metrics_doc_matches_definitions() -> None:
    committed = (ROOT / "docs" / "metrics.md").read_text()
    assert committed == docs.render(), "run `python -m sigma_exporter.docs` and commit"


def test_every_metric_is_listed() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    for d in DEFINITIONS:
        assert f"| `{d.name}` |" in text


@pytest.mark.parametrize(("bad", "message"), [
    (MetricDef("up", "gauge", "x.", ("target",), "health"), "sigma_ prefix"),
    (MetricDef("sigma_polls", "counter", "x.", ("target",), "health"), "_total"),
    (MetricDef("sigma_polls_total", "gauge", "x.", ("target",), "health"), "_total"),
    (MetricDef("sigma_build", "info", "x.", (), "self"), "_info"),
    # OpenMetrics forbids a gauge `x` beside a counter `x_total`: one family.
    (MetricDef("sigma_polls", "gauge", "x.", ("target",), "health"), "defined twice"),
])
def test_a_bad_definition_stops_the_import(monkeypatch: pytest.MonkeyPatch, bad: MetricDef,
                                           message: str) -> None:
    """metrics.py checks its table when imported; a broken entry cannot ship."""
    monkeypatch.setattr(metrics, "DEFINITIONS", (*DEFINITIONS, bad))
    with pytest.raises(ValueError, match=message):
        metrics._check_definitions()


def test_naming_conventions() -> None:
    """What the import-time check does not hold: HELP text, ratios, the target label."""
    for d in DEFINITIONS:
        if d.type == "info":
            assert "value is 1" in d.help, d.name
        if d.name.endswith("_ratio"):
            assert d.type == "gauge"
        assert d.help.strip().endswith("."), d.name
        if d.source not in ("self",):
            assert d.labels[0] == "target", d.name
