"""Durable writes: a file whole on disk before it is visible, and the directory fsync that makes it stay.

- `Draft` is one file being written: `finish()` fsyncs and closes it, `discard()` removes it.
- `link_or_copy()` makes a finished file appear under a second name, as atomically as a rename.
- `fsync_directory()` makes a rename or unlink survive a crash, with group commit: the
  deliveries that renamed into one folder meanwhile share one fsync.

`mailbox.py` of the standard library never fsyncs the directory (its `_sync_close` covers the
file only), which is why this module exists. Nothing here knows about Maildir or users.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from pathlib import Path

CHUNK = 256 * 1024  # a stored message is written, copied and read this much at a time: memory stays bounded
# A hard link can fail where a copy works: another filesystem, too many links, a filesystem without links
# (Windows on FAT or a network share: EINVAL or EACCES), Linux's protected_hardlinks (EPERM, EACCES).
LINK_REFUSED = {errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def fsync_directory(path: str | Path) -> None:
    """Make a rename or unlink inside directory path, done before this call, survive a crash.

    Group commit: an fsync of a directory makes durable every change made in it before
    the fsync started. So a caller that finds an fsync of path already running waits for
    it to end, then for the next one, which starts after its change; deliveries that
    renamed into one folder meanwhile all share that next fsync instead of queueing one
    each. If the fsync that covers a caller fails, the caller gets its error.

    Windows has no O_DIRECTORY and cannot open a directory to fsync it; there NTFS
    journals the rename itself, so there is nothing to do.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    key = os.fspath(path)
    with _group_commits_lock:
        group = _group_commits.get(key)
        if group is None:
            group = _group_commits[key] = _GroupCommit(key)
    group.sync()


class _GroupCommit:
    """The fsyncs of one directory, numbered in the order they start; one runs at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # an fsync ended
        self._running = False
        self._waiting = 0  # threads waiting for an fsync to end
        self._started = 0  # the number of the last fsync started (the running one, if any)
        self._finished = 0  # the number of the last fsync that ended, well or not
        self._durable = 0  # the number of the last fsync that ended well
        self._error: OSError | None = None  # why the last fsync that failed failed

    def sync(self) -> None:
        """Return once an fsync that started after this call began has ended well; else raise its error."""
        with self._lock:
            covering = self._started + 1  # the first fsync to start from now on: it covers our change
            if self._running:
                self._waiting += 1
                self._changed.wait_for(lambda: self._finished >= covering or not self._running)
                self._waiting -= 1
            if self._durable >= covering:
                return  # another thread's fsync, started after our change, has made it durable
            if self._finished >= covering:
                assert self._error is not None
                raise OSError(self._error.errno, self._error.strerror, self.path)
            self._running = True
            self._started = covering  # none running and none covering: start it ourselves
        self._fsync(covering)

    def _fsync(self, number: int) -> None:
        """Run fsync number, then tell the threads waiting on it how it ended."""
        error: OSError | None = None
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except BaseException as failure:
            error = failure if isinstance(failure, OSError) else OSError(errno.EIO, "directory fsync interrupted")
            raise
        finally:
            with self._lock:
                self._running, self._finished = False, number
                if error is None:
                    self._durable = number
                else:
                    self._error = error
                if self._waiting:
                    self._changed.notify_all()


_group_commits: dict[str, _GroupCommit] = {}  # directory -> its fsyncs; one entry per Maildir folder
_group_commits_lock = threading.Lock()


class Draft:
    """One file being written (in a Maildir's tmp/): write() adds to it, finish() makes it durable,
    discard() removes it.

    A descriptor and a list of pieces rather than Python's buffered file: opening one costs an
    fstat() and an lseek() per message, and a message of a few KiB is one write() either way.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        # O_EXCL: a name clash must fail loudly, never overwrite another delivery. O_BINARY (Windows
        # only): without it the descriptor is in text mode there, and every LF written becomes CRLF.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        self._descriptor: int | None = os.open(path, flags, 0o600)
        self._pending: list[bytes] = []  # written by write(), not yet by the system: CHUNK at most
        self._pending_size = 0

    def write(self, data: bytes) -> None:
        """Add data to the file; pieces (a line at a time, say) are gathered up to CHUNK into one write()."""
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= CHUNK:
            self._write_pending()

    def _write_pending(self) -> None:
        if self._descriptor is None:
            raise ValueError(f"{self.path} is closed")
        view = memoryview(b"".join(self._pending))
        self._pending.clear()
        self._pending_size = 0
        while view:
            view = view[os.write(self._descriptor, view) :]

    def finish(self) -> None:
        """Close the file, ensuring all of it is physically on disk."""
        self._write_pending()
        descriptor, self._descriptor = self._descriptor, None
        assert descriptor is not None
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def discard(self) -> None:
        """Close the file and remove it; safe after finish() and twice."""
        descriptor, self._descriptor = self._descriptor, None
        self._pending.clear()
        if descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(descriptor)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def link_or_copy(source: Path, target: Path, scratch: Path) -> Path:
    """Make the finished file source appear as target: a hard link, or a durable copy written as scratch
    and renamed where links fail (scratch: a free name in the target's tmp/). Return target."""
    try:
        os.link(source, target)  # as atomic as a rename: the file appears whole
        return target
    except OSError as error:
        if error.errno not in LINK_REFUSED:
            raise
    copy = Draft(scratch)
    try:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, copy, CHUNK)
        copy.finish()
        os.rename(copy.path, target)
    except BaseException:
        copy.discard()
        raise
    return target
