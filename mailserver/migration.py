"""The move of the old mailbox layout into Maildir++, run once at start-up. Remove after 2027-07-01.

Before .Sent existed (the layout of 2026-11-28), the messages a user sent were kept directly in
mailboxes/<user>/new and cur, where the inbox is now. `migrate_old_layout()` moves them
into <user>/.Sent. By the removal date (the end of the school year in which .Sent came)
every classroom server has started on the new layout at least once; then delete this module, its call in `server.py` and
`tests/test_maildir_layout.py`'s migration tests. Nothing else depends on it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .durable import fsync_directory
from .maildir import MESSAGE_PARTS, make_maildir, real_directory, skipped
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
        if not (USERNAME.fullmatch(user_path.name) and real_directory(user_path)) or os.path.lexists(user_path / SENT):
            continue
        if any(real_directory(user_path / part) for part in (*MESSAGE_PARTS, MIGRATING)):
            messages += migrate_mailbox(user_path)
            mailboxes += 1
    return mailboxes, messages


def move_messages(source: Path, target: Path) -> int:
    """Rename the regular files of the folder source into target; return how many.

    Nothing is followed: a symlinked folder, or a symlink in place of a message (it may lead
    outside mailboxes/, or to another user's message), is skipped and logged, and stays where it is.
    """
    if not real_directory(source):
        if os.path.lexists(source):
            skipped(source, "not a directory")
        return 0
    moved = 0
    with os.scandir(source) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                skipped(entry.path, "not a regular file")
                continue
            os.rename(entry.path, target / entry.name)
            moved += 1
    return moved


def migrate_mailbox(user_path: Path) -> int:
    """Move an old-layout mailbox's messages into its .Sent folder (see migrate_old_layout); return the count."""
    staging = user_path / MIGRATING
    if os.path.islink(staging):
        skipped(staging, "a symlink")
        raise OSError(errno.ELOOP, "the migration's folder is a symlink", str(staging))
    make_maildir(staging)
    moved = 0
    for part in MESSAGE_PARTS:
        moved += move_messages(user_path / part, staging / part)
        fsync_directory(staging / part)
        if real_directory(user_path / part):
            fsync_directory(user_path / part)
    os.rename(staging, user_path / SENT)
    make_maildir(user_path)  # the inbox, empty
    fsync_directory(user_path)
    return moved
