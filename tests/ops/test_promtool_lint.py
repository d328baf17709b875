"""`promtool check metrics` accepts the golden expositions.

tests/unit/collect/test_golden.py holds the renderer to these files byte for
byte, so linting the files lints what the renderer writes, without promtool
in the unit tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GOLDEN, promtool_check_metrics


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.prom")), ids=lambda p: p.name)
def test_promtool_accepts_golden_exposition(golden: Path) -> None:
    promtool_check_metrics(golden.read_text())
