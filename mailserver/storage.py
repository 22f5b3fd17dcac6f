"""Storage: one Maildir per user, written durably, behind a class so a session never builds a path.

A message goes to tmp/, is fsynced, renamed into new/, and new/ is fsynced before the
server says 250 (the Maildir rule: a message appears only once it is whole). Only names
that pass USERNAME become directories, so no client text reaches a path.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import mailbox
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .users import USERNAME


def fsync_directory(path: Path) -> None:
    """Make a rename or unlink inside directory path survive a crash.

    Windows has no O_DIRECTORY and cannot open a directory to fsync it; there NTFS
    journals the rename itself, so there is nothing to do.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Delivery:
    """One message being written into a Maildir's tmp/; commit() makes it appear in new/."""

    def __init__(self, maildir: Path, name: str) -> None:
        self.temporary = maildir / "tmp" / name
        self.final = maildir / "new" / name
        self.name = name
        self.size = 0
        # O_EXCL: a name clash must fail loudly, never overwrite another delivery.
        descriptor = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = open(descriptor, "wb", buffering=256 * 1024)  # noqa: SIM115 (closed by commit/abort)

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """Make the message durable, then visible; return its key.

        Maildir's rule: a message appears in new/ only once it is whole, so a crash
        leaves it whole or absent. The fsyncs make "whole" survive a power cut.
        """
        renamed = False
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self.temporary, self.final)
            renamed = True
            fsync_directory(self.final.parent)
        except BaseException:
            self.abort()
            if renamed:  # visible but maybe not durable: the client will be told 4xx and send again
                with contextlib.suppress(OSError):
                    os.unlink(self.final)
            raise
        return self.name

    def abort(self) -> None:
        """Throw the message away; nothing of it stays visible."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


class MailboxStore:
    """One Maildir per user under root, holding the messages that user sent.

    Only names that pass USERNAME become directories, so no client text reaches a path.
    """

    _sequence = itertools.count(1)  # next() is atomic under the GIL: unique names without a lock

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._hostname = socket.gethostname().replace("/", "_").replace(":", "_").replace(".", "_")
        self._user_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._user_locks_lock = threading.Lock()

    def start_delivery(self, user: str) -> Delivery:
        """Open a new message of user's for writing; raise OSError if the disk refuses."""
        return Delivery(self._maildir(user, create=True), self._unique_name())

    @contextlib.contextmanager
    def messages(self, user: str) -> Iterator[list[Callable[[], BinaryIO]]]:
        """Yield user's messages, oldest first, as functions that open one for reading.

        The list is taken under the user's lock, then the lock is let go: a session that
        sends the messages to a slow reader must not hold up that user's DELE. An opener
        raises KeyError or FileNotFoundError if the message went since (a DELE, a Maildir
        reader); one already open stays readable to its end (POSIX keeps unlinked files).
        """
        with self._lock_of(user):
            maildir = self._existing_maildir(user)
            # Our names start with a fixed-width timestamp, so name order is arrival order.
            keys = sorted(maildir.keys()) if maildir is not None else []
        yield [functools.partial(maildir.get_file, key) for key in keys]  # type: ignore[union-attr]

    def delete_all(self, user: str) -> int:
        """Delete user's messages; return how many this call deleted."""
        with self._lock_of(user):
            maildir = self._existing_maildir(user)
            if maildir is None:
                return 0
            deleted = 0
            for key in list(maildir.keys()):  # a snapshot: we remove as we go
                with contextlib.suppress(KeyError, FileNotFoundError):
                    maildir.remove(key)
                    deleted += 1
            if deleted:
                path = self._maildir(user, create=False)
                fsync_directory(path / "new")
                fsync_directory(path / "cur")
            return deleted

    def clean_temporary_files(self) -> int:
        """Remove what crashed deliveries left in tmp/ (never visible to RETR); return the count."""
        removed = 0
        for leftover in self.root.glob("*/tmp/*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        return removed

    def _maildir(self, user: str, *, create: bool) -> Path:
        if not USERNAME.fullmatch(user):
            raise ValueError(f"not a valid username: {user!r}")
        path = self.root / user
        if create and not (path / "cur").is_dir():
            # Idempotent, as the first messages of a user may arrive at once; cur/ comes
            # last, so where it exists the Maildir is whole.
            for folder in (path, path / "tmp", path / "new", path / "cur"):
                folder.mkdir(mode=0o700, exist_ok=True)
            fsync_directory(path)
            fsync_directory(self.root)
        return path

    def _existing_maildir(self, user: str) -> mailbox.Maildir | None:
        path = self._maildir(user, create=False)
        return mailbox.Maildir(path, factory=None, create=False) if (path / "cur").is_dir() else None

    def _lock_of(self, user: str) -> threading.Lock:
        with self._user_locks_lock:
            return self._user_locks[user]

    def _unique_name(self) -> str:
        """A Maildir name (time.unique.host) whose fixed-width start sorts by arrival."""
        now = time.time_ns()
        seconds, microseconds = divmod(now // 1000, 1_000_000)
        sequence = next(self._sequence)
        return f"{seconds:010d}.M{microseconds:06d}P{os.getpid()}Q{sequence:09d}.{self._hostname}"
