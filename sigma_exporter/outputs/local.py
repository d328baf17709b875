"""Agent mode: an output's folder read on this host's disk, inside its configured root.

Sigma's answer names the folder; it is read only when it lies under a
configured root, after symlinks are resolved (`os.path.realpath`), and
every file is then opened relative to the folder's own descriptor with
`O_NOFOLLOW` (a symlinked file is resolved and checked against the root
too), `O_NONBLOCK` (a FIFO never blocks the open) and only when it is a
regular file. A playlist is read with one stat and at most two bounded
`pread`s (its head and its tail); one whose device, inode, size and mtime
did not change is not read at all. The stat is an `fstatat` by name, then
an `fstat` of what was opened; a playlist that changed at the last look (a
live one, polled slower than its segments) is opened at once and its
`fstat` alone is the look.

Everything here blocks (a dead network mount can block a stat for ever), so
it runs in a worker thread with a deadline (`outputs/source.py`), never on
the poll loop.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sigma_exporter.outputs.folder import (
    MAX_SEGMENT_CHECKS,
    Fetched,
    FolderError,
    OutputRead,
    Seen,
    newest_bytes,
    read_output,
    run_sync,
)
from sigma_exporter.outputs.hls import MediaPlaylist, read_head_tail, safe_relative

# Most entries of one folder looked at when listing it for playlists.
MAX_LISTED = 10_000
_SUFFIXES = (".m3u8", ".m3u", ".mpd")
_OPEN_FILE = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def os_error(exc: OSError, what: str) -> FolderError:
    """The reason of a failing read, and a sentence without the root's full path."""
    code = exc.errno
    text = os.strerror(code) if code is not None else type(exc).__name__
    if code in (errno.ENOENT, errno.ENOTDIR):
        return FolderError("missing", f"{what}: {text}")
    if code in (errno.EACCES, errno.EPERM):
        return FolderError("permission", f"{what}: {text}")
    if code == errno.ELOOP:
        return FolderError("outside_root", f"{what}: a symlink loop")
    return FolderError("io_error", f"{what}: {text}")


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class LocalFolder:
    """One output folder, opened for one round (close it after)."""

    def __init__(self, root_real: str, relative: str, max_bytes: int,
                 root_fd: int | None = None) -> None:
        self.root = root_real
        self.relative = relative or "."
        self.max_bytes = max_bytes
        self._dirs: dict[str, tuple[int, str]] = {}
        self.fd, self.path = self._open(root_fd, root_real, relative)
        self._dirs[""] = (self.fd, self.path)

    def _open(self, base_fd: int | None, base: str, relative: str) -> tuple[int, str]:
        """A folder below `base` opened a component at a time, no symlink followed: one
        openat each, and no window in which a swapped symlink leads elsewhere. A
        component that is a symlink is resolved and must stay inside the root."""
        fd: int | None = None
        path = base  # real and normal: the root's realpath, then plain names or resolved
        try:
            for part in relative.split("/"):
                if not part:
                    continue
                at = fd if fd is not None else base_fd
                try:
                    opened = os.open(part if at is not None else f"{path}/{part}",
                                     _OPEN_DIR | os.O_NOFOLLOW, dir_fd=at)
                    below = f"{path}/{part}"
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    below = os.path.realpath(f"{path}/{part}")
                    if not inside(below, self.root):
                        raise FolderError("outside_root", f"{relative} leads out of the root "
                                          "through a symlink") from None
                    opened = os.open(below, _OPEN_DIR)
                if fd is not None:
                    os.close(fd)
                fd, path = opened, below
            if fd is None:
                fd = os.open(path, _OPEN_DIR) if base_fd is None else os.dup(base_fd)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            raise os_error(exc, relative or ".") from None
        except FolderError:
            if fd is not None:
                os.close(fd)
            raise
        return fd, path

    def close(self) -> None:
        for fd, _ in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _dir(self, sub: str) -> tuple[int, str]:
        """A sub-folder's descriptor and path (symlinks resolved, inside the root)."""
        found = self._dirs.get(sub)
        if found is None:
            found = self._dirs[sub] = self._open(self.fd, self.path, sub)
        return found

    def _stat(self, path: str) -> tuple[os.stat_result, int | None, str]:
        """(stat, dir fd to open it by name, name or real path); a symlink resolved."""
        sub, _, name = path.rpartition("/")
        dir_fd, dir_real = self._dirs[sub] if sub in self._dirs else self._dir(sub)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            return st, dir_fd, name
        real = os.path.realpath(os.path.join(dir_real, name))
        if not inside(real, self.root):
            raise FolderError("outside_root", f"{path} is a symlink out of the root")
        return os.stat(real, follow_symlinks=False), None, real

    async def names(self) -> list[str] | None:
        found: list[str] = []
        try:
            with os.scandir(self.fd) as entries:
                for n, entry in enumerate(entries):
                    if n >= MAX_LISTED:
                        raise FolderError("too_large", f"{self.relative}: more than "
                                          f"{MAX_LISTED} files in the folder")
                    if entry.name.endswith(_SUFFIXES):
                        found.append(entry.name)
        except OSError as exc:
            raise os_error(exc, self.relative) from None
        return found

    async def read(self, path: str, stamp: object, changing: bool = False) -> Fetched | None:
        try:
            if changing:  # likely a new version: opened at once, its fstat the look
                sub, _, name = path.rpartition("/")
                folder_fd = (self._dirs.get(sub) or self._dir(sub))[0]
                try:
                    fd = os.open(name, _OPEN_FILE, dir_fd=folder_fd)
                except OSError:
                    fd = -1  # a symlink, gone, a socket...: the careful way says which
                if fd >= 0:
                    return self._read_open(fd, path, stamp)
            st, dir_fd, name = self._stat(path)
            if not stat.S_ISREG(st.st_mode):
                raise FolderError("not_a_file", f"{path} is not a regular file")
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == stamp:
                return None
            if st.st_size > self.max_bytes:
                raise FolderError("too_large", f"{path} is {st.st_size} bytes, over "
                                  f"outputs.max_playlist_bytes ({self.max_bytes})")
            return self._read_open(os.open(name, _OPEN_FILE, dir_fd=dir_fd), path, None)
        except OSError as exc:
            raise os_error(exc, path) from None

    def _read_open(self, fd: int, path: str, stamp: object) -> Fetched | None:
        """The opened file's head and tail, None when its stamp is `stamp`; closes `fd`."""
        try:
            st = os.fstat(fd)  # what was opened: it may have been replaced since a stat
            if not stat.S_ISREG(st.st_mode):
                raise FolderError("not_a_file", f"{path} is not a regular file")
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if identity == stamp:
                return None
            if st.st_size > self.max_bytes:
                raise FolderError("too_large", f"{path} is {st.st_size} bytes, over "
                                  f"outputs.max_playlist_bytes ({self.max_bytes})")
            (start, length), tail_at = read_head_tail(st.st_size)
            head = os.pread(fd, length, start)
            tail = None if tail_at is None else os.pread(fd, tail_at[1], tail_at[0])
        finally:
            os.close(fd)
        return Fetched(identity, st.st_mtime, head, tail)

    async def segments(self, seen: Seen, playlist_path: str, before: Seen | None) -> None:
        """The newest segment's size, and how many of the listed segments (the newest
        `MAX_SEGMENT_CHECKS`) are missing, for a new version of a media playlist.

        A segment is stat'ed when it is first listed, and again while it is not
        found. One found before is stat'ed again when it is among the oldest
        listed, as many as the version added: the next to leave the list, those a
        player that joined at its start asks for now, and the first an early
        clean-up removes. So a segment removed while it is listed is found by the
        time it is among the next to leave (the list moving as it did), the newest
        one's absence at once.
        """
        content = seen.content
        if not isinstance(content, MediaPlaylist) or not content.uris:
            return
        uris = content.uris
        newest_uri = uris[-1]
        # Oldest first, each URI once (one file listed several times, with byte ranges or
        # not, is one look), and looked at in this order: the same files always give
        # the same first error.
        tail = uris[-MAX_SEGMENT_CHECKS:]
        listed = frozenset(tail)
        if len(listed) != len(tail):
            tail = tuple(dict.fromkeys(tail))
        looks: Sequence[str] = tail
        if before is not None:  # new, or not found last time; the oldest, as many; the newest
            known = before.present
            new = [uri for uri in tail if uri not in known]
            if len(new) < len(tail):
                looks = tuple(dict.fromkeys((*new, *tail[:max(1, len(new))], newest_uri)))
        base = playlist_path.rpartition("/")[0]
        dir_fd = (self._dirs.get(base) or self._dir(base))[0]  # the playlist's, open already
        gone: list[str] = []  # never followed (unsafe), or not found
        unsafe = 0
        missing: set[str] = set()  # files (two URIs may name one)
        newest_size: int | None = None
        for uri in looks:
            relative = safe_relative(uri)
            if relative is None:
                gone.append(uri)
                unsafe += 1
                continue
            path = f"{base}/{relative}" if base else relative
            if "/" in relative:
                size = await self.size(path)
            else:  # the common case in one call: a regular file in the playlist's folder
                try:
                    st = os.stat(relative, dir_fd=dir_fd, follow_symlinks=False)
                    size = st.st_size if stat.S_ISREG(st.st_mode) else await self.size(path)
                except FileNotFoundError:
                    size = None
                except OSError as exc:
                    raise os_error(exc, path) from None
            if size is None:
                gone.append(uri)
                missing.add(path)
            elif uri == newest_uri and size >= 0:
                newest_size = newest_bytes(content, size)
        seen.newest_size = newest_size
        seen.missing, seen.unsafe = len(missing), unsafe
        seen.present = listed.difference(gone) if gone else listed

    async def size(self, path: str) -> int | None:
        try:
            st, _, _ = self._stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error(exc, path) from None
        return st.st_size if stat.S_ISREG(st.st_mode) else None


