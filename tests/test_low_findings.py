"""The small findings of issue 15 ("Low"), one test or more each."""

from __future__ import annotations

from sigma_exporter.serve import wants_gzip


def test_gzip_refused_with_q_0_is_not_sent() -> None:
    assert wants_gzip("gzip")
    assert wants_gzip("deflate, GZIP;q=0.5")
    assert not wants_gzip("gzip;q=0")  # 0.1: gzip anyway
    assert not wants_gzip("gzip; q=0.000, identity")
    assert not wants_gzip("identity")
    assert not wants_gzip("gzip;q=junk")
