"""HLS playlists and DASH manifests read as pure functions, on literal input
shaped as ffmpeg's muxers write them (hlsenc.c / hlsplaylist.c, dashenc.c)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sigma_exporter.outputs.hls as hls
from sigma_exporter.outputs.dash import fill, iso_duration, parse_mpd
from sigma_exporter.outputs.hls import (
    HEAD_BYTES,
    TAIL_BYTES,
    PlaylistError,
    is_master,
    parse_master,
    parse_media,
    read_head_tail,
    safe_relative,
)

# As `ffmpeg -f hls -hls_time 2 -hls_list_size 5 -hls_flags delete_segments` writes it.
LIVE = b"""#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:41
#EXTINF:2.000000,
stream_041.ts
#EXTINF:2.000000,
stream_042.ts
#EXT-X-DISCONTINUITY
#EXTINF:2.000000,
stream_043.ts
#EXTINF:1.960000,
stream_044.ts
#EXTINF:2.040000,
stream_045.ts
"""

# As `-master_pl_name master.m3u8 -var_stream_map "v:0,a:0 v:1,a:1"` writes it.
MASTER = b"""#EXTM3U
#EXT-X-VERSION:3
#EXT-X-STREAM-INF:BANDWIDTH=405900,RESOLUTION=320x180,CODECS="avc1.f4000c,mp4a.40.2"
stream_0.m3u8

#EXT-X-STREAM-INF:BANDWIDTH=240900,RESOLUTION=160x90,CODECS="avc1.f4000b,mp4a.40.2"
stream_1.m3u8

"""

# As `ffmpeg -f dash -seg_duration 2 -window_size 5` writes it (live).
MPD = b"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011"
\ttype="dynamic" minimumUpdatePeriod="PT2S" maxSegmentDuration="PT2.0S" minBufferTime="PT4.0S">
\t<Period id="0" start="PT0.0S">
\t\t<AdaptationSet id="0" contentType="video">
\t\t\t<Representation id="0" mimeType="video/mp4" bandwidth="300000" width="320" height="180">
\t\t\t\t<SegmentTemplate timescale="12800" initialization="init-stream$RepresentationID$.m4s"
\t\t\t\t\tmedia="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="7">
\t\t\t\t\t<SegmentTimeline>
\t\t\t\t\t\t<S t="76800" d="25600" r="3" />
\t\t\t\t\t\t<S d="12800" />
\t\t\t\t\t</SegmentTimeline>
\t\t\t\t</SegmentTemplate>
\t\t\t</Representation>
\t\t</AdaptationSet>
\t\t<AdaptationSet id="1" contentType="audio">
\t\t\t<SegmentTemplate timescale="48000" media="a-$RepresentationID$-$Time$.m4s" startNumber="1">
\t\t\t\t<SegmentTimeline><S t="0" d="96000" r="1" /></SegmentTimeline>
\t\t\t</SegmentTemplate>
\t\t\t<Representation id="a1" mimeType="audio/mp4" bandwidth="96000" />
\t\t</AdaptationSet>
\t</Period>
</MPD>
"""


def test_a_live_media_playlist() -> None:
    p = parse_media(LIVE, None)
    assert p.target_duration == 2 and p.media_sequence == 41 and p.complete
    assert [s.uri for s in p.segments][-1] == "stream_045.ts"
    assert p.newest_sequence == 45
    assert p.window_seconds == pytest.approx(10.0)
    assert [s.discontinuity for s in p.segments] == [False, False, True, False, False]
    assert not p.ended and not is_master(LIVE)


def test_endlist_and_byteranges() -> None:
    p = parse_media(b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\n#EXT-X-BYTERANGE:1000@0\n"
                    b"all.ts\n#EXTINF:5.5,\n#EXT-X-BYTERANGE:900\nall.ts\n#EXT-X-ENDLIST\n", None)
    assert p.ended
    assert [s.byterange for s in p.segments] == [(1000, 0), (900, 1000)]
    assert p.key(0) != p.key(1)  # one file, two segments


def test_a_master_playlist_lists_its_variants_with_their_bandwidth() -> None:
    assert is_master(MASTER)
    master = parse_master(MASTER)
    assert [(v.uri, v.bandwidth) for v in master.variants] == [
        ("stream_0.m3u8", 405900), ("stream_1.m3u8", 240900)]


