"""The package's table of Sigma's error codes agrees with Sigma's own list.

tests/fixtures/error-codes.csv is Sigma's documented list as received
(code, one column per class marked `x`, when it is seen, meaning);
sigma_exporter/source/errorcodes.py is the same list as Python, shipped in
the package. A code added, dropped or reclassified on one side fails here.
"""

from __future__ import annotations

import csv

from conftest import ROOT

from sigma_exporter.source.errorcodes import (
    BY_CODE,
    CLASSES,
    CLASSES_AND_UNKNOWN,
    ERROR_CODES,
    classes_of,
)

CSV = ROOT / "tests" / "fixtures" / "error-codes.csv"


def _documented() -> list[tuple[str, tuple[str, ...], str, str]]:
    with CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"code", *CLASSES, "seen", "meaning"}
    return [(r["code"], tuple(c for c in CLASSES if r[c] == "x"), r["seen"], r["meaning"])
            for r in rows]


def test_the_table_is_the_documented_list_row_by_row() -> None:
    ours = [(c.code, c.classes, c.seen, c.meaning) for c in ERROR_CODES]
    assert ours == _documented()


def test_every_code_has_a_class_and_is_listed_once() -> None:
    assert len(BY_CODE) == len(ERROR_CODES) == 40
    for code in ERROR_CODES:
        assert code.classes and set(code.classes) <= set(CLASSES), code
        assert code.seen in ("running", "creation", "any"), code


def test_classes_of_a_code() -> None:
    assert classes_of("INPUT_TIMEOUT") == ("input",)
    assert classes_of("OUTPUT_TIMEOUT") == ("output",)
    assert classes_of("IO_ERROR") == ("input", "output")
    assert classes_of("PACKET_QUEUE_IS_FULL") == ("input", "output", "processing")
    assert classes_of("INVALID_ARGUMENT") == ("config",)
    assert classes_of("DECODE_ERROR") == ("unknown",)  # no Sigma documents it
    assert classes_of("unknown") == ("unknown",)  # a line without a code
    assert classes_of("input_timeout") == ("unknown",)  # codes are case-sensitive
    assert CLASSES_AND_UNKNOWN == ("input", "output", "processing", "config", "unknown")


def test_the_runbooks_list_every_code_with_its_classes() -> None:
    """docs/runbooks.md is where the on-call looks a code up: it must agree."""
    text = (ROOT / "docs" / "runbooks.md").read_text(encoding="utf-8")
    section = text.split("\n## Job states and error classes\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0].isupper():
            rows[cells[0].strip("`")] = (cells[1], cells[2], cells[3])
    assert rows == {c.code: (", ".join(c.classes), c.seen, c.meaning) for c in ERROR_CODES}
    for error_class in CLASSES_AND_UNKNOWN:  # each class says who to call
        assert f"| `{error_class}` |" in section, error_class
