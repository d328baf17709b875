#!/usr/bin/env python3
"""Grafana dashboards for sigma-exporter, as code.

    python grafana/generate.py           write grafana/dashboards/*.json
    python grafana/generate.py --check   exit 1 if the committed JSON differs
    python grafana/generate.py --queries print every panel, variable and annotation query

The dashboards live in grafana/sigma_dashboards/ (a small library, `lib`,
and one module per dashboard); this script is its command line and, for the
tests, re-exports its API (`build`, `render`, `expand`, ...). Standard
library and PyYAML only, so it runs without the exporter's dependencies.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

# The package sits next to this script, which runs as a file (not installed).
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from sigma_dashboards import (  # noqa: E402
    NOT_CHARTED,
    THRESHOLDS_FILE,
    AnnotationQuery,
    Dashboard,
    PanelQuery,
    Thresholds,
    VariableQuery,
    build,
    check,
    expand,
    load_thresholds,
    panel_queries,
    render,
    variable_queries,
    write,
)

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
    "main",
    "panel_queries",
    "render",
    "variable_queries",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the committed JSON differs from the generated",
    )
    mode.add_argument(
        "--queries",
        action="store_true",
        help="print every panel, variable and annotation query as JSON",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dashboards = build()
    out_dir: Path = args.out
    if args.queries:
        doc = {
            "panels": [asdict(q) for d in dashboards for q in d.queries],
            "variables": [asdict(v) for d in dashboards for v in d.variables],
            "annotations": [asdict(a) for d in dashboards for a in d.annotations],
        }
        print(json.dumps(doc, indent=2))
        return 0
    if args.check:
        problems = check(dashboards, out_dir)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run: python grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    write(dashboards, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
