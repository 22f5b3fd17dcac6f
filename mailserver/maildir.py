"""The Maildir format as this server writes and reads it: names, sizes, line ends, one folder's index.

The rule of this module, and of no other: **stored with LF, sent with CRLF, sizes in the
name.** A message is stored as Maildir readers expect it, with LF line ends; on the wire
(DATA, RETR, POP3) every line ends in CRLF. `stored_form()`, `wire_form()` and
`wire_size()` convert between the two; `data.py` uses them both ways.

A name is `time.unique.host` (see `MailboxStore`), and an inbox copy adds the Maildir++ size
fields Dovecot reads: `,S=<octets on disk>,W=<octets with CRLF ends>`, so that a size is
read from the name, not from the file. A reader (mutt, Dovecot) may later move the file
from new/ to cur/ and append `:2,<flags>`; the part before ":" is the message's key.

- `Folder` is one Maildir folder's messages, indexed by key, rescanned only when a message moved.
- `Delivery` is one message on its way into a Sent folder and inboxes, made durable by `durable.py`;
  `FieldRemover` takes a client's Return-Path out of the inbox copy (RFC 5321 4.4).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from .durable import CHUNK, Draft, fsync_directory, link_or_copy

log = logging.getLogger("mailserver")

MAILDIR_PARTS = ("tmp", "new", "cur")
MESSAGE_PARTS = ("new", "cur")  # where a folder's messages are; tmp/ holds files still being written
SIZE_FIELD = re.compile(r",S=(\d+)")  # Maildir++: octets on disk
WIRE_SIZE_FIELD = re.compile(r",W=(\d+)")  # Maildir++: octets with CRLF line ends (what POP3 sends)
RACY_NS = 2_000_000_000  # a folder changed this recently is counted again: FAT's mtime ticks every 2 s

T = TypeVar("T")


# ------------------------------------------------------------------ line ends and sizes


def stored_form(wire: bytes) -> bytes:
    """Whole lines as they came on the wire (CRLF ends, a bare LF taken as one), as stored: LF ends."""
    return wire.replace(b"\r\n", b"\n")


def wire_form(stored: bytes) -> bytes:
    """Stored text as it goes on the wire: CRLF ends. A CRLF in the file (another program's: Dovecot's
    mail_save_crlf, a teacher's copy) stays one CRLF; only a bare LF gains its CR."""
    return stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def wire_size(stored: bytes) -> int:
    """The octets stored text takes on the wire: one more per bare LF (a CRLF stays as it is)."""
    return len(stored) + stored.count(b"\n") - stored.count(b"\r\n")


def whole_line_ends(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The pieces of a stored message again, cut so that no piece ends between a CR and its LF:
    wire_form() and wire_size() then read each CRLF whole."""
    held = b""
    for piece in pieces:
        piece, held = held + piece, b""
        if piece.endswith(b"\r"):
            piece, held = piece[:-1], b"\r"
        if piece:
            yield piece
    if held:
        yield held


# ------------------------------------------------------------------ no symlinks


def real_directory(path: Path) -> bool:
    """True if path is a directory itself, not a symlink to one (lstat: nothing is followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def skipped(path: Path | str, what: str) -> None:
    """Log a file or folder left alone because it is no regular file or directory (a symlink, say)."""
    log.warning("skipped %s: %s, not followed (a mailbox holds only regular files and directories)", path, what)


def open_no_follow(path: Path | str) -> BinaryIO:
    """Open a stored message for reading; a symlink in its place raises FileNotFoundError, after a log line."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        skipped(path, "a symlink")
        raise FileNotFoundError(errno.ENOENT, "a symlink, not a message", str(path)) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a FIFO or a device: no message either
        os.close(descriptor)
        skipped(path, "not a regular file")
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    return open(descriptor, "rb")


def key_of(name: str) -> str:
    """A message's key: its file name without the flags a reader may append after ":"."""
    return name.split(":", 1)[0]


def sized_name(unique: str, size: int, on_wire: int) -> str:
    """The name of an inbox copy: the unique name and the Maildir++ size fields, as Dovecot reads them."""
    return f"{unique},S={size},W={on_wire}"


def stored_size(entry: os.DirEntry[str]) -> int:
    """The octets of a message on disk: from the name's S= field, else its stat(); 0 if it went meanwhile."""
    field = SIZE_FIELD.search(key_of(entry.name))  # read from the name: no stat() per message
    if field is not None:
        return int(field[1])
    try:
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:  # a POP3 QUIT may remove it meanwhile
        return 0


def make_maildir(path: Path, *, parents: bool = False) -> None:
    """Create path/tmp, new and cur (cur last) where missing."""
    path.mkdir(mode=0o700, parents=parents, exist_ok=True)
    for part in MAILDIR_PARTS:
        (path / part).mkdir(mode=0o700, exist_ok=True)


def folder_stamp(maildir: Path) -> tuple[int, ...] | None:
    """What changes whenever a message is added to, moved in or removed from maildir: the inode
    and mtime of new/ and cur/ (lstat). None if one is missing, or changed too recently: a
    filesystem's clock ticks coarsely (ext4 a few ms, FAT 2 s), and a change in the same tick
    as the last one would leave the stamp as it was (git's "racy" index has the same cure)."""
    try:
        stats = [os.lstat(maildir / part) for part in MESSAGE_PARTS]
    except OSError:
        return None
    if time.time_ns() - max(info.st_mtime_ns for info in stats) < RACY_NS:
        return None
    return tuple(number for info in stats for number in (info.st_ino, info.st_mtime_ns))


def message_entries(maildir: Path) -> Iterator[os.DirEntry[str]]:
    """The directory entries of a Maildir's messages (new/ and cur/), in no particular order.

    Only regular files in real directories: a symlink (to a file outside mailboxes/, or to
    another user's message), in place of a message or of new/ or cur/, is skipped and logged.
    """
    for part in MESSAGE_PARTS:
        folder = maildir / part
        if not real_directory(folder):
            if os.path.lexists(folder):
                skipped(folder, "not a directory")
            continue
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_file(follow_symlinks=False):
                    yield entry
                else:
                    skipped(entry.path, "not a regular file")


# ------------------------------------------------------------------ reading a folder


class Folder:
    """One Maildir folder's messages (new/ and cur/), indexed by key.

    The index is read once; a message not where the index says (a reader moved it to
    cur/ or changed its flags) makes one rescan, which finds every message moved so far.
    Like `mailbox.Maildir`'s table of contents, without its unlocked temp-name counter.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._index: dict[str, os.DirEntry[str]] = {}  # key -> where it was at the last scan
        self.rescan()

    def rescan(self) -> None:
        """Read new/ and cur/ again."""
        self._index = {key_of(entry.name): entry for entry in message_entries(self.path)}

    def arrival_order(self) -> list[str]:
        """The keys of the messages, sorted by name: arrival order for the names this server gives."""
        return sorted(self._index)

    def stored_size(self) -> int:
        """The octets of all the folder's messages on disk (what --max-mailbox-size limits)."""
        return sum(stored_size(entry) for entry in self._index.values())

    def wire_size(self, key: str) -> int:
        """The octets of message key with CRLF line ends: from its name's W= field, or by reading it."""
        field = WIRE_SIZE_FIELD.search(key)
        if field is not None:
            return int(field[1])
        with self.open(key) as message:  # a CRLF cut between two chunks is one line end
            return sum(map(wire_size, whole_line_ends(iter(lambda: message.read(CHUNK), b""))))

    def open(self, key: str) -> BinaryIO:
        """Open message key for reading; raise FileNotFoundError if it is gone (or a symlink now),
        even after a rescan.

        The one place a stored message is opened for reading, for the inbox and Sent alike.
        """
        return self._with_moves(key, open_no_follow)

    def remove(self, key: str) -> bool:
        """Remove message key; return False if it was gone already (a rescan could not find it)."""
        try:
            self._with_moves(key, os.unlink)
        except FileNotFoundError:
            return False
        self._index.pop(key, None)
        return True

    def _with_moves(self, key: str, act: Callable[[str], T]) -> T:
        """act on the path of key; if the file is not there, rescan once and act on where it went."""
        entry = self._index.get(key)
        if entry is not None:
            with contextlib.suppress(FileNotFoundError):
                return act(entry.path)
        self.rescan()
        entry = self._index.get(key)
        if entry is None:
            raise FileNotFoundError(f"no message {key} in {self.path}")
        return act(entry.path)


# ------------------------------------------------------------------ the inbox copy's header
# A header field line: a name of printable ASCII but ":" (RFC 5322 2.2), maybe obsolete space before the colon.
FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
MAX_HEADER_PIECE = CHUNK  # a partial header line kept back this long at most; DataReader's are far shorter


class FieldRemover:
    """Drop every header field called name (with its folded lines) from a message that comes in pieces (LF ends).

    RFC 5321 4.4: a server making final delivery MAY remove Return-Path header fields
    before adding its own; the inbox copy's is then the one the server wrote. Only the
    header is looked at: the body passes untouched, a piece at a time.
    """

    def __init__(self, name: bytes) -> None:
        self.name = name.lower()
        self.in_header = True
        self.dropping = False  # inside a dropped field: its folded lines go too
        self.partial = b""  # the start of a header line whose end has not come yet

    def __call__(self, piece: bytes) -> bytes:
        """Return what of piece (and of earlier pieces kept back) goes into the copy."""
        if not self.in_header:
            return piece
        text = self.partial + piece
        end = text.rfind(b"\n") + 1
        self.partial = text[end:]
        kept = []
        for line in text[:end].splitlines(keepends=True):
            if not self.in_header:
                kept.append(line)
                continue
            if line[:1] in (b" ", b"\t"):  # RFC 5322 2.2.3: a folded line belongs to the field above
                if not self.dropping:
                    kept.append(line)
                continue
            field = FIELD_NAME.match(line)
            self.in_header = field is not None  # an empty line, or no field: the body starts
            self.dropping = field is not None and field[1].lower() == self.name
            if not self.dropping:
                kept.append(line)
        if not self.in_header or len(self.partial) > MAX_HEADER_PIECE:
            kept.append(self.partial)  # no header line is that long: let it through as it is
            self.partial, self.in_header = b"", False
        return b"".join(kept)

    def rest(self) -> bytes:
        """What is kept back at the end of the message (a last line without its LF), unless it is dropped."""
        rest, self.partial = self.partial, b""
        if not (self.in_header and rest):
            return rest
        if rest[:1] in (b" ", b"\t"):
            return b"" if self.dropping else rest
        field = FIELD_NAME.match(rest)
        return b"" if field is not None and field[1].lower() == self.name else rest


# ------------------------------------------------------------------ writing a message


class Delivery:
    """One message on its way: a byte-exact copy for the sender's Sent, one inbox copy for all local recipients.

    Methods for the SMTP session: write() adds to both files as the data streams in (the
    message is read once; the inbox copy starts with the trace header), commit() makes
    every copy durable and visible or leaves none visible, abort() throws it away. size is
    the octets the sender sent, as stored.
    """

    def __init__(self, sent: str | Path, inboxes: list[Path], name: str, trace: bytes) -> None:
        self.name = name
        self.size = 0  # octets the sender sent, as stored (LF line ends)
        self._sent_folder = sent
        self._inboxes = inboxes
        # str paths on this path of every message: each pathlib join costs more than the join itself.
        self._sent = Draft(os.path.join(sent, "tmp", name))
        self._inbox: Draft | None = None
        self._inbox_size = len(trace)
        self._inbox_wire_size = wire_size(trace)
        self._inbox_header = FieldRemover(b"Return-Path")  # the trace above holds the one that counts
        if inboxes:
            try:
                self._inbox = Draft(inboxes[0] / "tmp" / name)
                self._inbox.write(trace)
            except BaseException:
                self.abort()
                raise

    def write(self, chunk: bytes) -> None:
        """Add stored text (LF ends) to every copy."""
        self._sent.write(chunk)
        self.size += len(chunk)
        if self._inbox is not None:
            self._write_inbox(self._inbox_header(chunk))

    def _write_inbox(self, piece: bytes) -> None:
        assert self._inbox is not None
        self._inbox.write(piece)
        self._inbox_size += len(piece)
        self._inbox_wire_size += wire_size(piece)

    def commit(self) -> str:
        """Make every copy durable, then visible; return the Sent copy's key.

        Maildir's rule: a message appears in new/ only once it is whole, so a crash
        leaves it whole or absent. The fsyncs make "whole" survive a power cut. If any
        copy fails, the ones already visible are removed again before the error is raised.
        """
        visible: list[str] = []
        try:
            self._sent.finish()
            if self._inbox is not None:
                self._write_inbox(self._inbox_header.rest())
                self._inbox.finish()
            sent_new = os.path.join(self._sent_folder, "new")
            os.rename(self._sent.path, os.path.join(sent_new, self.name))
            visible.append(os.path.join(sent_new, self.name))
            if self._inbox is not None:
                visible += map(os.fspath, self._link_into_inboxes(Path(self._inbox.path)))
                self._inbox.discard()  # the name in tmp/; the links in new/ keep the file
            for folder in dict.fromkeys(map(os.path.dirname, visible)):
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
        name = sized_name(self.name, self._inbox_size, self._inbox_wire_size)
        linked: list[Path] = []
        try:
            for inbox in self._inboxes:
                linked.append(link_or_copy(written, inbox / "new" / name, inbox / "tmp" / name))
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
