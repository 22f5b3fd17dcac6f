"""Storage: each user's mail in Maildir++ folders, written durably, behind a class so a session never builds a path.

    mailboxes/<user>/          the inbox (tmp/ new/ cur/): mail addressed to <user>, read over POP3
    mailboxes/<user>/.Sent/    the Sent folder: mail <user> sent, what RETR returns and DELE deletes

This is the Maildir++ layout that Dovecot, mutt and Python's `mailbox` read (a folder is a
dot-directory inside the inbox). A message goes to tmp/, is fsynced, renamed (or linked)
into new/, and new/ is fsynced before the server says 250 (the Maildir rule: a message
appears only once it is whole). Only names that pass USERNAME become directories, so no
client text reaches a path.

Methods for the SMTP session: start_delivery(), inbox_size(), sent_messages(), delete_sent().
For the POP3 session: open_maildrop(). At start-up: clean_temporary_files(), migrate_old_layout().
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import itertools
import mailbox
import os
import re
import shutil
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .users import USERNAME

SENT = ".Sent"  # Maildir++: the folder "Sent" is the directory .Sent inside the inbox
# Where an old-layout mailbox's messages gather before the folder becomes .Sent in one rename;
# no leading dot, so Maildir++ readers never take it for a folder.
MIGRATING = "migrating-to-Sent"
MAILDIR_PARTS = ("tmp", "new", "cur")
# What this server names its files (see _unique_name): only these are ours to clean up in tmp/,
# where Dovecot, serving the same folders, may be writing files of its own.
OUR_NAME = re.compile(r"\d+\.M\d+P\d+Q\d+\.")
# Maildir++ size fields in a name: S= is the octets on disk, W= with CRLF line ends (what POP3 sends).
SIZE_FIELD = re.compile(r",S=(\d+)")
WIRE_SIZE_FIELD = re.compile(r",W=(\d+)")
MAX_UNIQUE_ID = 70  # RFC 1939 7: a UIDL is 1 to 70 characters from 0x21 to 0x7E
COPY_CHUNK = 256 * 1024
# A hard link can fail where a copy works: another filesystem, too many links, a filesystem without links
# (Windows on FAT or a network share: EINVAL or EACCES), Linux's protected_hardlinks (EPERM, EACCES).
LINK_REFUSED = {errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def fsync_directory(path: Path) -> None:
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
    """One file being written in a Maildir's tmp/: finish() makes it durable, discard() removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # O_EXCL: a name clash must fail loudly, never overwrite another delivery. O_BINARY (Windows
        # only): without it the descriptor is in text mode there, and every LF written becomes CRLF.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        descriptor = os.open(path, flags, 0o600)
        self.file = open(descriptor, "wb", buffering=256 * 1024)  # noqa: SIM115 (closed by finish/discard)

    def finish(self) -> None:
        """Close the file, ensuring all of it is physically on disk."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class Delivery:
    """One message on its way: a byte-exact copy for the sender's Sent, one inbox copy for all local recipients.

    write() adds to both files as the data streams in (the message is read once); the
    inbox copy starts with the trace header. commit() makes every copy durable and
    visible, or leaves none visible.
    """

    def __init__(self, sent: Path, inboxes: list[Path], name: str, trace: bytes) -> None:
        self.name = name
        self.size = 0  # octets the sender sent, as stored (LF line ends)
        self.sent_folder = sent
        self.inboxes = inboxes
        self._sent = Draft(sent / "tmp" / name)
        self._inbox: Draft | None = None
        self._inbox_size = len(trace)
        self._inbox_line_ends = trace.count(b"\n")
        if inboxes:
            try:
                self._inbox = Draft(inboxes[0] / "tmp" / name)
                self._inbox.file.write(trace)
            except BaseException:
                self.abort()
                raise

    def write(self, chunk: bytes) -> None:
        self._sent.file.write(chunk)
        self.size += len(chunk)
        if self._inbox is not None:
            self._inbox.file.write(chunk)
            self._inbox_line_ends += chunk.count(b"\n")

    def commit(self) -> str:
        """Make every copy durable, then visible; return the Sent copy's key.

        Maildir's rule: a message appears in new/ only once it is whole, so a crash
        leaves it whole or absent. The fsyncs make "whole" survive a power cut. If any
        copy fails, the ones already visible are removed again before the error is raised.
        """
        visible: list[Path] = []
        try:
            self._sent.finish()
            if self._inbox is not None:
                self._inbox.finish()
            os.rename(self._sent.path, self.sent_folder / "new" / self.name)
            visible.append(self.sent_folder / "new" / self.name)
            if self._inbox is not None:
                visible += self._link_into_inboxes(self._inbox.path)
                self._inbox.discard()  # the name in tmp/; the links in new/ keep the file
            for folder in dict.fromkeys(path.parent for path in visible):
                fsync_directory(folder)
        except BaseException:
            self.abort()
            for path in visible:  # visible but maybe not durable: the client is told 4xx and sends again
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        return self.name

    def _link_into_inboxes(self, written: Path) -> list[Path]:
        """Hard-link the written inbox copy into each inbox's new/ (copy where a link fails); return the new paths."""
        self._inbox_size += self.size
        wire_size = self._inbox_size + self._inbox_line_ends
        name = f"{self.name},S={self._inbox_size},W={wire_size}"  # Maildir++ sizes, as Dovecot reads them
        linked: list[Path] = []
        try:
            for inbox in self.inboxes:
                linked.append(link_or_copy(written, inbox, name))
        except BaseException:
            for path in linked:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        return linked

    def abort(self) -> None:
        """Throw the message away; nothing of it stays visible."""
        self._sent.discard()
        if self._inbox is not None:
            self._inbox.discard()


