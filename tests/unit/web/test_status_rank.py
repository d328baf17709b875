"""The status page's order: every target with a problem before the healthy ones.

`problem_rank` is the whole rule, a pure function of one target's summary; the
page sorts by it (stably, so config order holds within a rank).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sigma_exporter.poll.summary import Channel, SourceStatus, TargetStatus
from sigma_exporter.web import status
from sigma_exporter.web.status import (
    RANK_BROKEN,
    RANK_DOWN,
    RANK_FINE,
    RANK_PENDING,
    RANK_SLOW,
    Row,
    problem_rank,
)

OK = (SourceStatus("dump", True, None), SourceStatus("progress", True, None))
FINE = TargetStatus(up=True, last_success=1.0, sources=OK, channels=4, channels_up=4,
                    channels_dropped=0, down=(), slow=(), stalled=(), coming_up=(), gpus=(),
                    license_status="VALID", control_plane_connected=True)
VTV1 = (Channel("VTV1", "running", 1.0),)


def failing(name: str) -> tuple[SourceStatus, ...]:
    return (*OK, SourceStatus(name, False, "timeout: slow")) if name == "nvml" else tuple(
        SourceStatus(s.name, False, "timeout: slow") if s.name == name else s for s in OK)


@pytest.mark.parametrize(("status", "rank"), [
    (None, RANK_PENDING),
    (replace(FINE, up=None), RANK_PENDING),
    (replace(FINE, up=False, sources=failing("progress")), RANK_DOWN),
    (replace(FINE, license_status="EXPIRED"), RANK_DOWN),  # Sigma stops serving
    (replace(FINE, down=VTV1, channels_up=3), RANK_BROKEN),
    (replace(FINE, stalled=VTV1), RANK_BROKEN),
    (replace(FINE, sources=failing("progress")), RANK_BROKEN),
    (replace(FINE, sources=failing("nvml")), RANK_BROKEN),
    (replace(FINE, sources=(*OK, SourceStatus("nvml", True, None, (
        "GPU 0: temperature differs from NVML",)))), RANK_BROKEN),
    (replace(FINE, control_plane_connected=False), RANK_BROKEN),
    (replace(FINE, coming_up=(Channel("VTV1", "preparing", None),)), RANK_FINE),
    (replace(FINE, slow=VTV1), RANK_SLOW),
    (replace(FINE, slow=VTV1, stalled=VTV1), RANK_BROKEN),  # the worst problem counts
    (FINE, RANK_FINE),
])
def test_each_problem_has_its_rank(status: TargetStatus | None, rank: int) -> None:
    assert problem_rank(status) == rank


def test_every_problem_ranks_before_every_healthy_or_pending_target() -> None:
    assert max(RANK_DOWN, RANK_BROKEN, RANK_SLOW) < min(RANK_PENDING, RANK_FINE)
    assert RANK_DOWN < RANK_BROKEN < RANK_SLOW


def test_the_page_lists_targets_in_rank_order_and_config_order_within() -> None:
    rows = [Row("a-fine", "", 15, FINE), Row("b-slow", "", 15, replace(FINE, slow=VTV1)),
            Row("c-stalled", "", 15, replace(FINE, stalled=VTV1)),
            Row("d-fine", "", 15, FINE), Row("e-down", "", 15, replace(FINE, up=False)),
            Row("f-new", "", 15, None)]
    page = status.render_page(rows, version="1", telemetry_path="/metrics", now=10.0)
    order = sorted(rows, key=lambda row: page.index(f">{row.name}</a>"))
    assert [row.name for row in order] == ["e-down", "c-stalled", "b-slow", "f-new",
                                           "a-fine", "d-fine"]
    assert "stalled: VTV1 (media time not advancing)" in page
    assert '<span class="bad">1 stalled</span>' in page
