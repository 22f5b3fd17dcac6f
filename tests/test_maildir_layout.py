"""The storage layout: Maildir++ (the inbox, and .Sent), and the move of the old layout at start-up.

Issue 11, section 2: `mailboxes/<user>/` is the inbox, `mailboxes/<user>/.Sent/` the
mail the user sent (what RETR returns and DELE deletes), as Python's `mailbox`, mutt and
Dovecot read it. A mailbox of the earlier layout (messages in `<user>/new|cur`, no `.Sent/`)
moves into `.Sent/` at start-up by renames, a crash halfway finished at the next start.
"""

from __future__ import annotations

import errno
import mailbox
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, RawSession, RunningServer, ServerProcess, deliver, retrieve

from mailserver import migration
from mailserver.migration import migrate_old_layout
from mailserver.storage import MailboxStore

OLD_MESSAGES = {  # what the earlier server stored for alice: the mail she sent
    "new/1700000001.M000001P10Q000000001.host": b"Subject: first\n\none\n",
    "new/1700000002.M000001P10Q000000002.host": b"Subject: second\n\n.two\n",
    "cur/1700000003.M000001P10Q000000003.host:2,S": b"Subject: third, read in mutt\n\nthree\n",
}


def old_layout(root: Path, user: str = "alice", messages: dict[str, bytes] = OLD_MESSAGES) -> Path:
    """A mailbox as the earlier server left it: the Maildir itself held the sent mail."""
    maildir = root / user
    for part in ("tmp", "new", "cur"):
        (maildir / part).mkdir(parents=True, exist_ok=True)
    for name, content in messages.items():
        (maildir / name).write_bytes(content)
    return maildir


def files_of(maildir: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(maildir)): path.read_bytes()
        for part in ("new", "cur")
        for path in (maildir / part).glob("*")
    }


# --------------------------------------------------------------------------- the layout


def test_python_mailbox_reads_the_inbox_and_the_sent_folder(logged_in: RawSession, smtp_server: RunningServer) -> None:
    for recipient, accepted in [
        ("bob@localhost", "250 OK"),
        ("bob@example.org", "250 2.1.5 <bob@example.org>: not a domain of this server, kept in your Sent folder only*"),
    ]:
        logged_in.expect(f"""
            C: MAIL FROM:<alice@mail.test>
            S: 250 OK
            C: RCPT TO:<{recipient}>
            S: {accepted}
            C: DATA
            S: 354 *
            C: Subject: to {recipient}
            C:
            C: hello
            C: .
            S: 250 *
        """)
    inbox = mailbox.Maildir(smtp_server.mailboxes_path / "bob", create=False)
    assert [message["Subject"] for message in inbox] == ["to bob@localhost"]
    assert inbox.list_folders() == ["Sent"]
    sent = mailbox.Maildir(smtp_server.mailboxes_path / "alice", create=False).get_folder("Sent")
    assert sorted(message["Subject"] for message in sent) == ["to bob@example.org", "to bob@localhost"]
    assert sorted(message.get_payload() for message in sent) == ["hello\n", "hello\n"]


def test_a_new_user_gets_both_folders_at_once(tmp_path: Path) -> None:
    store = MailboxStore(tmp_path / "mailboxes")
    deliver(store, "bob", b"x\n", sender="alice")
    for user in ("alice", "bob"):
        maildir = store.root / user
        assert sorted(path.name for path in maildir.iterdir()) == [".Sent", "cur", "new", "tmp"]
        assert sorted(path.name for path in (maildir / ".Sent").iterdir()) == ["cur", "new", "tmp"]


# ------------------------------------------------------------------------ the migration


def test_an_old_layout_mailbox_moves_into_sent_by_renames(tmp_path: Path) -> None:
    root = tmp_path / "mailboxes"
    maildir = old_layout(root)
    inodes = {name: (maildir / name).stat().st_ino for name in OLD_MESSAGES}
    store = MailboxStore(root)
    assert migrate_old_layout(store.root) == (1, 3)
    assert files_of(maildir / ".Sent") == OLD_MESSAGES  # names (and mutt's flags) kept
    assert {name: (maildir / ".Sent" / name).stat().st_ino for name in OLD_MESSAGES} == inodes  # renamed, not copied
    assert files_of(maildir) == {}  # the inbox starts empty
    assert not (maildir / migration.MIGRATING).exists()
    assert len(store.sent_messages("alice")) == 3
    assert migrate_old_layout(store.root) == (0, 0)  # once is enough


def test_mailboxes_of_the_new_layout_are_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "mailboxes"
    store = MailboxStore(root)
    deliver(store, "bob", b"in bob's inbox\n", sender="carol")
    (root / "bob" / ".Sent" / "new").rmdir()  # even a damaged .Sent marks the new layout
    old_layout(root, "alice")
    (root / ".hidden").mkdir()
    (root / "not a user").mkdir()
    (root / "notes.txt").write_text("a teacher's file\n")
    before = {user: files_of(root / user) for user in ("bob", "carol")}
    assert migrate_old_layout(store.root) == (1, 3)
    assert {user: files_of(root / user) for user in ("bob", "carol")} == before
    assert sorted(path.name for path in root.iterdir()) == [
        ".hidden",
        "alice",
        "bob",
        "carol",
        "not a user",
        "notes.txt",
    ]


