"""MailboxStore: each user's Sent folder (RETR, DELE), without sockets; the inbox is in test_local_delivery.py."""

from __future__ import annotations

import errno
import mailbox
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import deliver, store_message, wait_for

from mailserver.durable import fsync_directory
from mailserver.storage import MailboxStore


@pytest.fixture
def store(tmp_path: Path) -> MailboxStore:
    return MailboxStore(tmp_path / "mailboxes")


def sent_folder(store: MailboxStore, user: str) -> Path:
    return store.root / user / ".Sent"


def read_all(store: MailboxStore, user: str) -> list[bytes]:
    contents = []
    for open_message in store.sent_messages(user):
        with open_message() as message:
            contents.append(message.read())
    return contents


def test_root_is_created(tmp_path: Path) -> None:
    MailboxStore(tmp_path / "deep" / "mailboxes")
    assert (tmp_path / "deep" / "mailboxes").is_dir()


def test_deliver_and_read_back(store: MailboxStore) -> None:
    key = store_message(store, "alice", b"Subject: hi\n\nhello\n")
    assert isinstance(key, str) and key
    assert read_all(store, "alice") == [b"Subject: hi\n\nhello\n"]


def test_messages_oldest_first(store: MailboxStore) -> None:
    for number in range(20):  # several within the same clock tick
        store_message(store, "alice", f"message {number}\n".encode())
    assert read_all(store, "alice") == [f"message {n}\n".encode() for n in range(20)]


def test_keys_are_unique(store: MailboxStore) -> None:
    keys = {store_message(store, "alice", b"x\n") for _ in range(30)}
    assert len(keys) == 30


def test_maildir_layout(store: MailboxStore) -> None:
    """Maildir++: the user's folder is the inbox, .Sent the folder of what the user sent."""
    key = store_message(store, "alice", b"one\n")
    assert sorted(p.name for p in (store.root / "alice").iterdir()) == [".Sent", "cur", "new", "tmp"]
    assert all(not any((store.root / "alice" / part).iterdir()) for part in ("cur", "new", "tmp"))
    maildir = sent_folder(store, "alice")
    assert sorted(p.name for p in maildir.iterdir()) == ["cur", "new", "tmp"]
    assert [p.name for p in (maildir / "new").iterdir()] == [key]
    assert list((maildir / "tmp").iterdir()) == []
    assert list((maildir / "cur").iterdir()) == []


def test_readable_by_python_mailbox(store: MailboxStore) -> None:
    keys = [
        store_message(store, "alice", f"Subject: {n}\nTo: bob@example.org\n\nbody {n}\n".encode()) for n in range(3)
    ]
    box = mailbox.Maildir(store.root / "alice", create=False).get_folder("Sent")
    assert sorted(box.keys()) == sorted(keys)
    for number, key in enumerate(keys):
        message = box[key]
        assert message["Subject"] == str(number)
        assert message.get_payload() == f"body {number}\n"
        assert message.get_subdir() == "new"


def test_lf_line_ends_on_disk(store: MailboxStore) -> None:
    store_message(store, "alice", b"Subject: x\n\nline one\nline two\n")
    [path] = (sent_folder(store, "alice") / "new").iterdir()
    assert path.read_bytes() == b"Subject: x\n\nline one\nline two\n"


def test_messages_of_a_user_without_mailbox(store: MailboxStore) -> None:
    assert read_all(store, "nobody") == []
    assert not (store.root / "nobody").exists()  # looking creates nothing


def test_each_user_has_a_mailbox_of_their_own(store: MailboxStore) -> None:
    store_message(store, "alice", b"a\n")
    store_message(store, "bob", b"b\n")
    assert read_all(store, "alice") == [b"a\n"]
    assert read_all(store, "bob") == [b"b\n"]


def test_delete_all(store: MailboxStore) -> None:
    for _ in range(3):
        store_message(store, "alice", b"x\n")
    store_message(store, "bob", b"y\n")
    assert store.delete_sent("alice") == 3
    assert read_all(store, "alice") == []
    assert store.delete_sent("alice") == 0
    assert read_all(store, "bob") == [b"y\n"]


def test_delete_all_without_mailbox(store: MailboxStore) -> None:
    assert store.delete_sent("nobody") == 0


def test_messages_a_reader_moved_to_cur_are_still_listed(store: MailboxStore) -> None:
    """A Maildir reader (mutt) marks mail read by moving it to cur/: it is still the user's mail."""
    store_message(store, "alice", b"first\n")
    store_message(store, "alice", b"second\n")
    maildir = sent_folder(store, "alice")
    first = min(p.name for p in (maildir / "new").iterdir())
    (maildir / "new" / first).rename(maildir / "cur" / f"{first}:2,S")
    assert sorted(read_all(store, "alice")) == [b"first\n", b"second\n"]
    assert store.delete_sent("alice") == 2


