"""The inbox quota's bookkeeping: each inbox's size, kept, and the room held for messages on their way.

`InboxSizes` is one per `MailboxStore`. An inbox's size is counted again only when its new/
or cur/ changed (`maildir.folder_stamp`), so RCPT costs the same for an inbox of 30 000
files, even files without the S= field, as for an empty one (issue 18, item 10). RCPT holds
room in the inbox until its message is stored or dropped (`reserve()`), so that however many
sessions race, at most one message takes an inbox past --max-mailbox-size (item 2).
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from .maildir import Folder, folder_stamp


class InboxSizes:
    """The octets in each inbox, and the room held in it; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the tables
        self._inbox_locks: defaultdict[str, threading.Lock] = defaultdict(
            threading.Lock
        )  # a reservation's look and hold
        self._sizes: dict[str, tuple[tuple[int, ...] | None, int]] = {}  # user: (folder_stamp, octets)
        self._reserved: defaultdict[str, int] = defaultdict(int)  # user: octets held by messages on their way

    def size(self, user: str, inbox: Path) -> int:
        """The octets in user's inbox (as on disk), counted again only if the folder changed since."""
        stamp = folder_stamp(inbox)  # before counting: a change meanwhile makes the next call count again
        with self._lock:
            known = self._sizes.get(user)
        if stamp is not None and known is not None and known[0] == stamp:
            return known[1]
        size = Folder(inbox).stored_size()
        with self._lock:
            self._sizes[user] = (stamp, size)
        return size

    def reserve(self, user: str, inbox: Path, quota: int, most: int, declared: int = 0) -> Callable[[], None] | None:
        """Hold room in user's inbox for a message on its way (RCPT until its DATA ends): the least
        of most and the room left; None if the inbox, with the room held for others, is at quota.

        Call what it returns once (weakref.finalize does), when the message is stored or dropped.
        However many sessions race, every message but the one given the last of the room fits in
        the room it holds, so at most one message takes an inbox past the quota.
        """
        with self._lock:
            inbox_lock = self._inbox_locks[user]
        with inbox_lock:  # the size and the room held are read, and the room taken, as one step
            used = self.size(user, inbox)
            if used + declared > quota:  # MAIL's SIZE= does not fit (RFC 1870)
                return None
            with self._lock:
                room = quota - used - self._reserved[user]
                if room <= 0:
                    return None
                held = min(most, room)
                self._reserved[user] += held
        return functools.partial(self._release, user, held)

    def _release(self, user: str, held: int) -> None:
        with self._lock:
            self._reserved[user] -= held