def link_or_copy(source: Path, maildir: Path, name: str) -> Path:
    """Make source appear as maildir/new/name: a hard link, or a durable copy through tmp/ where links fail."""
    target = maildir / "new" / name
    try:
        os.link(source, target)  # as atomic as a rename: the message appears whole
        return target
    except OSError as error:
        if error.errno not in LINK_REFUSED:
            raise
    copy = Draft(maildir / "tmp" / name)
    try:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, copy.file, COPY_CHUNK)
        copy.finish()
        os.rename(copy.path, target)
    except BaseException:
        copy.discard()
        raise
    return target


# ------------------------------------------------------------------ the POP3 maildrop


class MaildropInUse(Exception):
    """Another POP3 session holds this inbox (RFC 2449 8.1.2: [IN-USE])."""


@dataclasses.dataclass(frozen=True)
class InboxMessage:
    """One message of a maildrop snapshot."""

    key: str  # its Maildir name without the flags after ":", which a reader like mutt may change
    path: Path  # where it was when the snapshot was taken
    size: int  # octets as POP3 sends it, CRLF line ends, before dot-stuffing (RFC 1939 5: LIST, STAT)

    @property
    def unique_id(self) -> str:
        """The UIDL: the Maildir unique name (before the Maildir++ size fields), or a digest if it does not fit."""
        unique = self.key.split(",", 1)[0]
        if 0 < len(unique) <= MAX_UNIQUE_ID and all(0x21 <= ord(c) <= 0x7E for c in unique):
            return unique
        return hashlib.sha1(self.key.encode("utf-8", "surrogateescape")).hexdigest()


class Maildrop:
    """A user's inbox as one POP3 session sees it (RFC 1939 5): the messages at login, numbered
    from 1, and the numbers marked deleted.

    Messages delivered meanwhile wait for the next session. Only commit() removes anything
    (QUIT's UPDATE state); close() gives the inbox back to other sessions.
    """

    def __init__(self, inbox: Path, messages: list[InboxMessage], release: Callable[[], None]) -> None:
        self.inbox = inbox
        self.messages = messages
        self.deleted: set[int] = set()
        self._release: Callable[[], None] | None = release

    def get(self, number: int) -> InboxMessage:
        """Return message number (from 1); raise KeyError if there is none or it is marked deleted."""
        if not 1 <= number <= len(self.messages) or number in self.deleted:
            raise KeyError(number)
        return self.messages[number - 1]

    def listing(self) -> list[tuple[int, InboxMessage]]:
        """The messages not marked deleted, with their numbers."""
        return [(n, message) for n, message in enumerate(self.messages, start=1) if n not in self.deleted]

    def totals(self) -> tuple[int, int]:
        """How many messages are not marked deleted, and their octets (STAT)."""
        listed = self.listing()
        return len(listed), sum(message.size for _, message in listed)

    def delete(self, number: int) -> None:
        """Mark message number deleted; raise KeyError as get() does."""
        self.get(number)
        self.deleted.add(number)

    def reset(self) -> None:
        """Unmark every message (RSET)."""
        self.deleted.clear()

    def open(self, number: int) -> BinaryIO:
        """Open message number for reading; raise KeyError as get() does, or if another program removed it."""
        message = self.get(number)
        path = self._current_path(message)
        if path is None:
            raise KeyError(number)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise KeyError(number) from None

    def commit(self) -> int:
        """Remove the marked messages durably (directory fsync); return how many were removed."""
        removed = 0
        for number in sorted(self.deleted):
            path = self._current_path(self.messages[number - 1])
            with contextlib.suppress(FileNotFoundError):
                if path is not None:
                    os.unlink(path)
                    removed += 1
        if self.deleted:
            for part in ("new", "cur"):
                fsync_directory(self.inbox / part)
        self.deleted.clear()
        return removed

    def close(self) -> None:
        """Give the inbox back; nothing is removed. Safe to call twice."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Maildrop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _current_path(self, message: InboxMessage) -> Path | None:
        """Where the message is now: a Maildir reader may have moved it to cur/ and added flags."""
        if message.path.exists():
            return message.path
        for path in maildir_files(self.inbox):
            if path.name.split(":", 1)[0] == message.key:
                return path
        return None


def maildir_files(maildir: Path) -> Iterator[Path]:
    """The message files of a Maildir (new/ and cur/), in no particular order."""
    return (Path(entry.path) for entry in maildir_entries(maildir))


def maildir_entries(maildir: Path) -> Iterator[os.DirEntry[str]]:
    """The directory entries of a Maildir's messages, as os.scandir gives them."""
    for part in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError), os.scandir(maildir / part) as entries:
            yield from (entry for entry in entries if not entry.name.startswith("."))


