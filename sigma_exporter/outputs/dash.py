"""DASH manifests (MPD, ISO/IEC 23009-1) as pure functions: bytes in, a frozen summary out.

Written against what packagers write: ffmpeg's DASH muxer (dashenc.c) writes
a `dynamic` MPD with `minimumUpdatePeriod` (the segment duration),
`maxSegmentDuration`, one Period, and per Representation a
`SegmentTemplate` (`media="chunk-stream$RepresentationID$-$Number%05d$.m4s"`,
`startNumber`, `timescale`) with a `SegmentTimeline` of `<S t d r>` entries;
the manifest is rewritten after every segment and becomes `static` when the
muxer ends. The newest segment of a Representation is the last `S` entry
(and its repeats), its file the template filled in.

The XML is read with expat, refusing any DTD or entity declaration (no
entity expansion, no external entities), within the size the caller read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from sigma_exporter.outputs.hls import PlaylistError

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")
_TEMPLATE = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth|)(%0(\d{1,2})d)?\$")
MAX_REPRESENTATIONS = 64
MAX_TIMELINE_ENTRIES = 4096


def iso_duration(text: str | None) -> float | None:
    """Seconds of an xs:duration such as PT2S or PT1M30.5S; None when absent or bad."""
    if not text:
        return None
    match = _DURATION.match(text.strip())
    if match is None or text.strip() in ("P", "PT"):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (parts.get("d", 0.0) * 86400 + parts.get("h", 0.0) * 3600
            + parts.get("m", 0.0) * 60 + parts.get("s", 0.0))


@dataclass(frozen=True, slots=True)
class Representation:
    id: str
    bandwidth: int | None  # @bandwidth, bit/s
    newest_uri: str | None  # the newest segment's file, relative to the manifest
    newest_number: int | None
    newest_time: int | None  # in timescale units
    newest_duration: float | None  # seconds
    longest_duration: float | None  # the longest segment listed, seconds
    segments: int  # segments the timeline lists


@dataclass(frozen=True, slots=True)
class Manifest:
    dynamic: bool  # type="dynamic": live; "static": ended (or VOD)
    minimum_update_period: float | None
    max_segment_duration: float | None
    representations: tuple[Representation, ...]

    def fingerprint(self) -> tuple[object, ...]:
        return (self.dynamic, tuple((r.id, r.newest_number, r.newest_time)
                                    for r in self.representations))


@dataclass
class _Template:
    media: str | None = None
    timescale: int = 1
    start_number: int = 1
    duration: int | None = None
    timeline: list[tuple[int | None, int, int]] = field(default_factory=list)  # (t, d, r)
    has_timeline: bool = False

    def child(self) -> _Template:
        return _Template(self.media, self.timescale, self.start_number, self.duration,
                         list(self.timeline), self.has_timeline)


def _int(value: str | None, default: int | None = None) -> int | None:
    if value is None or not value.strip().lstrip("-").isdigit() or len(value) > 19:
        return default
    return int(value)


def fill(template: str, rep_id: str, number: int | None, time: int | None,
         bandwidth: int | None) -> str | None:
    """A SegmentTemplate filled in (ISO/IEC 23009-1 5.3.9.4.4); None if it cannot be."""
    missing = False

    def one(match: re.Match[str]) -> str:
        nonlocal missing
        name, width = match.group(1), match.group(3)
        value: object
        if name == "":
            return "$"
        if name == "RepresentationID":
            return rep_id
        value = {"Number": number, "Time": time, "Bandwidth": bandwidth}[name]
        if value is None:
            missing = True
            return ""
        return f"{value:0{int(width)}d}" if width else str(value)

    filled = _TEMPLATE.sub(one, template)
    return None if missing else filled


_SCOPES = frozenset({"MPD", "Period", "AdaptationSet", "Representation"})


class _Reader:
    """Collects what the checks need from the MPD's elements, in one expat pass.

    A SegmentTemplate applies to the element it is in and is inherited below
    it (Period, AdaptationSet, Representation): each of those levels gets a
    copy of its parent's template; other elements share their parent's.
    """

    def __init__(self) -> None:
        self.mpd: dict[str, str] = {}
        self.representations: list[Representation] = []
        self._stack: list[tuple[str, _Template, dict[str, str]]] = []

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rsplit(" ", 1)[-1]
        parent = self._stack[-1][1] if self._stack else _Template()
        if local == "MPD" and not self._stack:
            self.mpd = attrs
        if local == "Period":
            self.representations.clear()  # the last Period is the live one
        elif local == "SegmentTemplate":
            parent.media = attrs.get("media", parent.media)
            parent.timescale = _int(attrs.get("timescale"), parent.timescale) or 1
            parent.start_number = _int(attrs.get("startNumber"), parent.start_number) or 0
            parent.duration = _int(attrs.get("duration"), parent.duration)
        elif local == "SegmentTimeline":
            parent.has_timeline, parent.timeline = True, []
        elif local == "S" and len(parent.timeline) < MAX_TIMELINE_ENTRIES:
            d = _int(attrs.get("d"))
            if d is None or d <= 0:
                raise PlaylistError("a SegmentTimeline S has no positive @d")
            parent.timeline.append((_int(attrs.get("t")), d, _int(attrs.get("r"), 0) or 0))
        self._stack.append((local, parent.child() if local in _SCOPES else parent, attrs))

    def end(self, name: str) -> None:
        local, template, attrs = self._stack.pop()
        if local == "Representation" and len(self.representations) < MAX_REPRESENTATIONS:
            self.representations.append(_representation(attrs, template))


def _representation(attrs: dict[str, str], template: _Template) -> Representation:
    rep_id = attrs.get("id", "")[:128]
    bandwidth = _int(attrs.get("bandwidth"))
    scale = template.timescale
    count, number, time, last_d, longest = 0, None, None, None, 0
    if template.has_timeline and template.timeline:
        clock = 0
        for t, d, r in template.timeline:
            clock = t if t is not None else clock
            repeats = max(r, 0) + 1
            count += repeats
            time = clock + (repeats - 1) * d
            clock += repeats * d
            last_d, longest = d, max(longest, d)
        number = template.start_number + count - 1
    elif template.duration:
        longest, last_d = template.duration, template.duration
    newest = None
    if template.media and (number is not None or time is not None):
        newest = fill(template.media, rep_id, number, time, bandwidth)
    return Representation(
        rep_id, bandwidth, newest, number, time,
        last_d / scale if last_d else None, longest / scale if longest else None, count)


def parse_mpd(data: bytes) -> Manifest:
    """The live-ness, update period and Representations of an MPD."""
    reader = _Reader()
    parser = expat.ParserCreate(namespace_separator=" ")

    def refuse(*_: object) -> Any:
        raise PlaylistError("declares a DTD or entities: refused")

    # Any DTD is refused before its entities could be declared or expanded.
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise PlaylistError(f"not well-formed XML: {expat.ErrorString(exc.code)}") from None
    except RecursionError:
        raise PlaylistError("nested too deep") from None
    if not reader.mpd and not reader.representations:
        raise PlaylistError("no MPD element")
    kind = reader.mpd.get("type", "static")
    mup = iso_duration(reader.mpd.get("minimumUpdatePeriod"))
    longest = iso_duration(reader.mpd.get("maxSegmentDuration"))
    return Manifest(kind == "dynamic", mup if mup is None or math.isfinite(mup) else None,
                    longest, tuple(reader.representations))