@dataclass(frozen=True, slots=True)
class LocalOutput:
    """One output to read under a root: its key, folder (relative to the root), format
    and what was kept of it last round."""

    key: object
    relative: str
    kind: str
    cache: Mapping[str, Seen]


def read_root(root: str, outputs: Sequence[LocalOutput], *, max_renditions: int,
              max_bytes: int, done: Callable[[object, OutputRead], None]) -> None:
    """Read every output under `root`, handing each result to `done` as it is ready.

    Blocking: a worker thread's work. A result handed over before the
    deadline counts even when a later output hangs.
    """
    try:
        root_real = os.path.realpath(root)
        root_fd = os.open(root_real, _OPEN_DIR)
    except OSError as exc:
        error = os_error(exc, "the root")
        for output in outputs:
            done(output.key, OutputRead(error=error))
        return
    try:
        for output in outputs:
            try:
                folder = LocalFolder(root_real, output.relative, max_bytes, root_fd)
            except FolderError as exc:
                done(output.key, OutputRead(error=exc))
                continue
            try:
                done(output.key, run_sync(read_output(
                    folder, output.kind, output.cache, max_renditions=max_renditions,
                    max_bytes=max_bytes, playlist_names=())))
            finally:
                folder.close()
    finally:
        os.close(root_fd)