def test_an_empty_old_layout_mailbox_gets_its_sent_folder(tmp_path: Path) -> None:
    root = tmp_path / "mailboxes"
    maildir = old_layout(root, messages={})
    assert migrate_old_layout(root) == (1, 0)
    assert (maildir / ".Sent" / "cur").is_dir()


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3])
def test_a_crash_halfway_is_finished_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int
) -> None:
    """The process dies after crash_after renames (3: after all messages, before .Sent appears)."""
    root = tmp_path / "mailboxes"
    maildir = old_layout(root)
    old_layout(root, "bob", {"new/1700000009.M000001P10Q000000009.host": b"bob's\n"})
    real_rename, renames = os.rename, [0]

    class Crash(BaseException):
        pass

    def crashing_rename(source: str | Path, target: str | Path) -> None:
        if renames[0] == crash_after:
            raise Crash
        renames[0] += 1
        real_rename(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(migration.os, "rename", crashing_rename)
        with pytest.raises(Crash):
            migrate_old_layout(root)
    assert not (maildir / ".Sent").exists()  # not half a Sent folder: the next start sees the old layout
    # What a reader sees meanwhile: every message is somewhere, none twice.
    assert sorted([*files_of(maildir).values(), *files_of(maildir / migration.MIGRATING).values()]) == sorted(
        OLD_MESSAGES.values()
    )

    assert migrate_old_layout(root) == (2, 3 - crash_after + 1)
    assert files_of(maildir / ".Sent") == OLD_MESSAGES
    assert files_of(root / "bob" / ".Sent") == {"new/1700000009.M000001P10Q000000009.host": b"bob's\n"}
    assert files_of(maildir) == {} and not (maildir / migration.MIGRATING).exists()


def test_a_failed_migration_stops_the_start_with_a_clear_error(tmp_path: Path, shared_users_file: Path) -> None:
    root = tmp_path / "mailboxes"
    maildir = old_layout(root)
    (maildir / migration.MIGRATING).write_text("a file where the folder should go\n")
    ports = ["--port", "0", "--pop3-port", "0"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *ports, "--users", str(shared_users_file), "--mailboxes", str(root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and migration.MIGRATING in result.stderr
    assert "Traceback" not in result.stderr
    assert files_of(maildir) == OLD_MESSAGES  # nothing moved, nothing lost


def test_the_server_migrates_at_start_up_logs_the_count_and_retr_reads_sent(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    root = tmp_path / "mailboxes"
    old_layout(root)
    (root / "alice" / "tmp" / "1700000004.M000001P10Q000000004.host").write_bytes(b"torn")  # a crash's leftover
    process = server_process(mailboxes=root)
    assert "moved 3 sent messages of 1 mailboxes of the old layout into their .Sent folders" in process.log
    assert retrieve("127.0.0.1", process.port, "alice") == [
        ["Subject: first", "", "one"],
        ["Subject: second", "", ".two"],
        ["Subject: third, read in mutt", "", "three"],
    ]
    assert not list((root / "alice" / "tmp").iterdir())


def test_a_migrated_mailbox_is_not_migrated_again(tmp_path: Path, server_process: Callable[..., ServerProcess]) -> None:
    root = tmp_path / "mailboxes"
    old_layout(root)
    server_process(mailboxes=root).stop()
    deliver(MailboxStore(root), "alice", b"for alice's inbox\n", sender="bob")
    process = server_process(mailboxes=root)
    assert "old layout" not in process.log
    assert len(retrieve("127.0.0.1", process.port, "alice")) == 3
    assert list(files_of(root / "alice").values()) == [b"for alice's inbox\n"]


def test_a_rename_that_fails_stops_the_migration_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename that fails (a read-only disk, say) raises: the server does not start half-migrated."""
    root = tmp_path / "mailboxes"
    maildir = old_layout(root)

    def read_only(source: str | Path, target: str | Path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(migration.os, "rename", read_only)
    with pytest.raises(OSError, match="Read-only"):
        migrate_old_layout(root)
    assert files_of(maildir) == OLD_MESSAGES


def test_the_migration_fsyncs_the_mailbox_after_the_rename_to_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: without the fsync of <user>/, a crash could undo the rename that made .Sent (a mutation survived)."""
    user_path = old_layout(tmp_path / "mailboxes")
    events: list[tuple[str, ...]] = []
    real_rename, real_fsync_directory = os.rename, migration.fsync_directory

    def rename(source: object, target: object) -> None:
        real_rename(source, target)  # type: ignore[arg-type]
        events.append(("rename", str(source), str(target)))

    def fsync_directory(path: Path) -> None:
        real_fsync_directory(path)
        events.append(("fsync", str(path)))

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(migration, "fsync_directory", fsync_directory)
    assert migrate_old_layout(tmp_path / "mailboxes") == (1, 3)
    renamed = events.index(("rename", str(user_path / migration.MIGRATING), str(user_path / ".Sent")))
    assert ("fsync", str(user_path)) in events[renamed + 1 :]