@pytest.mark.parametrize(("data", "why"), [
    (b"<html>502 Bad Gateway</html>", "#EXTM3U"),
    (b"#EXTM3U\n#EXTINF:2,\na.ts\n", "TARGETDURATION"),
    (b"#EXTM3U\n#EXT-X-TARGETDURATION:two\n", "not a number"),
    (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:-4\n", "decimal integer"),
    (b"\xff\xfe\x00junk\x00" * 100, "UTF-8"),
    (b"#EXTM3U\x00\x00\x00", "NUL"),
])
def test_what_is_not_a_playlist_says_why(data: bytes, why: str) -> None:
    with pytest.raises(PlaylistError, match=why):
        parse_media(data, None)


def _big(segments: int) -> bytes:
    head = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
    return head + b"".join(b"#EXTINF:2.000000,\nseg%06d.ts\n" % n for n in range(segments))


def test_only_the_head_and_the_tail_of_a_long_playlist_are_parsed() -> None:
    """100,000 segments cost what a few hundred do: the parse is flat in the length."""
    data = _big(100_000)
    (start, length), tail = read_head_tail(len(data))
    assert tail is not None and length == HEAD_BYTES and tail[1] == TAIL_BYTES
    p = parse_media(data[start:start + length], data[tail[0]:])
    assert not p.complete and p.newest_sequence is None  # the count is not known
    assert p.segments[-1].uri == "seg099999.ts" and p.target_duration == 2
    assert 50 < len(p.segments) <= TAIL_BYTES // 30

    def cost(blob: bytes) -> float:
        (s, n), t = read_head_tail(len(blob))
        started = time.process_time()
        for _ in range(20):
            parse_media(blob[s:s + n], None if t is None else blob[t[0]:])
        return time.process_time() - started

    # A playlist of 1,000 segments already fills the tail: 100 times more costs the same.
    assert cost(data) < 3 * cost(_big(1_000)) + 0.01


@pytest.mark.parametrize(("uri", "path"), [
    ("seg1.ts", "seg1.ts"), ("480/seg1.ts", "480/seg1.ts"), ("./a//b.ts", "a/b.ts"),
    ("seg1.ts?token=abc", "seg1.ts"), ("seg%201.ts", "seg 1.ts"),
    ("../secret.ts", None), ("a/../../b.ts", None), ("%2e%2e/secret.ts", None),
    ("/etc/passwd", None), ("//evil.example/x.ts", None), ("http://cdn.example/x.ts", None),
    ("file:///etc/passwd", None), ("a\\..\\b.ts", None), ("seg\x00.ts", None), ("", None),
])
def test_only_paths_inside_the_folder_are_ever_followed(uri: str, path: str | None) -> None:
    assert safe_relative(uri) == path


def test_a_live_dash_manifest() -> None:
    m = parse_mpd(MPD)
    assert m.dynamic and m.minimum_update_period == 2.0 and m.max_segment_duration == 2.0
    video, audio = m.representations
    assert (video.id, video.bandwidth, video.segments) == ("0", 300000, 5)
    assert video.newest_number == 11  # startNumber 7, five segments
    assert video.newest_uri == "chunk-stream0-00011.m4s"
    assert video.newest_duration == 1.0 and video.longest_duration == 2.0
    # An AdaptationSet's template is inherited; $Time$ is the newest segment's start.
    assert audio.newest_uri == "a-a1-96000.m4s" and audio.newest_duration == 2.0


def test_a_static_manifest_has_ended() -> None:
    assert not parse_mpd(MPD.replace(b'type="dynamic"', b'type="static"')).dynamic


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0"?><!DOCTYPE MPD [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
    b"<MPD>&b;</MPD>",
    b'<!DOCTYPE MPD SYSTEM "file:///etc/passwd"><MPD/>',
    b"<MPD><Period>",
    b"\x00\x01binary",
])
def test_entities_dtds_and_broken_xml_are_refused(data: bytes) -> None:
    with pytest.raises(PlaylistError):
        parse_mpd(data)


def test_templates_and_durations() -> None:
    assert fill("$RepresentationID$_$Number%05d$_$$.m4s", "v1", 42, None, None) == \
        "v1_00042_$.m4s"
    assert fill("$Time$.m4s", "v1", 1, None, None) is None
    assert iso_duration("PT1M30.5S") == 90.5 and iso_duration("P1DT1H") == 90000
    assert iso_duration("PT") is None and iso_duration("2s") is None


# A segment's lines as packagers (and broken ones) write them: tags before the
# EXTINF, a title, blank and odd lines, a URI with no EXTINF, other line breaks.
_TAG = st.sampled_from([
    "#EXT-X-DISCONTINUITY", "#EXT-X-PROGRAM-DATE-TIME:2026-12-07T10:00:00.000Z", "",
    "   ", "#EXT-X-GAP", "#", "#EXT-X-ENDLIST", "stray.ts", "#EXT-X-BYTERANGE:500@0",
    "#EXT-X-BYTERANGE:300", "x" * 5000, " #EXTINF:1,", "#EXT-X-DISCONTINUITY\r"])
_BLOCK = st.builds(
    lambda before, duration, title, after, uri, pad: [
        *before, f"#EXTINF:{duration},{title}", *after, f"{pad}{uri}{pad}"],
    st.lists(_TAG, max_size=2),
    st.sampled_from(["2.000000", "2", "1.96", "6.5", "0", "x"]),
    st.sampled_from(["", "title", "a,b"]),
    st.lists(_TAG, max_size=1),
    st.sampled_from(["seg.ts", "a/seg.ts", "seg.ts?x=1", "seg\u2028.ts"]),
    st.sampled_from(["", " "]))


