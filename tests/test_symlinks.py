"""Never follow a symlink inside a mailbox (issue 18, item 3).

mailboxes/ may hold a folder restored from a student's archive, or be shared with other
programs. A symlink there may lead outside mailboxes/ or into another user's mailbox; the
server reads, lists, sizes, cleans, migrates and delivers through none of them. Each is
skipped (and logged), as anything that is no regular file or directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import POP3Session, RawSession, RunningServer, deliver

from mailserver.migration import migrate_old_layout
from mailserver.storage import SENT, MailboxStore

SECRET = b"Subject: outside\n\nthe teacher's answers\n"
OURS = "1764366000.M000001P42Q000000001.host"  # a name as the server gives them


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside mailboxes/, with a message-like file in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "answers").write_bytes(SECRET)
    return folder


def maildir(path: Path) -> Path:
    for part in ("tmp", "new", "cur"):
        (path / part).mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ reading and listing (POP3)


@pytest.mark.parametrize("target", ["outside", "alice's message"])
def test_a_symlinked_message_is_not_served(
    pop3_server: RunningServer,
    pop3: POP3Session,
    outside: Path,
    target: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = pop3_server.server.mailboxes
    deliver(store, "alice", b"Subject: for alice only\n\nprivate\n")
    deliver(store, "bob", b"Subject: for bob\n\nhi\n")
    [alices] = (pop3_server.mailboxes_path / "alice" / "new").iterdir()
    link = pop3_server.mailboxes_path / "bob" / "new" / "0000000001.M1P1Q1.evil"  # sorts first
    link.symlink_to(outside / "answers" if target == "outside" else alices)
    with caplog.at_level(logging.WARNING, logger="mailserver"):
        pop3.login("bob")
        assert pop3.status("STAT") == "+OK 1 24"  # bob's own message only
        assert pop3.retr(1) == b"Subject: for bob\r\n\r\nhi\r\n"
        assert pop3.status("RETR 2").startswith("-ERR No such message")
    assert f"skipped {link}: not a regular file" in caplog.text


def test_a_symlinked_new_folder_is_not_listed(tmp_path: Path, outside: Path) -> None:
    store = MailboxStore(tmp_path / "mailboxes")
    deliver(store, "bob", b"Subject: for bob\n\nhi\n")
    new = store.root / "bob" / "new"
    for message in new.iterdir():
        message.unlink()
    new.rmdir()
    new.symlink_to(outside)
    with store.open_maildrop("bob") as drop:
        assert drop.count() == 0
    assert store.inbox_size("bob") == 0  # nor sized


def test_a_message_swapped_for_a_symlink_after_login_is_not_read(
    pop3_server: RunningServer, pop3: POP3Session, outside: Path
) -> None:
    deliver(pop3_server.server.mailboxes, "bob", b"Subject: for bob\n\nhi\n")
    pop3.login("bob")
    [message] = (pop3_server.mailboxes_path / "bob" / "new").iterdir()
    message.unlink()
    message.symlink_to(outside / "answers")  # the same name, between LIST and RETR
    status = pop3.status("RETR 1")
    assert status.startswith("-ERR [SYS/TEMP]"), status  # and no block of the outside file follows
    assert pop3.status("NOOP") == "+OK"


def test_a_symlinked_sent_message_is_not_sent_back_by_retr(
    smtp_server: RunningServer, logged_in: RawSession, outside: Path
) -> None:
    assert logged_in.send_message(b"Subject: mine\r\n\r\nx\r\n")[0] == 250
    (smtp_server.mailboxes_path / "alice" / SENT / "cur" / "0000000001.M1P1Q1.evil").symlink_to(outside / "answers")
    assert logged_in.retr() == [b"Subject: mine\r\n\r\nx\r\n"]
    assert logged_in.command("DELE") == (250, ["1 message deleted"])
    assert (outside / "answers").read_bytes() == SECRET


# ------------------------------------------------------------------ sizing


def test_a_symlink_to_a_big_file_does_not_count_toward_the_quota(tmp_path: Path, outside: Path) -> None:
    store = MailboxStore(tmp_path / "mailboxes")
    deliver(store, "bob", b"Subject: for bob\n\nhi\n")
    (outside / "big").write_bytes(b"x" * 1_000_000)
    (store.root / "bob" / "cur" / "0000000001.M1P1Q1.big").symlink_to(outside / "big")
    assert store.inbox_size("bob") < 1000


# ------------------------------------------------------------------ cleaning tmp/ at start-up


def test_the_tmp_clean_up_follows_no_symlinked_tmp(tmp_path: Path, outside: Path) -> None:
    store = MailboxStore(tmp_path / "mailboxes")
    (outside / OURS).write_bytes(b"not the server's to delete")
    erin = maildir(store.root / "erin")
    (erin / "tmp").rmdir()
    (erin / "tmp").symlink_to(outside)
    maildir(erin / SENT)
    (erin / SENT / "tmp" / OURS).write_bytes(b"a crashed delivery")
    assert store.clean_temporary_files() == 1
    assert (outside / OURS).exists()
    assert not (erin / SENT / "tmp" / OURS).exists()


def test_the_tmp_clean_up_follows_no_symlinked_mailbox_nor_file(tmp_path: Path, outside: Path) -> None:
    store = MailboxStore(tmp_path / "mailboxes")
    maildir(outside / "box")
    (outside / "box" / "tmp" / OURS).write_bytes(b"not the server's to delete")
    (store.root / "frank").symlink_to(outside / "box")
    gina = maildir(store.root / "gina")
    (gina / "tmp" / OURS).symlink_to(outside / "answers")
    assert store.clean_temporary_files() == 0
    assert (outside / "box" / "tmp" / OURS).exists()
    assert (outside / "answers").read_bytes() == SECRET


# ------------------------------------------------------------------ the old layout's migration


def test_the_migration_moves_nothing_through_a_symlinked_folder(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "mailboxes"
    eve = maildir(root / "eve")
    (eve / "new").rmdir()
    (eve / "new").symlink_to(outside)  # an old-layout mailbox whose new/ leads outside
    (eve / "cur" / "1.M1P1Q1.host").write_bytes(b"Subject: eve's own\n\nx\n")
    (eve / "cur" / "2.M1P1Q2.host").symlink_to(outside / "answers")
    assert migrate_old_layout(root) == (1, 1)
    assert (outside / "answers").read_bytes() == SECRET
    sent = MailboxStore(root).sent_messages("eve")
    assert [open_message().read() for open_message in sent] == [b"Subject: eve's own\n\nx\n"]


# ------------------------------------------------------------------ delivering


@pytest.mark.parametrize("where", ["new", f"{SENT}/new", "mailbox"])
def test_no_delivery_goes_through_a_symlinked_folder(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], tmp_path: Path, where: str
) -> None:
    server = start_server()
    bob = server.mailboxes_path / "bob"
    target = maildir(tmp_path / "elsewhere")
    if where == "mailbox":
        bob.symlink_to(target)
    else:
        maildir(bob)
        maildir(bob / SENT)
        (bob / where).rmdir()
        (bob / where).symlink_to(target / "new")
    session = connect(server)
    sends_as_bob = where == f"{SENT}/new"  # into bob's Sent; else alice's message into bob's inbox
    session.login("bob" if sends_as_bob else "alice")
    assert session.command(f"MAIL FROM:<{'bob' if sends_as_bob else 'alice'}@mail.test>")[0] == 250
    refusal = (451, ["Requested action aborted: local error in processing"])
    rcpt = session.command(f"RCPT TO:<{'carol@example.org' if sends_as_bob else 'bob@localhost'}>")
    if where == "mailbox":
        assert rcpt == refusal  # its size is not even looked at
    else:
        assert rcpt[0] == 250
        assert session.command("DATA") == refusal
    assert list(os.scandir(target / "new")) == []
