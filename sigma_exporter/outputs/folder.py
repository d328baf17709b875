"""One output's folder, read the same way on disk (agent mode) and over HTTP (central mode).

`read_output` finds an output's playlists (the master and its variants, or
the DASH manifest), reads each with one stat and one small bounded read (or
one GET), and touches the newest segment (its size). It does not decide
anything: `judge.py` turns what it read into verdicts. The two ways of
reading are `local.LocalFolder` and `origin.OriginFolder`, behind the
`Folder` interface below; every failure is a `FolderError` with one reason
of `REASONS`, for that output or that rendition alone.

A file whose identity (device, inode, size, mtime) did not change since the
last round is not read again: its earlier parse is kept (`Seen`). The
segments of a new version that were there at the last look are not all
looked at again (`LocalFolder.segments`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from sigma_exporter.outputs.dash import Manifest, Representation, parse_mpd
from sigma_exporter.outputs.hls import (
    MasterPlaylist,
    MediaPlaylist,
    PlaylistError,
    is_master,
    parse_master,
    parse_media,
    safe_relative,
)

# Why an output, or one of its renditions, could not be read (label `reason` of
# sigma_output_errors_total; every one exists at 0 for every output).
REASONS = (
    "missing",  # the folder or a playlist is not there (ENOENT; HTTP 404, 410)
    "no_playlist",  # the folder holds no playlist of the output's format
    "permission",  # EACCES, EPERM; HTTP 401, 403
    "outside_root",  # under no configured root, or resolves (symlinks) out of it
    "not_a_file",  # a FIFO, device or folder where a playlist was expected
    "too_large",  # a playlist over outputs.max_playlist_bytes, a folder of too many files
    "invalid",  # not a playlist or manifest (syntax, binary junk)
    "unsafe_uri",  # a listed URI that is never followed (absolute, `..`, another host)
    "timeout",  # the read missed its deadline (a hung mount; a slow origin)
    "http",  # another HTTP status, a redirect (refused), or no HTTP answer
    "io_error",  # any other failing read (EIO, ESTALE, ...)
)
# Most playlist files looked at in one folder, and most segments checked per
# rendition (the newest ones: a live window of 5 to 10 is checked whole).
MAX_FILES = 64
MAX_SEGMENT_CHECKS = 16


# The values below are made for every playlist every round and never changed once
# made; they are not `frozen` because a frozen dataclass costs about four times as
# much to make (each field set through object.__setattr__), which 1,500 playlists
# a round feel (docs/performance.md).


class FolderError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Fetched(NamedTuple):
    """A playlist file read now: what identifies this version, its bytes."""

    stamp: object  # equal for an unchanged file (local: dev, inode, size, mtime); None: HTTP
    mtime: float | None  # when it was last written (local only)
    head: bytes
    tail: bytes | None  # None: `head` is the whole file


class Folder(Protocol):
    """An output's folder: its files by path relative to it (safe paths only)."""

    async def names(self) -> list[str] | None:
        """Playlist file names in the folder; None when it cannot be listed (HTTP)."""

    async def read(self, path: str, stamp: object, changing: bool = False) -> Fetched | None:
        """The file's head and tail; None when its stamp equals `stamp` (unchanged).
        `changing`: it changed between the last two looks, so a new version is likely
        (a hint: a reader may then skip a look that only tells whether it changed)."""

    async def size(self, path: str) -> int | None:
        """A segment's size in bytes (-1: there, size unknown); None when it is missing."""

    async def segments(self, seen: Seen, playlist_path: str, before: Seen | None) -> None:
        """Fill in a new version's segment fields (`Seen.newest_size`, `missing`,
        `unsafe`, `present`) from its listed segments; `before`: its last version.
        On disk the newest listed are looked at, over HTTP the newest alone."""


@dataclass(slots=True)
class Seen:
    """A playlist as last read, kept until its file changes. A new version's segment
    fields are filled in once, by `Folder.segments`, in the round that read it."""

    stamp: object
    mtime: float | None
    content: MediaPlaylist | MasterPlaylist | Manifest
    newest_size: int | None = None  # bytes of the newest segment
    missing: int = 0  # listed segments not there
    unsafe: int = 0  # listed segment URIs never followed
    present: frozenset[str] = frozenset()  # URIs of the segments checked and found there
    # Read because its file changed since an earlier look: the next look expects a new
    # version (Folder.read's hint). Cleared when a look finds the file unchanged.
    changing: bool = False
    # A master playlist's variants (`_variants`), worked out at its first use.
    variants: tuple[list[tuple[str, int | None]], int] | None = None