def wire_size(path: Path) -> int:
    """The octets of a stored message with CRLF line ends: from the name's W= field, or by counting."""
    field = WIRE_SIZE_FIELD.search(path.name.split(":", 1)[0])
    if field is not None:
        return int(field[1])
    size = 0
    with open(path, "rb") as message:
        while chunk := message.read(COPY_CHUNK):
            size += len(chunk) + chunk.count(b"\n")
    return size


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
        self._whole: set[str] = set()  # users whose mailbox was seen whole: no stat() per delivery
        self._user_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._user_locks_lock = threading.Lock()
        self._maildrops_in_use: set[str] = set()

    # -- delivery (SMTP DATA) ----------------------------------------------------------

    def start_delivery(self, sender: str, recipients: list[str] | tuple[str, ...] = (), trace: bytes = b"") -> Delivery:
        """Open a message from sender for writing: for sender's Sent, and for the inbox of each recipient
        (accounts here), whose copy starts with trace. Raise OSError if the disk refuses."""
        users = [sender, *dict.fromkeys(recipients)]
        try:
            return self._open_delivery(users, trace)
        except FileNotFoundError:  # a mailbox was removed while the server ran: make it again
            self._whole.difference_update(users)
            return self._open_delivery(users, trace)

    def _open_delivery(self, users: list[str], trace: bytes) -> Delivery:
        sender, *recipients = users
        inboxes = [self._create(recipient) for recipient in recipients]
        return Delivery(self._create(sender) / SENT, inboxes, self._unique_name(), trace)

    def inbox_size(self, user: str) -> int:
        """The octets in user's inbox, as on disk (what --max-mailbox-size limits)."""
        size = 0
        for entry in maildir_entries(self._user_path(user)):
            field = SIZE_FIELD.search(entry.name.split(":", 1)[0])  # read from the name: no stat() per message
            if field is not None:
                size += int(field[1])
                continue
            with contextlib.suppress(FileNotFoundError):  # a POP3 QUIT may remove it meanwhile
                size += entry.stat().st_size
        return size

    # -- the Sent folder (the seed's RETR and DELE) -----------------------------------

    def sent_messages(self, user: str) -> list[Callable[[], BinaryIO]]:
        """The messages user sent, oldest first, as functions that open one for reading.

        The list is taken under the user's lock, then the lock is let go: a session that
        sends the messages to a slow reader must not hold up that user's DELE. An opener
        raises KeyError or FileNotFoundError if the message went since (a DELE, a Maildir
        reader); one already open stays readable to its end (POSIX keeps unlinked files).
        """
        with self._lock_of(user):
            maildir = self._existing_sent(user)
            # Our names start with a fixed-width timestamp, so name order is arrival order.
            keys = sorted(maildir.keys()) if maildir is not None else []
        return [functools.partial(maildir.get_file, key) for key in keys]  # type: ignore[union-attr]

    def delete_sent(self, user: str) -> int:
        """Delete the messages user sent; return how many this call deleted."""
        with self._lock_of(user):
            maildir = self._existing_sent(user)
            if maildir is None:
                return 0
            deleted = 0
            for key in list(maildir.keys()):  # a snapshot: we remove as we go
                with contextlib.suppress(KeyError, FileNotFoundError):
                    maildir.remove(key)
                    deleted += 1
            if deleted:
                path = self._user_path(user) / SENT
                fsync_directory(path / "new")
                fsync_directory(path / "cur")
            return deleted

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
        try:
            messages = [
                InboxMessage(path.name.split(":", 1)[0], path, wire_size(path))
                for path in sorted(maildir_files(inbox), key=lambda path: path.name)  # arrival order, as RETR's
            ]
        except BaseException:
            self._release_maildrop(user)
            raise
        return Maildrop(inbox, messages, functools.partial(self._release_maildrop, user))

    def _release_maildrop(self, user: str) -> None:
        with self._user_locks_lock:
            self._maildrops_in_use.discard(user)

    # -- start-up -------------------------------------------------------------------------

    def clean_temporary_files(self) -> int:
        """Remove what crashed deliveries left in tmp/ (never visible); return the count.

        Only files named as this server names them: Dovecot may be writing its own there.
        """
        removed = 0
        for pattern in ("*/tmp/*", f"*/{SENT}/tmp/*", f"*/{MIGRATING}/tmp/*"):
            for leftover in self.root.glob(pattern):
                if OUR_NAME.match(leftover.name):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                        removed += 1
        return removed

    def migrate_old_layout(self) -> tuple[int, int]:
        """Move the messages of every old-layout mailbox into its .Sent folder; return (mailboxes, messages).

        The old layout kept the messages a user sent directly in <user>/new and cur, and
        had no .Sent. They gather in <user>/migrating-to-Sent by renames, which then
        becomes .Sent in one rename: a crash halfway leaves no .Sent, so the next start
        finishes the move. Run it before serving: a delivery would create .Sent.
        """
        mailboxes = messages = 0
        for user_path in sorted(self.root.iterdir()):
            if not (USERNAME.fullmatch(user_path.name) and user_path.is_dir()) or (user_path / SENT).exists():
                continue
            if any((user_path / part).is_dir() for part in ("new", "cur", MIGRATING)):
                messages += migrate_mailbox(user_path)
                mailboxes += 1
        return mailboxes, messages

    # -- paths ----------------------------------------------------------------------------

    def _user_path(self, user: str) -> Path:
        if not USERNAME.fullmatch(user):
            raise ValueError(f"not a valid username: {user!r}")
        return self.root / user

    def _create(self, user: str) -> Path:
        """Make user's inbox and Sent folder if they are not there yet; return the inbox."""
        path = self._user_path(user)
        if user in self._whole:
            return path  # seen whole once: no stat() per delivery
        if not (path / "cur").is_dir():
            # Idempotent, as the first messages of a user may arrive at once. The Sent folder
            # comes first and the inbox's cur/ last: where cur/ exists, all of it does (and
            # a mailbox with .Sent is never taken for the old layout).
            make_maildir(path / SENT, parents=True)
            make_maildir(path)
            fsync_directory(path)
            fsync_directory(self.root)
        self._whole.add(user)
        return path

    def _existing_sent(self, user: str) -> mailbox.Maildir | None:
        path = self._user_path(user) / SENT
        return mailbox.Maildir(path, factory=None, create=False) if (path / "cur").is_dir() else None

    def _lock_of(self, user: str) -> threading.Lock:
        with self._user_locks_lock:
            return self._user_locks[user]

    def _unique_name(self) -> str:
        """A Maildir name (time.unique.host) whose fixed-width start sorts by arrival."""
        now = time.time_ns()
        seconds, microseconds = divmod(now // 1000, 1_000_000)
        sequence = next(self._sequence)
        return f"{seconds:010d}.M{microseconds:06d}P{self._pid}Q{sequence:09d}.{self._hostname}"


def make_maildir(path: Path, *, parents: bool = False) -> None:
    """Create path/tmp, new and cur (cur last) where missing."""
    path.mkdir(mode=0o700, parents=parents, exist_ok=True)
    for part in MAILDIR_PARTS:
        (path / part).mkdir(mode=0o700, exist_ok=True)


def migrate_mailbox(user_path: Path) -> int:
    """Move an old-layout mailbox's messages into its .Sent folder (see migrate_old_layout); return the count."""
    staging = user_path / MIGRATING
    make_maildir(staging)
    moved = 0
    for part in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError), os.scandir(user_path / part) as entries:
            for entry in entries:
                os.rename(entry.path, staging / part / entry.name)
                moved += 1
        fsync_directory(staging / part)
        if (user_path / part).is_dir():
            fsync_directory(user_path / part)
    os.rename(staging, user_path / SENT)
    make_maildir(user_path)  # the inbox, empty
    fsync_directory(user_path)
    return moved