def _version(blocks: list[list[str]], first: int, last: int, ended: bool) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2",
             f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for n in range(first, last):
        # Each segment's own name: numbered as packagers number them.
        lines += [line.replace("seg", f"seg{n:05d}") for line in blocks[n % len(blocks)]]
    return ("\n".join(lines) + ("\n#EXT-X-ENDLIST" if ended else "") + "\n").encode()


def _read(text: str, reader: Callable[[str], object]) -> object:
    try:
        return reader(text)
    except PlaylistError as exc:
        return str(exc)


@given(blocks=st.lists(_BLOCK, min_size=1, max_size=12),
       versions=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 8), st.booleans(),
                                   st.integers(0, 4000)),
                         min_size=1, max_size=6))
def test_the_regular_expression_reads_what_the_line_reader_reads(
        blocks: list[list[str]], versions: list[tuple[int, int, bool, int]]) -> None:
    """Each version of a live playlist (a window moved, segments added, an end, a
    restart), whole or its tail cut anywhere: where the fast reader answers, it
    answers what the line-by-line reader does (which defines the meaning)."""
    first = 0
    for drop, add, ended, cut in versions:
        first, last = (first + drop, first + drop + add + 1) if drop < 6 else (0, add + 1)
        text = _version(blocks, first, last, ended and drop % 2 == 0).decode()
        for body in (text, text[min(cut, len(text)):]):
            fast = hls._plain_segments(body)
            if fast is not None:
                assert fast == _read(body, hls._scan)


@pytest.mark.parametrize("body", [
    LIVE.decode().replace("#EXT-X-DISCONTINUITY\n", ""),
    LIVE.decode().replace("#EXT-X-DISCONTINUITY\n", "") + "#EXT-X-ENDLIST\n",
    # ffmpeg's -hls_flags program_date_time: a tag between EXTINF and the URI
    LIVE.decode().replace("#EXT-X-DISCONTINUITY\n", "").replace(
        ",\n", ",\n#EXT-X-PROGRAM-DATE-TIME:2026-12-07T10:00:00.000+0000\n"),
    _big(5_000).decode()[-TAIL_BYTES:].partition("\n")[2],  # a long playlist's tail
])
def test_what_packagers_write_is_read_by_the_regular_expression(body: str) -> None:
    """The fast reader is the one that runs for ffmpeg's playlists (and agrees)."""
    fast = hls._plain_segments(body)
    assert fast is not None and fast[0] and fast == hls._scan(body)


@pytest.mark.parametrize("body", [
    LIVE.decode(),  # a discontinuity: its meaning runs to the next segment
    "#EXTINF:2,\n\nseg.ts\n",  # a blank line before the URI
    "#EXTINF:2,\n#EXTINF:3,\nseg.ts\n",  # an EXTINF replaced before its URI
    "x#EXTINF:2,\nb.ts\n",  # "#EXTINF" in a URI line
    "#EXTINF:2,\n seg.ts\n",  # a blank stripped off a line
    "#EXTINF:nan,\nseg.ts\n", "#EXTINF:-1,\nseg.ts\n",  # numbers _scan refuses
    "#EXTINF:2,\r\nseg.ts\r\n",
])
def test_other_text_is_left_to_the_line_reader(body: str) -> None:
    assert hls._plain_segments(body) is None


_HEADER_LINE = st.sampled_from([
    "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-TARGETDURATION:6.5",
    "#EXT-X-TARGETDURATION:x", "#EXT-X-TARGETDURATION:", "#EXT-X-MEDIA-SEQUENCE:41",
    "#EXT-X-MEDIA-SEQUENCE:-1", "#EXT-X-MEDIA-SEQUENCE:4 1", "#EXT-X-PLAYLIST-TYPE:event",
    "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-TARGETDURATION:2 ",
    " #EXT-X-MEDIA-SEQUENCE:7", "#EXT-X-DISCONTINUITY-SEQUENCE:3", "", "#X-MEDIA-SEQUENCE:9",
    "#EXT-X-TARGETDURATION:3\r"])


@given(header=st.lists(_HEADER_LINE, max_size=6), segments=st.integers(0, 3),
       after=st.sampled_from(["", "#EXT-X-TARGETDURATION:9\n", "#EXT-X-ENDLIST\n"]))
def test_the_header_regular_expression_reads_what_the_line_reader_reads(
        header: list[str], segments: int, after: str) -> None:
    """A whole playlist laid out plainly has its header tags read by a regular
    expression: it answers what the line-by-line reader does, errors included, and
    a tag after the first segment is never taken for a header tag."""
    text = "\n".join(["#EXTM3U", *header] + [f"#EXTINF:2,\ns{n}.ts" for n in range(segments)])
    text += "\n" + after
    if not hls._is_plain(text) or hls._plain_body(text) is None:
        return
    assert _read(text, hls._plain_header) == _read(text, hls._header)
