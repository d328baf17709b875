"""Stalled channels as the status page names them: media time against the wall clock."""

from __future__ import annotations

from sigma_exporter.poll.summary import STALL_SPEED, STALL_WINDOW, MediaClock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(clock: Clock, media: MediaClock, times: dict[str, float], every: float = 5.0,
         polls: int = 1, advance: dict[str, float] | None = None) -> set[str]:
    """`polls` polls `every` seconds apart; each channel's media time moves by
    `advance[name]` seconds per second (default 1.0). The last poll's verdict."""
    found: set[str] = set()
    for _ in range(polls):
        clock.now += every
        for name in times:
            times[name] += every * (advance or {}).get(name, 1.0)
        found = media.stalled({n: round(t) for n, t in times.items()}, times)
    return found


def test_a_frozen_media_time_is_stalled_and_clears_when_it_moves_again() -> None:
    clock = Clock()
    media = MediaClock(clock)
    times = {"VTV1": 100.0, "VTV2": 100.0}
    # A new channel: no verdict until a poll STALL_WINDOW old exists.
    assert feed(clock, media, times, polls=int(STALL_WINDOW // 5) + 2) == set()
    frozen = {"VTV1": 0.0}
    # Over the last 30 s it moved 25 s (0.83 s/s): not yet; 20 s (0.67): stalled.
    assert feed(clock, media, times, polls=1, advance=frozen) == set()
    assert feed(clock, media, times, polls=1, advance=frozen) == {"VTV1"}
    assert feed(clock, media, times, polls=20, advance=frozen) == {"VTV1"}
    # Running again: clear once the window holds only moving polls.
    assert feed(clock, media, times, polls=int(STALL_WINDOW // 5) + 1) == set()


def test_no_verdict_before_the_window_has_passed() -> None:
    clock = Clock()
    media = MediaClock(clock)
    times = {"VTV1": 100.0}
    assert feed(clock, media, times, polls=int(STALL_WINDOW // 5), advance={"VTV1": 0}) == set()
    assert feed(clock, media, times, polls=1, advance={"VTV1": 0}) == {"VTV1"}


def test_whole_seconds_at_a_fast_poll_are_not_a_stall() -> None:
    clock = Clock()
    media = MediaClock(clock)
    times = {"VTV1": 100.4}
    # 1 s polls: Sigma's whole seconds move 0 or 2 between two of them.
    assert feed(clock, media, times, every=1.0, polls=120) == set()


def test_just_below_the_threshold_is_stalled_and_just_above_is_not() -> None:
    clock = Clock()
    media = MediaClock(clock)
    times = {"slow": 0.0, "ok": 0.0}
    found = feed(clock, media, times, every=10.0, polls=12,
                 advance={"slow": STALL_SPEED - 0.1, "ok": STALL_SPEED + 0.1})
    assert found == {"slow"}


def test_a_restart_or_a_down_channel_starts_over() -> None:
    clock = Clock()
    media = MediaClock(clock)
    feed(clock, media, {"VTV1": 500.0}, polls=10)
    clock.now += 5
    assert media.stalled({"VTV1": 3.0}, ["VTV1"]) == set()  # went back: restarted
    clock.now += STALL_WINDOW + 1
    assert media.stalled({"VTV1": 3.0}, []) == set()  # down: forgotten
    clock.now += 5
    assert media.stalled({"VTV1": 3.0}, ["VTV1"]) == set()  # a first poll again