@pytest.mark.parametrize("user", ["", ".", "..", "../alice", "a/b", ".hidden", "-dash", "n" * 65, "a b", "/etc"])
def test_bad_usernames_are_refused(store: MailboxStore, tmp_path: Path, user: str) -> None:
    with pytest.raises(ValueError):
        store_message(store, user, b"x\n")
    with pytest.raises(ValueError):
        store.sent_messages(user)
    with pytest.raises(ValueError):
        store.delete_sent(user)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mailboxes"]  # nothing made outside the root
    assert list(store.root.iterdir()) == []


def test_clean_temporary_files(store: MailboxStore) -> None:
    store_message(store, "alice", b"kept\n")
    store_message(store, "bob", b"kept too\n")
    (sent_folder(store, "alice") / "tmp" / "1700000000.M1P1Q1.host").write_bytes(b"half a mess")
    (sent_folder(store, "bob") / "tmp" / "1700000000.M2P1Q2.host").write_bytes(b"")
    (store.root / "bob" / "tmp" / "1700000000.M3P1Q3.host").write_bytes(b"an inbox copy")
    dovecots = store.root / "bob" / "tmp" / "1700000000.M4P2.host"  # Dovecot may be writing it now
    dovecots.write_bytes(b"not ours")
    assert store.clean_temporary_files() == 3
    assert list((sent_folder(store, "alice") / "tmp").iterdir()) == []
    assert list((store.root / "bob" / "tmp").iterdir()) == [dovecots]
    assert read_all(store, "alice") == [b"kept\n"]
    assert read_all(store, "bob") == [b"kept too\n"]
    assert store.clean_temporary_files() == 0


def test_unfinished_delivery_is_invisible_and_aborts_cleanly(store: MailboxStore) -> None:
    delivery = store.start_delivery("alice")
    delivery.write(b"half")
    assert read_all(store, "alice") == []
    delivery.abort()
    assert list((sent_folder(store, "alice") / "tmp").iterdir()) == []
    assert read_all(store, "alice") == []


def test_committed_delivery_is_visible(store: MailboxStore) -> None:
    delivery = store.start_delivery("alice")
    delivery.write(b"in ")
    delivery.write(b"pieces\n")
    key = delivery.commit()
    assert read_all(store, "alice") == [b"in pieces\n"]
    assert (sent_folder(store, "alice") / "new" / key).is_file()
    assert list((sent_folder(store, "alice") / "tmp").iterdir()) == []


# ------------------------------------------------------------ group commit of directory fsyncs


def test_a_failed_shared_directory_fsync_fails_every_caller_it_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that waited for another thread's fsync of the folder gets that fsync's error, not a 250."""
    folder = tmp_path / "new"
    folder.mkdir()
    waiting, calls = 4, []
    entered = threading.Semaphore(0)
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == 1:  # the first: runs until the others have come, then succeeds
            for _ in range(waiting):
                assert entered.acquire(timeout=10)
            real_fsync(descriptor)
            return
        raise OSError(errno.EIO, os.strerror(errno.EIO))  # every later one: the disk failed

    monkeypatch.setattr(os, "fsync", fsync)
    outcomes: list[object] = []

    def sync(after: threading.Semaphore | None) -> None:
        if after is not None:
            after.release()
        try:
            fsync_directory(folder)
            outcomes.append("durable")
        except OSError as error:
            outcomes.append(error.errno)

    first = threading.Thread(target=sync, args=(None,))
    first.start()
    wait_for(lambda: calls)
    others = [threading.Thread(target=sync, args=(entered,)) for _ in range(waiting)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert outcomes.count("durable") == 1  # the first caller's own fsync started after its change
    assert outcomes.count(errno.EIO) == waiting


def test_a_maildir_is_looked_for_once(store: MailboxStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first delivery the store knows the Maildir is whole: no stat() per message."""
    store_message(store, "alice", b"first\n")
    looks: list[Path] = []
    real_is_dir = Path.is_dir

    def is_dir(path: Path) -> bool:
        looks.append(path)
        return real_is_dir(path)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    for number in range(3):
        store_message(store, "alice", f"message {number}\n".encode())
    assert looks == []
    assert len(read_all(store, "alice")) == 4


def test_a_mailbox_removed_while_running_is_made_again(store: MailboxStore) -> None:
    """A teacher who empties mailboxes/ between classes need not restart the server: sender's or recipient's."""
    deliver(store, "bob", b"before\n", sender="alice")
    shutil.rmtree(store.root / "alice")
    shutil.rmtree(store.root / "bob")
    deliver(store, "bob", b"after\n", sender="alice")
    assert read_all(store, "alice") == [b"after\n"]
    assert [path.read_bytes() for path in (store.root / "bob" / "new").iterdir()] == [b"after\n"]
