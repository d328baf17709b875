"""HLS playlists (RFC 8216) as pure functions: bytes in, a summary out.

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
says which bytes; `parse_media` takes them. Text laid out as packagers write
it (a tag or a URI a line, "\n" line breaks, no stray blanks, no
discontinuities or byte ranges) is read by one regular expression
(`_plain_segments`, a few microseconds); any other text by the line-by-line
reader (`_scan`), which defines what a playlist means here: the regular
expression answers only where it agrees with it (a property test holds them
to it), and otherwise leaves the text to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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
_BYTERANGE = "#EXT-X-BYTERANGE:"
# A URI that is a plain relative path (what packagers write): no check beyond this.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")
# One segment as packagers write it: its EXTINF line, tag lines, its URI line.
_PLAIN_SEGMENT = re.compile(r"#EXTINF:([^,\n]*)[^\n]*\n(?:#[^\n]*\n)*([^#\n][^\n]*)")
_ENDLIST_LINE = re.compile(r"^#EXT-X-ENDLIST$", re.MULTILINE)
# What sends an ASCII text to the line-by-line reader: a line break other than
# "\n" (str.splitlines honours them), a blank that str.strip would take off a line,
# and the tags whose meaning runs from one segment to the next.
_NOT_PLAIN = ("\r", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\n ", " \n",
              "#EXT-X-DISCONTINUITY", _BYTERANGE)
# A header tag of plain text (`_is_plain`), as `_header` reads it.
_HEADER_TAG = re.compile(r"^#EXT-X-(TARGETDURATION|MEDIA-SEQUENCE|PLAYLIST-TYPE):([^\n]*)",
                         re.MULTILINE)
# Up to this many EXTINF values are converted one by one; more, each distinct one once.
_CONVERT_EACH = 16


class PlaylistError(ValueError):
    """Not a playlist we can read: the sentence says why (never its content)."""


class Segment(NamedTuple):
    uri: str
    duration: float  # EXTINF, seconds
    discontinuity: bool = False  # an EXT-X-DISCONTINUITY before it
    byterange: tuple[int, int] | None = None  # (length, offset) of EXT-X-BYTERANGE


def segment_key(uri: str, byterange: tuple[int, int] | None) -> str:
    """What tells a segment from the others of its playlist."""
    return uri if byterange is None else f"{uri}@{byterange[1]}"


# A dataclass without `frozen` (never changed once made all the same), its segments
# as columns rather than a Segment each: one is made for every new version of every
# playlist, 1,500 a round, and both a frozen dataclass and a tuple per segment cost
# more than the parse itself (docs/performance.md).


@dataclass(slots=True)
class MediaPlaylist:
    """A media playlist as far as read: header tags, and its newest segments."""

    target_duration: float | None
    media_sequence: int  # of the first segment in the file (0 when absent)
    uris: tuple[str, ...]  # oldest first: every segment's, or the tail's
    durations: tuple[float, ...]  # EXTINF of each
    complete: bool  # the segments are every segment of the file
    ended: bool  # EXT-X-ENDLIST
    playlist_type: str | None = None  # EVENT, VOD or None
    # Of each segment, when any has one (else empty, the common case): an
    # EXT-X-DISCONTINUITY before it, its EXT-X-BYTERANGE (length, offset).
    discontinuities: tuple[bool, ...] = ()
    byteranges: tuple[tuple[int, int] | None, ...] = ()

    @property
    def segments(self) -> tuple[Segment, ...]:
        count = len(self.uris)
        return tuple(map(Segment, self.uris, self.durations,
                         self.discontinuities or (False,) * count,
                         self.byteranges or (None,) * count))

    def key(self, index: int) -> str:
        """The key (`segment_key`) of the segment at `index`."""
        return segment_key(self.uris[index],
                           self.byteranges[index] if self.byteranges else None)

    @property
    def newest_key(self) -> str | None:
        return self.key(-1) if self.uris else None

    @property
    def newest_sequence(self) -> int | None:
        """Media sequence number of the newest segment, when every segment was read."""
        if not self.complete or not self.uris:
            return None
        return self.media_sequence + len(self.uris) - 1

    @property
    def window_seconds(self) -> float:
        """Seconds of media listed (every segment's, or at least the tail's)."""
        return math.fsum(self.durations)


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


# The segments of a text: URIs, durations, discontinuities and byte ranges (each
# empty when no segment has one), and whether it holds EXT-X-ENDLIST.
Segments = tuple[tuple[str, ...], tuple[float, ...], tuple[bool, ...],
                 tuple[tuple[int, int] | None, ...], bool]


def _scan(text: str) -> Segments:
    """The segments of `text`, read a line at a time: what a playlist means here."""
    uris: list[str] = []
    durations: list[float] = []
    discontinuities: list[bool] = []
    byteranges: list[tuple[int, int] | None] = []
    ended = False
    duration: float | None = None
    discontinuity = False
    byterange: tuple[int, int] | None = None
    next_offset = 0
    for raw in text.splitlines():
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
            elif line.startswith(_BYTERANGE):
                length, _, offset = line[17:].partition("@")
                first = _integer(offset, "EXT-X-BYTERANGE") if offset else next_offset
                byterange = (_integer(length, "EXT-X-BYTERANGE"), first)
                next_offset = byterange[0] + first
            continue
        if duration is None:  # a URI whose EXTINF was cut off with the head
            discontinuity, byterange = False, None
            continue
        uris.append(line)
        durations.append(duration)
        discontinuities.append(discontinuity)
        byteranges.append(byterange)
        duration, discontinuity, byterange = None, False, None
    return (tuple(uris), tuple(durations),
            tuple(discontinuities) if any(discontinuities) else (),
            tuple(byteranges) if any(r is not None for r in byteranges) else (), ended)


def _is_plain(text: str) -> bool:
    """Whether `text` is laid out as packagers write it: ASCII, every line already
    stripped (no blank at a line's edge, no tab or other whitespace an ASCII text
    can hold), "\n" line breaks, no line over MAX_LINE, no discontinuity or byte
    range. Such text reads the same line by line and by the regular expressions."""
    if not text.isascii() or len(text) > MAX_LINE or text[:1] == " " or text[-1:] == " ":
        return False
    # A substring search each: faster than one regular expression, or a generator.
    for mark in _NOT_PLAIN:  # noqa: SIM110
        if mark in text:
            return False
    return True


def _plain_segments(text: str) -> Segments | None:
    """`_scan(text)` for text laid out as packagers write it, by one regular expression;
    None for any other text (and for any doubt: an odd number, a stray EXTINF)."""
    return _plain_body(text) if _is_plain(text) else None


def _plain_body(text: str) -> Segments | None:
    """`_plain_segments` of a text `_is_plain` said yes to.

    Why it agrees with `_scan` where it answers: the lines are as `_scan`
    strips them (`_is_plain`); every "#EXTINF" starts a line and each is
    matched, so no EXTINF is followed by another before its URI, and none is
    left without one.
    """
    found = _PLAIN_SEGMENT.findall(text)
    count = text.count("#EXTINF")
    if count != len(found) or text.count("\n#EXTINF") != count - text.startswith("#EXTINF"):
        return None
    ended = "#EXT-X-ENDLIST" in text and _ENDLIST_LINE.search(text) is not None
    if not found:
        return (), (), (), (), ended
    texts, uris = zip(*found, strict=True)
    try:
        if len(texts) <= _CONVERT_EACH:
            durations = tuple(map(float, texts))
        else:  # packagers write a few distinct durations: each converted once
            values = {text: float(text) for text in set(texts)}
            durations = tuple(map(values.__getitem__, texts))
    except ValueError:
        return None  # _scan says which
    if min(durations) < 0 or not math.isfinite(sum(durations)):
        return None  # _scan says which
    return uris, durations, (), (), ended


def _plain_header(text: str) -> tuple[float | None, int, str | None]:
    """`_header(text)` for a text `_is_plain` said yes to and `_plain_body` read (so each
    "#EXTINF" starts a line): its tags before the first EXTINF by one regular
    expression, taken in order as `_header` takes them."""
    first = text.find("#EXTINF")
    target: float | None = None
    sequence = 0
    playlist_type: str | None = None
    for tag, value in _HEADER_TAG.findall(text, 0, first if first >= 0 else len(text)):
        if tag == "TARGETDURATION":
            target = _number(value, "EXT-X-TARGETDURATION")
        elif tag == "MEDIA-SEQUENCE":
            sequence = _integer(value, "EXT-X-MEDIA-SEQUENCE")
        else:
            playlist_type = value.upper()[:8]
    return target, sequence, playlist_type


def parse_media(head: bytes, tail: bytes | None) -> MediaPlaylist:
    """A media playlist from its head and tail (`tail` None: `head` is the whole file).

    With a tail, its first line is cut (it starts mid-line) and a URI whose
    EXTINF lies before the tail is skipped.
    """
    head_text = _text(head) if tail is None else head.decode("utf-8", "replace")
    _check_header(head_text)
    found: Segments | None = None
    if tail is None:  # the whole file: plain text is read by the regular expressions
        body = head_text
        if _is_plain(body):
            found = _plain_body(body)
        header = _header(body) if found is None else _plain_header(body)
    else:
        header = _header(head_text)
        cut = _text(tail)
        newline = cut.find("\n")
        body = cut[newline + 1:] if newline >= 0 else ""
        found = _plain_segments(body)
    target, sequence, playlist_type = header
    uris, durations, discontinuities, byteranges, ended = found or _scan(body)
    if target is None:
        raise PlaylistError("no EXT-X-TARGETDURATION in its header (RFC 8216 4.3.3.1)")
    complete = tail is None
    if len(uris) > MAX_SEGMENTS:
        uris, durations = uris[-MAX_SEGMENTS:], durations[-MAX_SEGMENTS:]
        discontinuities, byteranges = discontinuities[-MAX_SEGMENTS:], byteranges[-MAX_SEGMENTS:]
        complete = False
        if not any(discontinuities):
            discontinuities = ()
        if not any(r is not None for r in byteranges):
            byteranges = ()
    return MediaPlaylist(target, sequence, uris, durations, complete, ended, playlist_type,
                         discontinuities, byteranges)


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
