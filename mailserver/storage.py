"""Storage: each user's mail in Maildir++ folders, behind the one interface a session may use.

    mailboxes/<user>/          the inbox (tmp/ new/ cur/): mail addressed to <user>, read over POP3
    mailboxes/<user>/.Sent/    the Sent folder: mail <user> sent, what RETR returns and DELE deletes

This is the Maildir++ layout that Dovecot, mutt and Python's `mailbox` read (a folder is a
dot-directory inside the inbox). Only names that pass USERNAME become directories, so no
client text reaches a path. How a file is named, sized and converted to the wire lives in
`maildir.py`; how it is made durable, in `durable.py`; the Maildrop, StoredMessage and the
errors below, in `maildrop.py` (listed here, and imported from here).

What a session may ask (`pop3.py` and `smtp.py` use nothing else; tests/test_layering.py checks):

    MailboxStore   start_delivery(), inbox_size(), reserve(), sent_messages(), delete_sent(), open_maildrop()
    Delivery       write(), commit(), abort(), size          (one message on its way, from start_delivery)
    Maildrop       count(), size(), list(), info(), open(), mark(), unmark(), commit(), close()
    StoredMessage  chunks(), head(), read(), size, close()  (an open message, from open() or sent_messages())
    errors         MaildropInUse, NoSuchMessage, AlreadyDeleted, MessageGone

At start-up `server.py` also calls clean_temporary_files(); `server.py clear NAME` calls clear(), which
refuses an inbox a POP3 session holds, whatever process that session is in (inbox_lock.py).
The web view (webview.py) asks message_counts(), and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from .durable import fsync_directory
from .inbox_lock import HeldInbox, hold_inbox
from .maildir import (
    MAILDIR_PARTS,
    MESSAGE_PARTS,
    Delivery,
    Folder,
    make_maildir,
    message_entries,
    real_directory,
    skipped,
)
from .maildrop import (
    AlreadyDeleted,
    Committed,
    InboxMessage,
    Maildrop,
    MaildropInUse,
    MessageGone,
    NoSuchMessage,
    StoredMessage,
)
from .quota import InboxSizes
from .users import USERNAME

__all__ = [
    "AlreadyDeleted",
    "Committed",
    "Delivery",
    "InboxMessage",
    "MailboxStore",
    "Maildrop",
    "MaildropInUse",
    "MessageGone",
    "NoSuchMessage",
    "StoredMessage",
]

SENT = ".Sent"  # Maildir++: the folder "Sent" is the directory .Sent inside the inbox
# What this server names its files (see _unique_name): only these are ours to clean up in tmp/,
# where Dovecot, serving the same folders, may be writing files of its own.
OUR_NAME = re.compile(r"\d+\.M\d+P\d+Q\d+\.")


# ------------------------------------------------------------------- the store


class MailboxStore:
    """Each user's Maildir++ folders under root: the inbox, and .Sent for the mail the user sent.

    Only names that pass USERNAME become directories, so no client text reaches a path.
    """

    _sequence = itertools.count(1)  # next() is atomic under the GIL: unique names without a lock

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._hostname = socket.gethostname().replace("/", "_").replace(":", "_").replace(".", "_")
        self._pid = os.getpid()  # in every name; asked once, not with a system call per message
        self._whole: dict[str, Path] = {}  # users whose mailbox was seen whole, and its path: no stat() per delivery
        self._user_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._user_locks_lock = threading.Lock()
        self._maildrops_in_use: set[str] = set()
        self._sizes = InboxSizes()  # each inbox's size, and the room RCPT holds in it

    # -- delivery (SMTP DATA) ----------------------------------------------------------

    def start_delivery(self, sender: str, recipients: list[str] | tuple[str, ...] = (), trace: bytes = b"") -> Delivery:
        """Open a message from sender for writing: for sender's Sent, and for the inbox of each recipient
        (accounts here), whose copy starts with trace. Raise OSError if the disk refuses."""
        users = [sender, *dict.fromkeys(recipients)]
        try:
            return self._open_delivery(users, trace)
        except FileNotFoundError:  # a mailbox was removed while the server ran: make it again
            for user in users:
                self._whole.pop(user, None)
            return self._open_delivery(users, trace)

    def _open_delivery(self, users: list[str], trace: bytes) -> Delivery:
        sender, *recipients = users
        inboxes = [self._create(recipient) for recipient in recipients]
        return Delivery(os.path.join(self._create(sender), SENT), inboxes, self._unique_name(), trace)

    def inbox_size(self, user: str) -> int:
        """The octets in user's inbox, as on disk (what --max-mailbox-size limits); see quota.py."""
        return self._sizes.size(user, self._user_path(user))

    def reserve(self, user: str, quota: int, most: int, declared: int = 0) -> Callable[[], None] | None:
        """Hold room in user's inbox for a message on its way; see InboxSizes.reserve."""
        return self._sizes.reserve(user, self._user_path(user), quota, most, declared)

    def message_counts(self, user: str) -> tuple[int, int]:
        """How many messages user has in the inbox and in Sent (the web view shows them); no lock taken."""
        path = self._user_path(user)
        return sum(1 for _ in message_entries(path)), sum(1 for _ in message_entries(path / SENT))

    # -- the Sent folder (the seed's RETR and DELE) -----------------------------------

    def sent_messages(self, user: str) -> list[Callable[[], StoredMessage]]:
        """The messages user sent, oldest first, as functions that open one for reading.

        The list is taken under the user's lock, then the lock is let go: a session that
        sends the messages to a slow reader must not hold up that user's DELE. An opener
        takes the lock again for the open only, so a DELE is whole to it: every message
        opened before the DELE, none after. It raises MessageGone if the message went since
        (a DELE, a Maildir reader); one already open stays readable to its end (POSIX keeps
        unlinked files).
        """
        with self._lock_of(user):
            folder = self._existing_sent(user)
        if folder is None:
            return []
        return [functools.partial(self._open_sent, user, folder, key) for key in folder.arrival_order()]

    def _open_sent(self, user: str, folder: Folder, key: str) -> StoredMessage:
        try:
            with self._lock_of(user):
                return StoredMessage(folder.open(key))
        except FileNotFoundError:
            raise MessageGone(key) from None

    def delete_sent(self, user: str) -> int:
        """Delete the messages user sent; return how many this call deleted."""
        with self._lock_of(user):
            folder = self._existing_sent(user)
            return 0 if folder is None else empty(folder)

    def clear(self, user: str, *, inbox: bool, sent: bool) -> tuple[int, int]:
        """Empty user's inbox and/or Sent folder (server.py clear); return how many messages each lost.

        Raise FileNotFoundError if user has no mailbox, MaildropInUse if the inbox is to be
        emptied while a POP3 session, of this process or another, has it open.
        """
        path = self._user_path(user)
        if not (path / "cur").is_dir():
            raise FileNotFoundError(path)
        held = hold_inbox(path) if inbox else HeldInbox(None)
        if held is None:
            raise MaildropInUse(user)
        try:
            return (empty(Folder(path)) if inbox else 0), (self.delete_sent(user) if sent else 0)
        finally:
            held.release()

    # -- the inbox (POP3) ---------------------------------------------------------------

    def open_maildrop(self, user: str) -> Maildrop:
        """Take a snapshot of user's inbox for one POP3 session; raise MaildropInUse if a session has it.

        Deliveries into the inbox go on meanwhile; they are in the next snapshot.
        """
        inbox = self._user_path(user)
        with self._user_locks_lock:
            if user in self._maildrops_in_use:
                raise MaildropInUse(user)
            self._maildrops_in_use.add(user)
        held = None
        try:
            # RFC 1939 8: the maildrop is locked, for other processes too (server.py clear).
            held = hold_inbox(inbox)
            if held is None:
                raise MaildropInUse(user)
            return Maildrop(Folder(inbox), functools.partial(self._release_maildrop, user, held))
        except BaseException:
            self._release_maildrop(user, held)
            raise

    def _release_maildrop(self, user: str, held: HeldInbox | None) -> None:
        if held is not None:
            held.release()
        with self._user_locks_lock:
            self._maildrops_in_use.discard(user)

    # -- start-up -------------------------------------------------------------------------

    def clean_temporary_files(self) -> int:
        """Remove what crashed deliveries left in tmp/ (never visible); return the count.

        Only regular files named as this server names them (Dovecot may be writing its own
        there), in real directories: a symlinked mailbox or tmp/ leads outside mailboxes/,
        and is skipped and logged, never followed.
        """
        removed = 0
        with os.scandir(self.root) as users:
            mailboxes = [Path(entry.path) for entry in users if USERNAME.fullmatch(entry.name)]
        for mailbox in mailboxes:
            for tmp in (mailbox / "tmp", mailbox / SENT / "tmp"):
                if not all(map(real_directory, (mailbox, tmp.parent, tmp))):
                    if os.path.lexists(tmp):
                        skipped(tmp, "a symlink on the way to it")
                    continue
                with os.scandir(tmp) as entries:
                    leftovers = [entry for entry in entries if OUR_NAME.match(entry.name)]
                for leftover in leftovers:
                    if not leftover.is_file(follow_symlinks=False):
                        skipped(leftover.path, "not a regular file")
                        continue
                    with contextlib.suppress(OSError):
                        os.unlink(leftover.path)
                        removed += 1
        return removed

    # -- paths ----------------------------------------------------------------------------

    def _user_path(self, user: str) -> Path:
        """root/user; raise OSError (ELOOP) if it is a symlink, which the server never follows."""
        if not USERNAME.fullmatch(user):
            raise ValueError(f"not a valid username: {user!r}")
        path = self.root / user
        if os.path.islink(path):
            skipped(path, "a symlink")
            raise OSError(errno.ELOOP, "the mailbox is a symlink, which the server does not follow", str(path))
        return path

    def _create(self, user: str) -> Path:
        """Make user's inbox and Sent folder if they are not there yet; return the inbox."""
        known = self._whole.get(user)
        if known is not None:
            return known  # seen whole once: no stat() per delivery, nor a path joined again
        path = self._user_path(user)
        for folder in (path, path / SENT, *(where / part for where in (path, path / SENT) for part in MAILDIR_PARTS)):
            if os.path.islink(folder):  # a delivery through it would write outside mailboxes/
                skipped(folder, "a symlink")
                raise OSError(errno.ELOOP, "a folder of the mailbox is a symlink", str(folder))
        if not (path / "cur").is_dir():
            # Idempotent, as the first messages of a user may arrive at once. The Sent folder
            # comes first and the inbox's cur/ last: where cur/ exists, all of it does (and
            # a mailbox with .Sent is never taken for the old layout).
            make_maildir(path / SENT, parents=True)
            make_maildir(path)
            fsync_directory(path)
            fsync_directory(self.root)
        self._whole[user] = path
        return path

    def _existing_sent(self, user: str) -> Folder | None:
        path = self._user_path(user) / SENT
        return Folder(path) if real_directory(path) and (path / "cur").is_dir() else None

    def _lock_of(self, user: str) -> threading.Lock:
        with self._user_locks_lock:
            return self._user_locks[user]

    def _unique_name(self) -> str:
        """A Maildir name (time.unique.host) whose fixed-width start sorts by arrival."""
        now = time.time_ns()
        seconds, microseconds = divmod(now // 1000, 1_000_000)
        sequence = next(self._sequence)
        return f"{seconds:010d}.M{microseconds:06d}P{self._pid}Q{sequence:09d}.{self._hostname}"


def empty(folder: Folder) -> int:
    """Remove every message of folder durably (its directories fsynced); return how many went."""
    removed = sum(folder.remove(key) for key in folder.arrival_order())
    if removed:
        for part in MESSAGE_PARTS:
            fsync_directory(folder.path / part)
    return removed
