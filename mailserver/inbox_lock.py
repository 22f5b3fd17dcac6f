"""The lock a POP3 session holds on its inbox, seen by other processes too (`server.py clear`).

RFC 1939 8: the maildrop is locked while a POP3 session has it. `server.py clear` runs in a
process of its own, so the lock is an operating system lock on one file of the inbox,
`pop3-in-use.lock`, which the system lets go of when its process ends, crashed or not.
Maildir readers (Dovecot, mutt, Python's `mailbox`) look only at tmp/, new/, cur/ and the
dot-folders: the file is no message and no folder to them.

    held = hold_inbox(mailboxes / "bob")    # None: another session or process holds it
    ...
    held.release()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

LOCK_FILE = "pop3-in-use.lock"

try:
    import fcntl
except ImportError:  # Windows: its own byte-range lock
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class HeldInbox:
    """The lock on one inbox, held until release(); safe to release twice."""

    def __init__(self, lock_file: BinaryIO | None) -> None:
        self._lock_file = lock_file

    def release(self) -> None:
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # closing lets the lock go, on both kinds of system


def hold_inbox(inbox: Path) -> HeldInbox | None:
    """Lock the inbox at path inbox; None if another session (of any process) holds it.

    An inbox that does not exist yet holds nothing to lock: it is held without a file.
    """
    try:
        # O_NOFOLLOW: a symbolic link planted in a mailbox must not make the server create or lock another file.
        descriptor = os.open(inbox / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileNotFoundError:
        return HeldInbox(None)
    lock_file = os.fdopen(descriptor, "r+b")
    try:
        if fcntl is not None:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(lock_file.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError (POSIX), PermissionError (Windows): someone else has it
        lock_file.close()
        return None
    return HeldInbox(lock_file)
