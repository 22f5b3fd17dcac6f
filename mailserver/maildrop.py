"""What a session holds of stored mail: an open message, the POP3 maildrop, and storage's errors.

`storage.MailboxStore` hands these out and `storage` lists them in its interface, so a session
imports them from `storage` (tests/test_layering.py checks); they live here to keep each module
one job:

    StoredMessage  one message open for reading: chunks(), head() for TOP, read(), size
    Maildrop       an inbox as one POP3 session sees it (RFC 1939 5): numbers from 1, marks, commit()
    errors         MaildropInUse, NoSuchMessage, AlreadyDeleted, MessageGone
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from .durable import CHUNK, fsync_directory
from .maildir import MESSAGE_PARTS, Folder

MAX_UNIQUE_ID = 70  # RFC 1939 7: a UIDL is 1 to 70 characters from 0x21 to 0x7E


class MaildropInUse(Exception):
    """Another POP3 session holds this inbox (RFC 2449 8.1.2: [IN-USE])."""


class NoSuchMessage(LookupError):
    """The number names no message of the maildrop; count is how many it has."""

    def __init__(self, number: int, count: int) -> None:
        super().__init__(number)
        self.count = count


class AlreadyDeleted(LookupError):
    """The message is marked deleted in this session."""


class MessageGone(LookupError):
    """The message was there, but another program (or a DELE) removed it since."""


class StoredMessage:
    """One stored message open for reading, as on disk (LF line ends).

    size: its octets on the wire, where the session needs them (POP3's RETR); else 0.
    """

    def __init__(self, file: BinaryIO, size: int = 0) -> None:
        self._file = file
        self.size = size

    def chunks(self) -> Iterator[bytes]:
        """The message, a bounded piece at a time."""
        return iter(functools.partial(self._file.read, CHUNK), b"")

    def head(self, body_lines: int) -> Iterator[bytes]:
        """The header, the empty line after it and the first body_lines lines of the body (POP3's TOP, RFC 1939 7).

        Read a line at a time, a line longer than a chunk in pieces, so that one huge line
        costs no more memory than chunks() does.
        """
        in_header, at_line_start = True, True
        for piece in iter(functools.partial(self._file.readline, CHUNK), b""):
            if not in_header and at_line_start:
                if not body_lines:
                    return
                body_lines -= 1
            yield piece
            if in_header and at_line_start and piece in (b"\n", b"\r\n"):
                in_header = False
            at_line_start = piece.endswith(b"\n")

    def read(self) -> bytes:
        """The whole message (for tests and small tools: a session sends chunks())."""
        return self._file.read()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StoredMessage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class InboxMessage:
    """One message of a maildrop snapshot, as LIST and UIDL tell it."""

    number: int  # from 1, in arrival order (RFC 1939 5)
    key: str  # its Maildir name without the flags after ":", which a reader like mutt may change
    size: int  # octets as POP3 sends it, CRLF line ends, before dot-stuffing (RFC 1939 5: LIST, STAT)

    @property
    def unique_id(self) -> str:
        """The UIDL: the Maildir unique name (before the Maildir++ size fields), or a digest if it does not fit."""
        unique = self.key.split(",", 1)[0]
        if 0 < len(unique) <= MAX_UNIQUE_ID and all(0x21 <= ord(c) <= 0x7E for c in unique):
            return unique
        return hashlib.sha1(self.key.encode("utf-8", "surrogateescape")).hexdigest()


class Committed(NamedTuple):
    """What QUIT's commit did: messages removed, and messages left of the snapshot."""

    removed: int
    left: int


class Maildrop:
    """A user's inbox as one POP3 session sees it (RFC 1939 5): the messages at login, numbered
    from 1, and the numbers marked deleted.

    Messages delivered meanwhile wait for the next session. Only commit() removes anything
    (QUIT's UPDATE state); close() gives the inbox back to other sessions.
    """

    def __init__(self, folder: Folder, release: Callable[[], None]) -> None:
        self._folder = folder
        keys = folder.arrival_order()  # arrival order, as RETR's
        self._messages = [InboxMessage(number, key, folder.wire_size(key)) for number, key in enumerate(keys, start=1)]
        self._marked: set[int] = set()
        self._release: Callable[[], None] | None = release

    def info(self, number: int) -> InboxMessage:
        """Return message number (from 1); raise NoSuchMessage or AlreadyDeleted."""
        if number in self._marked:
            raise AlreadyDeleted(number)
        if not 1 <= number <= len(self._messages):
            raise NoSuchMessage(number, len(self._messages))
        return self._messages[number - 1]

    def list(self) -> list[InboxMessage]:
        """The messages not marked deleted."""
        return [message for message in self._messages if message.number not in self._marked]

    def count(self) -> int:
        """How many messages are not marked deleted (STAT)."""
        return len(self._messages) - len(self._marked)

    def size(self) -> int:
        """The octets of the messages not marked deleted, as sent (STAT)."""
        return sum(message.size for message in self.list())

    def open(self, number: int) -> StoredMessage:
        """Open message number for reading; raise as info() does, or MessageGone if another program removed it."""
        message = self.info(number)
        try:
            return StoredMessage(self._folder.open(message.key), message.size)
        except FileNotFoundError:
            raise MessageGone(number) from None

    def mark(self, number: int) -> None:
        """Mark message number deleted (DELE); raise as info() does."""
        self.info(number)
        self._marked.add(number)

    def unmark(self) -> None:
        """Unmark every message (RSET)."""
        self._marked.clear()

    def commit(self) -> Committed:
        """Remove the marked messages durably (directory fsync); say how many went and how many are left."""
        removed = sum(self._folder.remove(self._messages[number - 1].key) for number in sorted(self._marked))
        if self._marked:
            for part in MESSAGE_PARTS:
                fsync_directory(self._folder.path / part)
        self._marked.clear()
        return Committed(removed, len(self._messages) - removed)

    def close(self) -> None:
        """Give the inbox back; nothing is removed. Safe to call twice."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Maildrop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
