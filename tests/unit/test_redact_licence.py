"""Text shaped like a Sigma licence key is blanked by the one redactor.

The exporter never reads the key (`nats.license`), so it cannot blank its
value; a server's message may still quote it, and every message, log line and
last error goes through `redact_text`. tests/e2e/test_licence_key.py searches
every output of real processes for it.
"""

from __future__ import annotations

import pytest

from sigma_exporter.redact import RedactFilter, redact_text

KEY = "Y7KI4-HHQX5-0N9QN-X8TLN-VOPE7"  # the documented dump's


@pytest.mark.parametrize("text", [
    f"license {KEY} has expired", f"key={KEY.lower()};", f"[{KEY}]", f"{KEY}-ABCDE",
    f"http://h/?license={KEY}"])
def test_key_shaped_text_is_redacted_wherever_it_comes_from(text: str) -> None:
    """A server may echo the key in any message; the one redactor blanks its shape."""
    cleaned = redact_text(text)
    assert "REDACTED" in cleaned
    assert all(group not in cleaned for group in KEY.lower().split("-") + KEY.split("-"))


@pytest.mark.parametrize("text", [
    "E3971EC5-460D-4FB7-B957-7120A37421BC", "sigma-server-01", "ABCDE-FGHIJ-KLMNO-PQRST"])
def test_other_dashed_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_log_lines_lose_the_key() -> None:
    import logging

    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "answer: %s",
                               (f"license {KEY}",), None)
    record.__dict__.update(fields={"error": f"ec 3: {KEY}"})
    assert RedactFilter().filter(record)
    assert KEY not in record.getMessage() and KEY not in str(record.__dict__["fields"])
