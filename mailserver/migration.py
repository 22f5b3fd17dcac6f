"""The move of the old mailbox layout into Maildir++, run once at start-up. Remove after 2027-07-01.

Before .Sent existed (the layout of 2026-11-28), the messages a user sent were kept directly in
mailboxes/<user>/new and cur, where the inbox is now. `migrate_old_layout()` moves them
into <user>/.Sent. By the removal date (the end of the school year in which .Sent came)
every classroom server has started on the new layout at least once; then delete this module, its call in `server.py` and
`tests/test_maildir_layout.py`'s migration tests. Nothing else depends on it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .durable import fsync_directory
from .maildir import MESSAGE_PARTS, make_maildir
from .storage import SENT
from .users import USERNAME

# Where an old-layout mailbox's messages gather before the folder becomes .Sent in one rename;
# no leading dot, so Maildir++ readers never take it for a folder.
MIGRATING = "migrating-to-Sent"


def migrate_old_layout(root: Path) -> tuple[int, int]:
    """Move the messages of every old-layout mailbox under root into its .Sent folder; return (mailboxes, messages).

    The old layout kept the messages a user sent directly in <user>/new and cur, and
    had no .Sent. They gather in <user>/migrating-to-Sent by renames, which then
    becomes .Sent in one rename: a crash halfway leaves no .Sent, so the next start
    finishes the move. Run it before serving: a delivery would create .Sent.
    """
    mailboxes = messages = 0
    for user_path in sorted(Path(root).iterdir()):
        if not (USERNAME.fullmatch(user_path.name) and user_path.is_dir()) or (user_path / SENT).exists():
            continue
        if any((user_path / part).is_dir() for part in (*MESSAGE_PARTS, MIGRATING)):
            messages += migrate_mailbox(user_path)
            mailboxes += 1
    return mailboxes, messages


def migrate_mailbox(user_path: Path) -> int:
    """Move an old-layout mailbox's messages into its .Sent folder (see migrate_old_layout); return the count."""
    staging = user_path / MIGRATING
    make_maildir(staging)
    moved = 0
    for part in MESSAGE_PARTS:
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
