"""HLS playlists (RFC 8216) as pure functions: bytes in, a frozen summary out.

Written against what packagers write: ffmpeg's HLS muxer (hlsenc.c,
hlsplaylist.c) puts `#EXTM3U`, `#EXT-X-VERSION`, `#EXT-X-TARGETDURATION`,
`#EXT-X-MEDIA-SEQUENCE` (and `#EXT-X-PLAYLIST-TYPE`,
`#EXT-X-DISCONTINUITY-SEQUENCE`) at the top, then per segment an optional
`#EXT-X-DISCONTINUITY`, `#EXTINF:<seconds>,`, optional `#EXT-X-BYTERANGE` and
`#EXT-X-PROGRAM-DATE-TIME`, and the URI; `#EXT-X-ENDLIST` last when it
stops. A master playlist lists variants as `#EXT-X-STREAM-INF:BANDWIDTH=...`
followed by the URI.

Only a playlist's head (its header tags) and its tail (the newest segments)
are parsed, so the cost is flat in the number of segments it keeps: an EVENT
playlist of a day is as cheap as a sliding window of five. `read_head_tail`
says which bytes; `parse_media` takes them. Given the playlist's previous
parse, `parse_media` parses only the lines that differ from it (a live
playlist's new segments, and its header): the text that did not change is
recognised by comparison, and its segments are taken from the previous parse.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import unquote

# Bytes read from the start of a playlist for its header tags, and from its end
# for the newest segments. A live playlist of 2 s segments is ~40 bytes per
# segment: the tail holds the last ~50, far more than one poll adds (a 15 s
# poll adds 8).
HEAD_BYTES = 1024
TAIL_BYTES = 2 * 1024
# Most segments kept from the tail (oldest dropped first).
MAX_SEGMENTS = 128
# Longest line looked at (a URI or a tag); longer ones are junk.
MAX_LINE = 4096

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]*)')
# Line breaks that str.splitlines honours besides "\n": a body holding one is parsed
# whole each time (the offsets kept for the next parse count "\n" only).
_OTHER_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_BYTERANGE = "#EXT-X-BYTERANGE:"
# A URI that is a plain relative path (what packagers write): no check beyond this.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


class PlaylistError(ValueError):
    """Not a playlist we can read: the sentence says why (never its content)."""


# Segment is a NamedTuple and MediaPlaylist a dataclass without
# `frozen` (never changed once made all the same): they are made for every new
# version of every playlist, and a frozen dataclass costs about four times as much
# to make, which 1,500 playlists a round feel (docs/performance.md).


class Segment(NamedTuple):
    uri: str
    duration: float  # EXTINF, seconds
    discontinuity: bool = False  # an EXT-X-DISCONTINUITY before it
    byterange: tuple[int, int] | None = None  # (length, offset) of EXT-X-BYTERANGE

    @property
    def key(self) -> str:
        """What tells this segment from the others of its playlist."""
        return self.uri if self.byterange is None else f"{self.uri}@{self.byterange[1]}"


# What a parse keeps of the text it read, for the next version's (`parse_media`):
# (text, starts, newest line). The parse of a body is a pass over its lines whose
# state (a pending EXTINF, DISCONTINUITY or BYTERANGE) is reset by every URI line;
# `starts` are where each segment's lines that set that state begin, right after
# such a reset: from there on, equal text parses into equal segments.
#   text: the body, up to the newest segment's URI line and its "\n"
#   starts: the offset in `text` of each segment's first line that counts
#   newest line: "\n" + the newest segment's URI line + "\n", as written
# A plain tuple: one is made per playlist read, and the garbage collector leaves a
# tuple of strings and numbers alone.
ParsedBody = tuple[str, tuple[int, ...], str]


@dataclass(slots=True)
class MediaPlaylist:
    """A media playlist as far as read: header tags, and its newest segments."""

    target_duration: float | None
    media_sequence: int  # of the first segment in the file (0 when absent)
    segments: tuple[Segment, ...]  # oldest first: every segment, or the tail's
    complete: bool  # `segments` is every segment of the file
    ended: bool  # EXT-X-ENDLIST
    playlist_type: str | None = None  # EVENT, VOD or None
    # For the next version's parse; None when it is parsed whole (see parse_media).
    body: ParsedBody | None = field(default=None, compare=False, repr=False)

    @property
    def newest(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    @property
    def newest_sequence(self) -> int | None:
        """Media sequence number of the newest segment, when every segment was read."""
        if not self.complete or not self.segments:
            return None
        return self.media_sequence + len(self.segments) - 1

    @property
    def window_seconds(self) -> float:
        """Seconds of media listed (every segment's, or at least the tail's)."""
        return math.fsum(s.duration for s in self.segments)

    def fingerprint(self) -> tuple[object, ...]:
        """Equal for two reads of a playlist that did not change for a viewer."""
        newest = self.newest
        return (self.media_sequence, newest.key if newest else None, len(self.segments),
                self.ended)


@dataclass(frozen=True, slots=True)
class Variant:
    """A rendition a master playlist lists."""

    uri: str
    bandwidth: int | None  # BANDWIDTH, bit/s: the peak segment bitrate (RFC 8216 4.3.4.2)


@dataclass(frozen=True, slots=True)
class MasterPlaylist:
    variants: tuple[Variant, ...]


def read_head_tail(size: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """(offset, length) of the head to read, and of the tail (None: the head is all)."""
    if size <= HEAD_BYTES + TAIL_BYTES:
        return (0, size), None
    return (0, HEAD_BYTES), (size - TAIL_BYTES, TAIL_BYTES)


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlaylistError("not UTF-8 text (RFC 8216 4.1)") from None
    if "\x00" in text:
        raise PlaylistError("contains NUL bytes: not a text playlist")
    return text


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def is_master(head: bytes) -> bool:
    """Whether the playlist is a master (multivariant) playlist, from its head."""
    return b"#EXT-X-STREAM-INF" in head or b"#EXT-X-MEDIA:" in head


def _check_header(head_text: str) -> None:
    if not head_text.lstrip("\ufeff").startswith("#EXTM3U"):
        raise PlaylistError("does not start with #EXTM3U (RFC 8216 4.3.1.1)")


def _number(value: str, tag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise PlaylistError(f"{tag} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise PlaylistError(f"{tag} is not a number >= 0")
    return number


def _integer(value: str, tag: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise PlaylistError(f"{tag} is not a decimal integer")
    return int(value)


def _attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTRIBUTE.findall(text)}


def parse_master(data: bytes) -> MasterPlaylist:
    """The variants (and the alternative renditions with a URI) of a master playlist."""
    text = _text(data)
    _check_header(text)
    variants: list[Variant] = []
    pending: int | bool | None = False  # False: no STREAM-INF waiting for its URI
    for line in _lines(text):
        if not line or len(line) > MAX_LINE:
            continue
        if line.startswith("#EXT-X-STREAM-INF:"):
            bandwidth = _attributes(line[18:]).get("BANDWIDTH", "")
            pending = int(bandwidth) if bandwidth.isdigit() and len(bandwidth) < 16 else None
        elif line.startswith("#EXT-X-MEDIA:"):
            uri = _attributes(line[13:]).get("URI")
            if uri:
                variants.append(Variant(uri, None))
        elif line.startswith("#"):
            continue
        elif pending is not False:
            variants.append(Variant(line, pending if isinstance(pending, int) else None))
            pending = False
    return MasterPlaylist(tuple(dict.fromkeys(variants)))


def _newline_only(text: str) -> bool:
    """Whether "\n" is the only line break in `text` (for str.splitlines)."""
    if text.isascii():  # known without a look (CPython): a few fast searches
        return not ("\r" in text or "\x0b" in text or "\x0c" in text or "\x1c" in text
                    or "\x1d" in text or "\x1e" in text)
    return _OTHER_BREAKS.search(text) is None


def _header(text: str) -> tuple[float | None, int, str | None]:
    """(target duration, media sequence, playlist type) from the tags before the first
    EXTINF."""
    target: float | None = None
    sequence = 0
    playlist_type: str | None = None
    first = text.find("#EXTINF")
    if first >= 0:  # the lines before it, when it starts its line: the header is over there
        line_start = text.rfind("\n", 0, first) + 1
        if not text[line_start:first].strip():
            text = text[:line_start]
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("#EXT-X-"):
            if line.startswith("#EXTINF"):
                break  # the header is over
        elif line.startswith("TARGETDURATION:", 7):
            target = _number(line[22:], "EXT-X-TARGETDURATION")
        elif line.startswith("MEDIA-SEQUENCE:", 7):
            sequence = _integer(line[22:], "EXT-X-MEDIA-SEQUENCE")
        elif line.startswith("PLAYLIST-TYPE:", 7):
            playlist_type = line[21:].upper()[:8]
    return target, sequence, playlist_type


@dataclass(slots=True)
class _Scan:
    """The segments of a text parsed from a reset state, and where they begin."""

    segments: list[Segment]
    starts: list[int]  # offset of each segment's first line that counts (see ParsedBody)
    ended: bool
    reset: bool  # the state at the end is reset: what follows parses on its own
    newest_end: int  # offset just past the newest segment's URI line and its "\n"


def _scan(text: str, by_newline: bool, base: int = 0) -> _Scan:
    """Parse `text`'s lines (split at "\n" only when `by_newline`; offsets are then
    `base` + their place in `text`)."""
    segments: list[Segment] = []
    starts: list[int] = []
    ended = False
    duration: float | None = None
    discontinuity = False
    byterange: tuple[int, int] | None = None
    next_offset = 0
    start = -1  # where the pending segment's first line that counts begins; -1: reset
    newest_end = -1
    at = base
    for raw in text.split("\n") if by_newline else text.splitlines():
        line_at = at
        at += len(raw) + 1
        line = raw.strip()
        if not line or len(line) > MAX_LINE:
            continue
        if line[0] == "#":
            if line.startswith("#EXTINF:"):
                duration = _number(line[8:].split(",", 1)[0], "EXTINF")
            elif line == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif line == "#EXT-X-ENDLIST":
                ended = True
                continue
            elif line.startswith(_BYTERANGE):
                length, _, offset = line[17:].partition("@")
                first = _integer(offset, "EXT-X-BYTERANGE") if offset else next_offset
                byterange = (_integer(length, "EXT-X-BYTERANGE"), first)
                next_offset = byterange[0] + first
            else:
                continue
            if start < 0:
                start = line_at
            continue
        if duration is None:  # a URI whose EXTINF was cut off with the head
            discontinuity, byterange, start = False, None, -1
            continue
        segments.append(Segment(line, duration, discontinuity, byterange))
        starts.append(start)
        newest_end = at
        duration, discontinuity, byterange, start = None, False, None, -1
    return _Scan(segments, starts, ended, start < 0, newest_end)


def _may_count(text: str, end: int) -> bool:
    """Whether `text[:end]` may hold a line that makes or ends a segment (else its
    parse is empty: header tags, comments, URIs without an EXTINF)."""
    return (text.find("#EXTINF", 0, end) >= 0  # bounded searches: no copies
            or text.find("#EXT-X-DISCONTINUITY", 0, end) >= 0
            or text.find("#EXT-X-ENDLIST", 0, end) >= 0)


def _rescan(body: str, before: ParsedBody, segments: tuple[Segment, ...]) -> _Scan | None:
    """`body` parsed where it differs from `before` (whose segments are `segments`),
    or None when it cannot be (the previous newest segment's line is not in it).

    The text of `before` from one of its `starts` to its newest segment's line
    is found at the same place before that line in `body`: those segments are
    the same. What precedes that text in `body` (a header, the start of the
    tail) and what follows (the new segments) is parsed.
    """
    old, starts, newest_line = before
    found = body.rfind(newest_line)
    if found < 0:
        return None
    end = found + len(newest_line)  # the old newest segment's line ends here
    shift = end - len(old)  # from an offset in `old` to the same text in `body`

    def matches(k: int) -> bool:  # old's text from its k-th segment is in body
        at = starts[k] + shift
        return at >= 0 and body.startswith(old[starts[k]:], at)

    # The first kept segment whose text, to the end of `old`, is also in `body` (a
    # shorter suffix matches whenever a longer one does). A live playlist drops about
    # as many as it adds: the oldest few are tried first, then the rest is bisected.
    low, high = 0, len(starts)
    while low < min(high, 3) and not matches(low):
        low += 1
    if low == 3:
        while low < high:
            middle = (low + high) // 2
            if matches(middle):
                high = middle
            else:
                low = middle + 1
    kept = low
    at = starts[kept] + shift if kept < len(starts) else end
    if at > 0 and body[at - 1] != "\n":  # not at a line's start in `body`
        kept += 1
        at = starts[kept] + shift if kept < len(starts) else end
    first = _scan(body[:at], True) if _may_count(body, at) else _Scan([], [], False, True, -1)
    if not first.reset:  # a pending tag before the text that matched: one segment later
        kept += 1
        at = starts[kept] + shift if kept < len(starts) else end
        first = _scan(body[:at], True)
    rest = _scan(body[end:], True, end)
    first.segments += segments[kept:]
    first.segments += rest.segments
    first.starts += [s + shift for s in starts[kept:]]
    first.starts += rest.starts
    first.ended = first.ended or rest.ended
    first.newest_end = rest.newest_end if rest.segments else end
    return first


def parse_media(head: bytes, tail: bytes | None, before: MediaPlaylist | None = None
                ) -> MediaPlaylist:
    """A media playlist from its head and tail (`tail` None: `head` is the whole file).

    With a tail, its first line is cut (it starts mid-line) and a URI whose
    EXTINF lies before the tail is skipped. `before`, the previous version's
    parse, spares the lines that did not change: the result is what a parse
    without it gives.
    """
    head_text = _text(head) if tail is None else head.decode("utf-8", "replace")
    _check_header(head_text)
    target, sequence, playlist_type = _header(head_text)
    if tail is None:
        body = head_text
    else:
        cut = _text(tail)
        newline = cut.find("\n")
        body = cut[newline + 1:] if newline >= 0 else ""
    # Offsets are kept only for a body of "\n" line breaks and no byte ranges (each
    # offset follows the one before: a segment's value depends on the earlier ones).
    by_newline = _BYTERANGE not in body and _newline_only(body)
    scan = None
    if by_newline and before is not None and before.body is not None:
        scan = _rescan(body, before.body, before.segments)
    if scan is None:
        scan = _scan(body, by_newline)
    if target is None:
        raise PlaylistError("no EXT-X-TARGETDURATION in its header (RFC 8216 4.3.3.1)")
    segments, starts = scan.segments, scan.starts
    complete = tail is None
    if len(segments) > MAX_SEGMENTS:
        segments, starts = segments[-MAX_SEGMENTS:], starts[-MAX_SEGMENTS:]
        complete = False
    kept: ParsedBody | None = None
    if by_newline and segments and not scan.ended and scan.newest_end <= len(body):
        line_start = body.rfind("\n", 0, scan.newest_end - 1)
        kept = (body[:scan.newest_end], tuple(starts), body[line_start:scan.newest_end])
    return MediaPlaylist(target, sequence, tuple(segments), complete, scan.ended,
                         playlist_type, kept)


def safe_relative(uri: str) -> str | None:
    """`uri` as a path inside its playlist's folder, or None when it is not one.

    Absolute URIs (a scheme, `//host`, `/path`), `..` (percent-encoded or
    not), backslashes and control characters are never followed: the exporter
    reads nothing outside the configured roots. A query or fragment is not
    part of the file's name.
    """
    if _PLAIN.fullmatch(uri) is not None and ".." not in uri:
        return uri
    if not uri or len(uri) > 1024 or ":" in uri.split("/", 1)[0] or uri.startswith("/"):
        return None
    uri = unquote(uri.split("#", 1)[0].split("?", 1)[0])
    if uri.startswith("/") or "\\" in uri or not uri.isprintable():
        return None
    parts = [p for p in uri.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)
