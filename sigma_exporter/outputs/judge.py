"""The checks on one rendition, from what was read this round and what was kept: pure.

Each rule and where it comes from (docs/outputs.md says the same for operators):

* **Fresh or stale** (RFC 8216 6.2.1): a live media playlist (no
  `EXT-X-ENDLIST`) must be replaced by one with a new segment "no later than
  1.5 times the target duration" after the previous one. Stale: unchanged
  for longer than `STALE_TARGET_DURATIONS` x target duration. For DASH the
  basis is the longer of `minimumUpdatePeriod` and the longest segment.
  "Changed" means a new segment, a moved window or an end, never a mere
  rewrite: a packager that rewrites the same list keeps it stale. The slack
  for the poll interval is in how the age is measured: on disk it is exact
  (the file's mtime of the version that brought the change); over HTTP the
  change is only seen at a poll, so the age counts from the first poll that
  saw the new content, which is never more than the truth. However long the
  interval, a playlist that changed between two polls is never called stale,
  and several segments between two polls are normal.
* **Ended**: `EXT-X-ENDLIST` (HLS), `type="static"` (DASH).
* **Segments and media seconds**: the new segments since the last round,
  counted by media sequence (a whole playlist read) or, past the tail, after
  the last newest segment; their EXTINF durations summed. A restarted
  playlist (sequence back) counts its segments anew. Their rate against real
  time is the output's own speed.
* **Overlong segments** (RFC 8216 4.3.3.1): an EXTINF that, rounded to the
  nearest integer, exceeds the target duration.
* **Short window** (RFC 8216 6.2.2): a live playlist that has dropped
  segments (media sequence above 0) must keep at least three target
  durations of them.
* **Bitrate**: the newest segment's size x 8 / its duration, beside the
  declared BANDWIDTH (RFC 8216 4.3.4.2: the peak segment bitrate); only above
  it is a problem (encoders run below their declared rate), and one segment
  is found above it only past `ABOVE_DECLARED_MARGIN` (keyframes swing it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from sigma_exporter.outputs.dash import Manifest, Representation
from sigma_exporter.outputs.folder import RenditionRead
from sigma_exporter.outputs.hls import MediaPlaylist

# RFC 8216 6.2.1: a new version of a live playlist within 1.5 x the target duration.
STALE_TARGET_DURATIONS = 1.5
# RFC 8216 6.2.2: a live playlist keeps at least three target durations of segments.
WINDOW_TARGET_DURATIONS = 3.0
# One segment's rate swings with the keyframes it holds: a finding only when the
# newest segment is this much above the declared peak (the numbers are exported
# as they are).
ABOVE_DECLARED_MARGIN = 1.25


# RenditionState and Verdict are made for every rendition every round: NamedTuples,
# immutable, cheap to make and (holding only numbers) left alone by the garbage
# collector, which 1,500 playlists a round feel (docs/performance.md).


class RenditionState(NamedTuple):
    """What is kept of a rendition between rounds."""

    fingerprint: tuple[object, ...]
    changed_at: float  # Unix time its content last changed
    newest_key: str | None  # HLS: the newest segment; DASH: None
    newest_sequence: int | None  # HLS: its media sequence; DASH: its $Number$
    segments_total: int = 0
    media_seconds_total: float = 0.0
    discontinuities_total: int = 0


class Verdict(NamedTuple):
    """One rendition this round: the numbers exported and the problems found."""

    age: float  # seconds since its content last changed
    target_duration: float | None  # HLS target duration; DASH: the longest segment
    limit: float | None  # stale beyond this age (None: cannot be judged)
    stale: bool
    ended: bool
    media_sequence: int | None
    window_seconds: float | None
    overlong: int  # segments whose duration rounds above the target duration
    missing: int  # listed segments not there
    window_short: bool
    segment_bytes_per_second: float | None  # the newest segment's
    declared_bytes_per_second: float | None
    update_period: float | None  # DASH minimumUpdatePeriod

    def at(self, age: float) -> Verdict:
        """The same verdict at another age (its playlist unchanged since)."""
        return Verdict(age, self.target_duration, self.limit,
                       not self.ended and self.limit is not None and age > self.limit,
                       self.ended, self.media_sequence, self.window_seconds, self.overlong,
                       self.missing, self.window_short, self.segment_bytes_per_second,
                       self.declared_bytes_per_second, self.update_period)

    @property
    def above_declared(self) -> bool:
        return (self.segment_bytes_per_second is not None
                and self.declared_bytes_per_second is not None
                and self.segment_bytes_per_second
                > self.declared_bytes_per_second * ABOVE_DECLARED_MARGIN)


def _new_segments(before: RenditionState | None, playlist: MediaPlaylist,
                  sequence: int | None) -> tuple[int, float, int]:
    """(segments, media seconds, discontinuities) new since `before` (`sequence`: the
    playlist's newest_sequence)."""
    if before is None:
        return 0, 0.0, 0
    count = len(playlist.uris)
    first = 0  # the first new segment's index
    unseen = 0  # new segments beyond the ones read (more than the tail holds)
    if sequence is not None and before.newest_sequence is not None \
            and sequence >= before.newest_sequence:
        delta = sequence - before.newest_sequence
        first = max(0, count - delta)
        unseen = max(0, delta - count)
    elif before.newest_key is not None and (sequence is None or before.newest_sequence is None):
        for i in range(count - 1, -1, -1):
            if playlist.key(i) == before.newest_key:
                first = i + 1
                break
    durations = playlist.durations
    seconds = math.fsum(durations[first:])
    if unseen and count:
        seconds += unseen * math.fsum(durations) / count
    return count - first + unseen, seconds, sum(playlist.discontinuities[first:])


def _changed_at(before: RenditionState | None, fingerprint: tuple[object, ...],
                read: RenditionRead, now: float) -> float:
    """When the content last changed: this version's mtime on disk, or (over HTTP,
    where only a poll sees a change) now, the first poll that saw it."""
    if before is not None and before.fingerprint == fingerprint:
        return before.changed_at
    mtime = read.seen.mtime if read.seen is not None else None
    return min(now, mtime) if mtime is not None else now


def judge_hls(before: RenditionState | None, read: RenditionRead, playlist: MediaPlaylist,
              now: float) -> tuple[RenditionState, Verdict]:
    # Made for every new version of every playlist, 1,500 a round: each value is
    # worked out once here (no property asked twice; docs/performance.md).
    count = len(playlist.uris)
    newest_key = playlist.newest_key
    first_sequence = playlist.media_sequence
    ended = playlist.ended
    # Equal for two reads of a playlist that did not change for a viewer.
    fingerprint = (first_sequence, newest_key, count, ended)
    sequence = playlist.newest_sequence
    if before is None:
        state = RenditionState(fingerprint, _changed_at(None, fingerprint, read, now),
                               newest_key, sequence)
    elif before.fingerprint == fingerprint:
        state = before if before.newest_sequence == sequence else before._replace(
            newest_key=newest_key, newest_sequence=sequence)
    else:
        segments, seconds, discontinuities = _new_segments(before, playlist, sequence)
        state = RenditionState(
            fingerprint, _changed_at(before, fingerprint, read, now), newest_key, sequence,
            before.segments_total + segments, before.media_seconds_total + seconds,
            before.discontinuities_total + discontinuities)
    target = playlist.target_duration
    limit = STALE_TARGET_DURATIONS * target if target else None
    age = now - state.changed_at
    if age < 0.0:
        age = 0.0
    durations = playlist.durations
    seen = read.seen
    size = seen.newest_size if seen is not None else None
    rate = size / durations[-1] if size is not None and count and durations[-1] > 0 else None
    declared = read.declared_bandwidth / 8.0 if read.declared_bandwidth else None
    overlong = 0
    if target is not None and durations:
        # Rounded to the nearest integer, above the target: floor(d + 0.5) > target,
        # that is d + 0.5 >= floor(target) + 1. The longest tells when none is.
        bound = math.floor(target) + 1
        if max(durations) + 0.5 >= bound:
            overlong = sum(1 for duration in durations if duration + 0.5 >= bound)
    window = playlist.window_seconds if playlist.complete else None
    # Positional (keywords cost more): Verdict's order.
    verdict = Verdict(
        age, target, limit, not ended and limit is not None and age > limit,
        ended, first_sequence, window, overlong,
        seen.missing if seen is not None else 0,
        window is not None and not ended and target is not None
        and first_sequence > 0 and window < WINDOW_TARGET_DURATIONS * target,
        rate, declared, None)
    return state, verdict


def judge_dash(before: RenditionState | None, read: RenditionRead, manifest: Manifest,
               rep: Representation, now: float) -> tuple[RenditionState, Verdict]:
    fingerprint = (manifest.dynamic, rep.newest_number, rep.newest_time)
    segments = 0
    if before is not None and before.fingerprint != fingerprint \
            and rep.newest_number is not None and before.newest_sequence is not None:
        delta = rep.newest_number - before.newest_sequence
        segments = delta if delta >= 0 else rep.segments  # back: the packager restarted
    # ffmpeg's segments are of one length: the newest's stands for the new ones.
    seconds = segments * (rep.newest_duration or 0.0)
    state = RenditionState(
        fingerprint, _changed_at(before, fingerprint, read, now), None, rep.newest_number,
        (before.segments_total if before else 0) + segments,
        (before.media_seconds_total if before else 0.0) + seconds,
        before.discontinuities_total if before else 0)
    longest = rep.longest_duration or manifest.max_segment_duration
    basis = max(x for x in (longest, manifest.minimum_update_period, 0.0) if x is not None)
    limit = STALE_TARGET_DURATIONS * basis if basis > 0 else None
    age = max(0.0, now - state.changed_at)
    seen = read.seen
    size = seen.newest_size if seen is not None else None
    rate = size / rep.newest_duration if size is not None and rep.newest_duration else None
    verdict = Verdict(
        age=age, target_duration=longest, limit=limit,
        stale=manifest.dynamic and limit is not None and age > limit,
        ended=not manifest.dynamic, media_sequence=rep.newest_number, window_seconds=None,
        overlong=0, missing=seen.missing if seen is not None else 0, window_short=False,
        segment_bytes_per_second=rate,
        declared_bytes_per_second=rep.bandwidth / 8.0 if rep.bandwidth else None,
        update_period=manifest.minimum_update_period)
    return state, verdict


def judge(before: RenditionState | None, read: RenditionRead, now: float
          ) -> tuple[RenditionState, Verdict] | None:
    """The rendition's new state and verdict; None when it was not read."""
    if read.seen is None:
        return None
    content = read.seen.content
    if isinstance(content, MediaPlaylist):
        return judge_hls(before, read, content, now)
    if isinstance(content, Manifest) and read.representation is not None:
        return judge_dash(before, read, content, read.representation, now)
    return None

