"""The POP3 maildrop without sockets: a snapshot of the inbox, deletion marks, and only commit() removes.

RFC 1939 5 and 6: messages are numbered from 1 at login; DELE marks, RSET unmarks, and
the UPDATE state (QUIT) removes the marked ones. One session per inbox at a time ([IN-USE]).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import deliver, store_message

from mailserver import maildir, maildrop
from mailserver.storage import AlreadyDeleted, InboxMessage, MailboxStore, MaildropInUse, MessageGone, NoSuchMessage

FIRST = b"Subject: one\n\nfirst\n"
SECOND = b"Subject: two\n\nsecond\n.dot\n"
THIRD = b"Subject: three\n\nthird\n"


@pytest.fixture
def store(tmp_path: Path) -> MailboxStore:
    store = MailboxStore(tmp_path / "mailboxes")
    for message in (FIRST, SECOND, THIRD):
        deliver(store, "bob", message)
    return store


def wire(message: bytes) -> bytes:
    return message.replace(b"\n", b"\r\n")


def test_the_snapshot_numbers_messages_from_1_in_arrival_order(store: MailboxStore) -> None:
    with store.open_maildrop("bob") as drop:
        assert [message.number for message in drop.list()] == [1, 2, 3]
        contents = []
        for number in (1, 2, 3):
            with drop.open(number) as message:
                contents.append(message.read())
        assert contents == [FIRST, SECOND, THIRD]


def test_sizes_are_octets_with_crlf_line_ends(store: MailboxStore) -> None:
    """RFC 1939 5: LIST and STAT count the message as RETR sends it (before byte-stuffing)."""
    with store.open_maildrop("bob") as drop:
        assert [message.size for message in drop.list()] == [len(wire(m)) for m in (FIRST, SECOND, THIRD)]
        assert (drop.count(), drop.size()) == (3, sum(len(wire(m)) for m in (FIRST, SECOND, THIRD)))


def test_size_without_the_maildir_size_field_is_counted(store: MailboxStore) -> None:
    """A message another program put in the inbox has no W= in its name: its size is counted from the file."""
    (store.root / "bob" / "new" / "1700000000.M1P1.elsewhere").write_bytes(b"a\nb\n")
    with store.open_maildrop("bob") as drop:
        assert drop.list()[0].key == "1700000000.M1P1.elsewhere"
        assert drop.list()[0].size == len(b"a\r\nb\r\n")


def test_unique_ids_are_the_maildir_names_and_stay_the_same(store: MailboxStore) -> None:
    with store.open_maildrop("bob") as drop:
        first = [message.unique_id for message in drop.list()]
    with store.open_maildrop("bob") as drop:
        assert [message.unique_id for message in drop.list()] == first
    names = sorted(path.name for path in (store.root / "bob" / "new").iterdir())
    assert first == [name.split(",")[0] for name in names]
    assert len(set(first)) == 3
    assert all(0 < len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid) for uid in first)


@pytest.mark.parametrize("key", ["n" * 71 + ",S=1,W=2", "caf\u00e9.M1P1.host", "x y"])
def test_a_unique_id_that_would_not_fit_rfc_1939_is_a_digest(key: str) -> None:
    uid = InboxMessage(1, key, 0).unique_id
    assert len(uid) == 40 and uid.isalnum()
    assert uid != InboxMessage(1, key + "x", 0).unique_id


def test_the_inbox_and_the_sent_folder_are_apart(store: MailboxStore) -> None:
    store_message(store, "bob", b"bob sent this\n")
    with store.open_maildrop("bob") as drop:
        assert drop.count() == 3
    assert len(store.sent_messages("bob")) == 1


def test_a_user_without_a_mailbox_has_an_empty_maildrop(store: MailboxStore) -> None:
    with store.open_maildrop("dave") as drop:
        assert drop.list() == [] and (drop.count(), drop.size()) == (0, 0)
    assert not (store.root / "dave").exists()  # looking creates nothing


def test_mail_delivered_during_a_session_waits_for_the_next(store: MailboxStore) -> None:
    with store.open_maildrop("bob") as drop:
        deliver(store, "bob", b"late\n")
        assert drop.count() == 3
    with store.open_maildrop("bob") as drop:
        assert drop.count() == 4


def test_dele_marks_rset_unmarks_and_marked_messages_are_hidden(store: MailboxStore) -> None:
    with store.open_maildrop("bob") as drop:
        drop.mark(2)
        assert [message.number for message in drop.list()] == [1, 3]
        assert (drop.count(), drop.size()) == (2, len(wire(FIRST)) + len(wire(THIRD)))
        with pytest.raises(AlreadyDeleted):
            drop.info(2)
        with pytest.raises(AlreadyDeleted):
            drop.mark(2)
        drop.unmark()
        assert [message.number for message in drop.list()] == [1, 2, 3]


@pytest.mark.parametrize("number", [0, 4, -1, 10**12])
def test_numbers_outside_the_maildrop_are_refused(store: MailboxStore, number: int) -> None:
    with store.open_maildrop("bob") as drop:
        with pytest.raises(NoSuchMessage) as missing:
            drop.info(number)
        assert missing.value.count == 3  # what the -ERR says the inbox has
        with pytest.raises(NoSuchMessage):
            drop.open(number)


def test_only_commit_removes_and_only_the_marked(store: MailboxStore) -> None:
    with store.open_maildrop("bob") as drop:
        drop.mark(1)
        drop.mark(3)
        assert len(list((store.root / "bob" / "new").iterdir())) == 3  # marked is not removed
        assert drop.commit() == (2, 1)
    with store.open_maildrop("bob") as drop:
        assert drop.count() == 1
        with drop.open(1) as message:
            assert message.read() == SECOND


def test_closing_without_commit_removes_nothing(store: MailboxStore) -> None:
    drop = store.open_maildrop("bob")
    drop.mark(1)
    drop.mark(2)
    drop.close()
    drop.close()  # twice is harmless
    with store.open_maildrop("bob") as again:
        assert again.count() == 3


def test_commit_is_durable_before_it_returns(store: MailboxStore, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_unlink, real_fsync_directory = os.unlink, maildrop.fsync_directory
    monkeypatch.setattr(os, "unlink", lambda path: (events.append("unlink"), real_unlink(path)))
    monkeypatch.setattr(
        maildrop,
        "fsync_directory",
        lambda path: (events.append(f"fsync {Path(path).name}"), real_fsync_directory(path)),
    )
    with store.open_maildrop("bob") as drop:
        drop.mark(1)
        drop.commit()
        events.append("returned")
    assert events == ["unlink", "fsync new", "fsync cur", "returned"]


def test_one_session_per_inbox(store: MailboxStore) -> None:
    first = store.open_maildrop("bob")
    with pytest.raises(MaildropInUse):
        store.open_maildrop("bob")
    with store.open_maildrop("alice"):  # another user's inbox is free
        pass
    deliver(store, "bob", b"delivery goes on\n")  # SMTP delivery is not locked out
    first.close()
    with store.open_maildrop("bob") as second:
        assert second.count() == 4


def test_a_message_a_maildir_reader_moved_is_still_found(store: MailboxStore) -> None:
    """mutt marks a message read by moving it from new/ to cur/ with flags: RETR and DELE still find it."""
    with store.open_maildrop("bob") as drop:
        [path] = [path for path in (store.root / "bob" / "new").iterdir() if path.name.startswith(drop.info(1).key)]
        path.rename(store.root / "bob" / "cur" / f"{path.name}:2,S")
        with drop.open(1) as message:
            assert message.read() == FIRST
        drop.mark(1)
        assert drop.commit() == (1, 2)
    assert list((store.root / "bob" / "cur").iterdir()) == []


def test_a_message_another_program_removed_is_skipped(store: MailboxStore) -> None:
    with store.open_maildrop("bob") as drop:
        [path] = [path for path in (store.root / "bob" / "new").iterdir() if path.name.startswith(drop.info(2).key)]
        path.unlink()
        with pytest.raises(MessageGone):
            drop.open(2)
        drop.mark(2)
        drop.mark(3)
        assert drop.commit() == (1, 2)  # the third; the second was gone already (and counts as left, as before)
    with store.open_maildrop("bob") as drop:
        assert drop.count() == 1


def test_messages_a_reader_moved_are_found_with_one_rescan(
    store: MailboxStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The maildrop keeps an index of names: the first message not where it was rescans the folder once,
    and the index then knows where every moved message went (not a rescan per message)."""
    scans = []
    real_entries = maildir.message_entries
    monkeypatch.setattr(maildir, "message_entries", lambda path: (scans.append(path), real_entries(path))[1])
    with store.open_maildrop("bob") as drop:
        assert len(scans) == 1  # the snapshot
        for path in (store.root / "bob" / "new").iterdir():  # mutt marks all three read
            path.rename(store.root / "bob" / "cur" / f"{path.name}:2,S")
        contents = []
        for number in (1, 2, 3):
            with drop.open(number) as message:
                contents.append(message.read())
        assert contents == [FIRST, SECOND, THIRD]
        assert len(scans) == 2
