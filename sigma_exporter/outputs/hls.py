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
says which bytes; `parse_media` takes them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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
# A URI that is a plain relative path (what packagers write): no check beyond this.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


class PlaylistError(ValueError):
    """Not a playlist we can read: the sentence says why (never its content)."""


@dataclass(frozen=True, slots=True)
class Segment:
    uri: str
    duration: float  # EXTINF, seconds
    discontinuity: bool = False  # an EXT-X-DISCONTINUITY before it
    byterange: tuple[int, int] | None = None  # (length, offset) of EXT-X-BYTERANGE

    @property
    def key(self) -> str:
        """What tells this segment from the others of its playlist."""
        return self.uri if self.byterange is None else f"{self.uri}@{self.byterange[1]}"


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """A media playlist as far as read: header tags, and its newest segments."""

    target_duration: float | None
    media_sequence: int  # of the first segment in the file (0 when absent)
    segments: tuple[Segment, ...]  # oldest first: every segment, or the tail's
    complete: bool  # `segments` is every segment of the file
    ended: bool  # EXT-X-ENDLIST
    playlist_type: str | None = None  # EVENT, VOD or None

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


def parse_media(head: bytes, tail: bytes | None) -> MediaPlaylist:
    """A media playlist from its head and tail (`tail` None: `head` is the whole file).

    With a tail, its first line is cut (it starts mid-line) and a URI whose
    EXTINF lies before the tail is skipped.
    """
    head_text = _text(head) if tail is None else head.decode("utf-8", "replace")
    _check_header(head_text)
    target: float | None = None
    sequence = 0
    playlist_type: str | None = None
    header_lines = _lines(head_text)
    for line in header_lines:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = _number(line[22:], "EXT-X-TARGETDURATION")
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = _integer(line[22:], "EXT-X-MEDIA-SEQUENCE")
        elif line.startswith("#EXT-X-PLAYLIST-TYPE:"):
            playlist_type = line[21:].upper()[:8]
        elif line.startswith("#EXTINF"):
            break  # the header is over
    if tail is None:
        body_lines, complete = header_lines, True
    else:
        body = _text(tail)
        body_lines = _lines(body.split("\n", 1)[1] if "\n" in body else "")
        complete = False
    segments: list[Segment] = []
    ended = False
    duration: float | None = None
    discontinuity = False
    byterange: tuple[int, int] | None = None
    next_offset = 0
    for line in body_lines:
        if not line or len(line) > MAX_LINE:
            continue
        if line[0] == "#":
            if line.startswith("#EXTINF:"):
                duration = _number(line[8:].split(",", 1)[0], "EXTINF")
            elif line == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif line == "#EXT-X-ENDLIST":
                ended = True
            elif line.startswith("#EXT-X-BYTERANGE:"):
                length, _, offset = line[17:].partition("@")
                start = _integer(offset, "EXT-X-BYTERANGE") if offset else next_offset
                byterange = (_integer(length, "EXT-X-BYTERANGE"), start)
                next_offset = byterange[0] + start
            continue
        if duration is None:  # a URI whose EXTINF was cut off with the head
            discontinuity, byterange = False, None
            continue
        segments.append(Segment(line, duration, discontinuity, byterange))
        duration, discontinuity, byterange = None, False, None
    if len(segments) > MAX_SEGMENTS:
        segments = segments[-MAX_SEGMENTS:]
        complete = False
    if target is None:
        raise PlaylistError("no EXT-X-TARGETDURATION in its header (RFC 8216 4.3.3.1)")
    return MediaPlaylist(target, sequence, tuple(segments), complete, ended, playlist_type)


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
