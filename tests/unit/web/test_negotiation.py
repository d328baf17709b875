"""Content-encoding negotiation by q-values (RFC 9110 §12.5.3), as Go's promhttp does it."""

from __future__ import annotations

import pytest

from sigma_exporter.web.routes import wants_gzip


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip", True),  # what Prometheus sends
    ("gzip, deflate, br", True),
    ("GZIP", True),
    ("x-gzip", True),
    ("", False),  # nothing asked: identity
    ("identity", False),
    ("deflate", False),  # not offered, no wildcard: identity
    ("*", True),  # anything: gzip wins the tie
    ("gzip;q=0", False),  # "not acceptable"
    ("gzip; q=0.0", False),
    ("gzip;q=0.000, identity", False),
    ("*;q=0, identity", False),
    ("*;q=0", False),  # identity excluded too; the plain body is all we can send
    ("gzip;q=0.5, identity;q=0.9", False),  # identity preferred
    ("gzip;q=0.9, identity;q=0.5", True),
    ("gzip;q=0.5, *;q=1", False),  # identity falls under * at 1: preferred to gzip at 0.5
    ("identity;q=0, *;q=0.1", True),
    ("gzip;q=abc", False),  # a malformed weight: the element is ignored
    ("gzip;q=2", False),
    ("gzip;level=1", True),  # an unknown parameter is no weight
])
def test_q_values_are_honoured(header: str, gzip: bool) -> None:
    assert wants_gzip(header) is gzip
