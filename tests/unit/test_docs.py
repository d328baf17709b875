"""docs/metrics.md is generated from the metric definitions and cannot drift."""

from __future__ import annotations

from conftest import ROOT

from sigma_exporter import docs
from sigma_exporter.metrics import DEFINITIONS


def test_metrics_doc_matches_definitions() -> None:
    committed = (ROOT / "docs" / "metrics.md").read_text()
    assert committed == docs.render(), "run `python -m sigma_exporter.docs` and commit"


def test_every_metric_is_listed() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    for d in DEFINITIONS:
        assert f"| `{d.name}` |" in text


def test_no_gauge_shares_a_family_with_a_counter() -> None:
    families = [d.family for d in DEFINITIONS]
    assert len(families) == len(set(families))
    names = {d.name for d in DEFINITIONS}
    for d in DEFINITIONS:
        if d.type == "counter":
            assert d.family not in names, f"gauge {d.family} beside counter {d.name}"


def test_naming_conventions() -> None:
    for d in DEFINITIONS:
        assert d.name.startswith("sigma_")
        assert d.name.endswith("_total") == (d.type == "counter"), d.name
        if d.name.endswith("_info"):
            assert d.type == "info" and "value is 1" in d.help, d.name
        if d.name.endswith("_ratio"):
            assert d.type == "gauge"
        assert d.help.strip().endswith("."), d.name
        if d.source not in ("self",):
            assert d.labels[0] == "target", d.name