@dataclass(slots=True)
class RenditionRead:
    """One rendition (an HLS media playlist, a DASH Representation) as read this round."""

    # Label `rendition`: the playlist's path in the output folder, or the Representation id.
    name: str
    seen: Seen | None  # None: it could not be read (see `error`)
    fresh: bool  # read this round (False: unchanged since the last)
    declared_bandwidth: int | None = None  # BANDWIDTH / @bandwidth, bit/s
    representation: Representation | None = None  # DASH
    error: FolderError | None = None


@dataclass(slots=True)
class OutputRead:
    """Everything read of one output this round, and what to keep for the next."""

    renditions: tuple[RenditionRead, ...] = ()
    error: FolderError | None = None  # the output as a whole could not be read
    uri_errors: int = 0  # variant or segment URIs refused (unsafe_uri)
    dropped: int = 0  # renditions beyond the cap, not read
    cache: Mapping[str, Seen] = field(default_factory=dict)


T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (LocalFolder's reads) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a local read suspended")


async def _seen(folder: Folder, path: str, cache: Mapping[str, Seen], out: dict[str, Seen],
                kind: str, max_bytes: int) -> tuple[Seen, bool]:
    """The playlist at `path`, parsed (or as kept when unchanged); whether it was read now."""
    before = cache.get(path)
    if path in out:  # looked at already this round
        return out[path], out[path] is not before
    if before is None:
        fetched = await folder.read(path, None)
    else:
        fetched = await folder.read(path, before.stamp, before.changing)
    if fetched is None and before is not None:
        before.changing = False  # it stopped changing: looked at the cheap way next time
        out[path] = before
        return before, False
    if fetched is None:  # a Folder that found no stamp to compare: cannot happen
        raise FolderError("io_error", f"{path}: read returned nothing")
    content: MediaPlaylist | MasterPlaylist | Manifest
    try:
        if kind == "dash":
            content = parse_mpd(fetched.head if fetched.tail is None
                                else fetched.head + fetched.tail)
        elif is_master(fetched.head):
            if fetched.tail is not None:
                raise PlaylistError("a master playlist over the head size: refused")
            content = parse_master(fetched.head)
        else:
            content = parse_media(fetched.head, fetched.tail)
    except PlaylistError as exc:
        raise FolderError("invalid", f"{path}: {exc}") from None
    seen = Seen(fetched.stamp, fetched.mtime, content, changing=before is not None)
    out[path] = seen
    return seen, True


def newest_bytes(content: MediaPlaylist, size: int) -> int:
    """The newest segment's bytes: its byte range's length, else its file's `size`."""
    if content.byteranges and content.byteranges[-1] is not None:
        return content.byteranges[-1][0]
    return size


async def _representation_size(folder: Folder, manifest_path: str,
                               rep: Representation) -> tuple[int | None, int, int]:
    """(newest segment's size, missing, unsafe) of a DASH Representation."""
    if rep.newest_uri is None:
        return None, 0, 0
    relative = safe_relative(rep.newest_uri)
    if relative is None:
        return None, 0, 1
    base = posixpath.dirname(manifest_path)
    size = await folder.size(posixpath.join(base, relative) if base else relative)
    return (size if size is not None and size >= 0 else None), int(size is None), 0


async def _list(folder: Folder, kind: str, tried: tuple[str, ...]) -> tuple[list[str], bool]:
    """The folder's playlists of `kind` (sorted) and True, or (HTTP: no listing) the
    configured names to try, in order, and False."""
    suffix = ".mpd" if kind == "dash" else ".m3u8"
    names = await folder.names()
    if names is None:
        return [n for n in tried if n.endswith(suffix)], False
    found = sorted(n for n in names if n.endswith(suffix))[:MAX_FILES]
    if not found:
        raise FolderError("no_playlist", f"no {suffix} file in the folder")
    return found, True


async def read_output(folder: Folder, kind: str, cache: Mapping[str, Seen], *,
                      max_renditions: int, max_bytes: int,
                      playlist_names: tuple[str, ...]) -> OutputRead:
    """Read one output (`kind` "hls" or "dash") of one job. Never raises FolderError:
    a failure of the whole output is `OutputRead.error`, of one rendition its `error`.
    """
    out: dict[str, Seen] = {}
    try:
        if kind == "dash":
            candidates, _ = await _list(folder, kind, playlist_names)
            return await _read_dash(folder, candidates, cache, out, max_renditions, max_bytes)
        return await _read_hls(folder, playlist_names, cache, out, max_renditions,
                               max_bytes)
    except FolderError as exc:
        return OutputRead(error=exc, cache=out)


async def _find(folder: Folder, candidates: list[str], listed: bool, cache: Mapping[str, Seen],
                out: dict[str, Seen], kind: str, max_bytes: int
                ) -> tuple[tuple[str, Seen] | None, list[str]]:
    """A master playlist (or manifest) among `candidates`, else the media playlists.

    Listed (on disk): every candidate is looked at, and one that cannot be
    read is that rendition's error later. Not listed (HTTP): the names are
    tried in order and the first that is there is taken.
    """
    media: list[str] = []
    first_missing: FolderError | None = None
    for name in candidates:
        try:
            seen, _ = await _seen(folder, name, cache, out, kind, max_bytes)
        except FolderError as exc:
            if listed:
                media.append(name)
                continue
            if exc.reason != "missing":
                raise
            first_missing = first_missing or exc
            continue
        if isinstance(seen.content, MasterPlaylist | Manifest):
            return (name, seen), []
        media.append(name)
        if not listed:
            break
    if not media:
        raise first_missing or FolderError("no_playlist", "no playlist found")
    return None, media


def _variants(path: str, master: object) -> tuple[list[tuple[str, int | None]], int]:
    """The media playlists a master at `path` lists (their paths in the folder and
    declared bandwidths), and how many of its URIs are refused (never followed)."""
    base = posixpath.dirname(path)
    wanted: list[tuple[str, int | None]] = []
    refused = 0
    for variant in master.variants if isinstance(master, MasterPlaylist) else ():
        relative = safe_relative(variant.uri)
        if relative is None or not relative.endswith((".m3u8", ".m3u")):
            refused += 1
            continue
        wanted.append((posixpath.join(base, relative) if base else relative,
                       variant.bandwidth))
    return list(dict.fromkeys(wanted)), refused


async def _read_hls(folder: Folder, playlist_names: tuple[str, ...],
                    cache: Mapping[str, Seen], out: dict[str, Seen], max_renditions: int,
                    max_bytes: int) -> OutputRead:
    master: tuple[str, Seen] | None = None
    media: list[str] = []
    # A master seen before first: the other files need no look while it is there.
    for path in [p for p, s in cache.items() if isinstance(s.content, MasterPlaylist)]:
        try:
            master = (path, (await _seen(folder, path, cache, out, "hls", max_bytes))[0])
            break
        except FolderError:
            master = None
    if master is None:  # look for it: the folder listed, or the configured names tried
        candidates, listed = await _list(folder, "hls", playlist_names)
        master, media = await _find(folder, candidates, listed, cache, out, "hls", max_bytes)
    wanted: list[tuple[str, int | None]]
    if master is None:
        wanted, uri_errors = list(dict.fromkeys([(p, None) for p in media])), 0
    else:
        path, seen = master
        if seen.variants is None:  # worked out once per version of the master
            seen.variants = _variants(path, seen.content)
        wanted, uri_errors = seen.variants
    renditions: list[RenditionRead] = []
    for path, bandwidth in wanted[:max_renditions]:
        try:
            seen, fresh = await _seen(folder, path, cache, out, "hls", max_bytes)
            if not isinstance(seen.content, MediaPlaylist):
                raise FolderError("invalid", f"{path}: a master playlist where a media "
                                  "playlist was expected")
            if fresh:
                await folder.segments(seen, path, cache.get(path))
            uri_errors += seen.unsafe
            renditions.append(RenditionRead(path, seen, fresh, bandwidth))
        except FolderError as exc:
            renditions.append(RenditionRead(path, None, True, bandwidth, error=exc))
    return OutputRead(tuple(renditions), uri_errors=uri_errors,
                      dropped=max(0, len(wanted) - max_renditions), cache=out)


async def _read_dash(folder: Folder, candidates: list[str], cache: Mapping[str, Seen],
                     out: dict[str, Seen], max_renditions: int, max_bytes: int) -> OutputRead:
    found, _ = await _find(folder, candidates, False, cache, out, "dash", max_bytes)
    if found is None:
        raise FolderError("invalid", "no DASH manifest")
    path, seen = found
    fresh = seen is not cache.get(path)
    manifest = seen.content
    if not isinstance(manifest, Manifest):
        raise FolderError("invalid", f"{path}: not a DASH manifest")
    renditions: list[RenditionRead] = []
    uri_errors = 0
    for rep in manifest.representations[:max_renditions]:  # its newest segment, each round
        size, missing, unsafe = await _representation_size(folder, path, rep)
        uri_errors += unsafe
        name = rep.id if len(candidates) == 1 else f"{path}#{rep.id}"
        renditions.append(RenditionRead(
            name, Seen(seen.stamp, seen.mtime, manifest, size, missing, unsafe), fresh,
            rep.bandwidth, rep))
    return OutputRead(tuple(renditions), uri_errors=uri_errors,
                      dropped=max(0, len(manifest.representations) - max_renditions), cache=out)
