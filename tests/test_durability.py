"""Durability: a message that got 250 survives a crash whole; nothing else ever shows.

Issue 4 ("Crash durability", "Storage faults", "Graceful shutdown") and the Storage
section of issue 2: a delivery is written into tmp/, fsynced, renamed into new/ and
the directory fsynced before the 250; a crash leaves each message whole or absent;
start-up removes what a crash left in tmp/; a write failure is answered 451/452
with nothing half-stored, and the session and the server go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import mailbox
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import USERS, RawSession, RunningServer, ServerProcess, dot_stuff, store_message, wait_for

from mailserver import storage
from mailserver.smtp import SMTPHandler

LOAD_USERS = ("alice", "bob", "carol")
MESSAGE_SIZES = (300, 3_000, 30_000, 300_000)  # bytes of body: from one packet to more than the 256 KiB write buffer
MAX_MESSAGES_PER_CLIENT = 400  # each load client stops by itself after this many ...
LOAD_SECONDS = 20.0  # ... or after this long, whichever comes first
FILLER = bytes(range(33, 127)) * 4  # printable ASCII to cut lines from


# ----------------------------------------------------------------------- helpers


def make_message(tag: str, size: int, rng: random.Random) -> bytes:
    """A message of about size bytes (CRLF line ends), named by tag in its first line.

    Lines with leading dots (stuffed on the wire) and 8-bit text make "byte for byte" mean something.
    """
    lines = [f"Message-Id: <{tag}@load.test>".encode(), f"Subject: load {tag}".encode(), b""]
    total = 0
    while total < size:
        kind = rng.randrange(10)
        if kind == 0:
            line = b"." + FILLER[: rng.randrange(0, 60)]
        elif kind == 1:
            line = b""
        elif kind == 2:
            line = "8-bit text: Grüße, ½ ✓".encode()
        else:
            start = rng.randrange(0, len(FILLER) - 200)
            line = FILLER[start : start + rng.randrange(1, 200)]
        lines.append(line)
        total += len(line) + 2
    return b"".join(line + b"\r\n" for line in lines)


def tag_of(message: bytes) -> str:
    first = message.split(b"\r\n", 1)[0].decode()
    assert first.startswith("Message-Id: <") and first.endswith("@load.test>"), f"torn or not ours: {first!r}"
    return first[len("Message-Id: <") : -len("@load.test>")]


def log_in(session: RawSession, user: str) -> None:
    session.read_reply()  # the greeting
    session.login(user)


def retrieve_as(port: int, user: str) -> list[bytes]:
    session = RawSession("127.0.0.1", port)
    try:
        log_in(session, user)
        return session.retr()
    finally:
        session.close()


def leftovers(mailboxes: Path) -> list[Path]:
    return sorted([*mailboxes.glob("*/tmp/*"), *mailboxes.glob("*/.Sent/tmp/*")])


# ------------------------------------------------------------------ load clients


@dataclasses.dataclass
class Attempt:
    """One message a load client tried to send, and how far it got."""

    user: str
    tag: str
    message: bytes  # CRLF line ends, before dot-stuffing
    finished: bool = False  # the final "." went out
    reply: int | None = None  # the code of the reply to it, if one came


class Load:
    """Clients sending as fast as they can, and one that stops half-way through a DATA.

    The half-sent message guarantees that every kill lands in the middle of a delivery.
    """

    def __init__(self, port: int, name: str, clients: int = 4) -> None:
        self.port = port
        self.attempts: list[Attempt] = []  # appended to by the client threads
        self.stop = threading.Event()
        self.holder_ready = threading.Event()
        self.holder: Attempt | None = None
        self.deadline = time.monotonic() + LOAD_SECONDS
        self.threads = [
            threading.Thread(target=self._send_loop, args=(f"{name}-{number}", LOAD_USERS[number % len(LOAD_USERS)]))
            for number in range(clients)
        ]
        self.threads.append(threading.Thread(target=self._hold, args=(f"{name}-held", "bob")))
        for thread in self.threads:
            thread.start()

    def acknowledged(self) -> int:
        return sum(attempt.reply == 250 for attempt in self.attempts)

    def ready(self, acknowledged: int) -> bool:
        """True once a DATA is held open and at least `acknowledged` messages got their 250."""
        return self.holder_ready.is_set() and self.acknowledged() >= acknowledged

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in self.threads), "a load client hangs"

    def _send_loop(self, name: str, user: str) -> None:
        rng = random.Random(name)
        session = None
        try:
            session = RawSession("127.0.0.1", self.port)
            log_in(session, user)
            for number in range(MAX_MESSAGES_PER_CLIENT):
                if self.stop.is_set() or time.monotonic() > self.deadline:
                    return
                size = rng.choices(MESSAGE_SIZES, weights=(4, 4, 3, 1))[0]
                attempt = Attempt(user, f"{name}-{number}", make_message(f"{name}-{number}", size, rng))
                self.attempts.append(attempt)
                self._send(session, attempt, rng.choice((1024, 16 * 1024, 64 * 1024)))
                if attempt.reply != 250:
                    return
        except (OSError, AssertionError):  # the server went away (a reply may be cut short): that is the point
            return
        finally:
            if session is not None:
                session.close()

    @staticmethod
    def _send(session: RawSession, attempt: Attempt, chunk_size: int) -> None:
        for command, expected in (
            ("MAIL FROM:<load@example.org>", 250),
            ("RCPT TO:<sink@example.org>", 250),
            ("DATA", 354),
        ):
            code, _ = session.command(command)
            if code != expected:
                attempt.reply = code
                return
        data = dot_stuff(attempt.message)
        for start in range(0, len(data), chunk_size):
            session.send(data[start : start + chunk_size])
        session.send(b".\r\n")
        attempt.finished = True
        attempt.reply = session.read_reply()[0]

    def _hold(self, name: str, user: str) -> None:
        session = None
        try:
            session = RawSession("127.0.0.1", self.port)
            log_in(session, user)
            attempt = Attempt(user, name, make_message(name, 2_000, random.Random(name)))
            self.attempts.append(attempt)
            session.start_data("held@example.org", ["sink@example.org"])
            data = dot_stuff(attempt.message)
            session.send(data[: len(data) // 2])
            self.holder = attempt
            self.holder_ready.set()
            self.stop.wait(30)
            attempt.reply = session.read_reply()[0]  # what the server said while we held
        except (OSError, AssertionError):
            return
        finally:
            if session is not None:
                session.close()


def check_stored(port: int, attempts: list[Attempt]) -> None:
    """Every acknowledged message is retrievable byte for byte, exactly once; nothing torn or unfinished."""
    by_tag = {attempt.tag: attempt for attempt in attempts}
    for user in LOAD_USERS:
        messages = retrieve_as(port, user)
        tags = [tag_of(message) for message in messages]
        duplicates = [tag for tag, count in Counter(tags).items() if count > 1]
        assert not duplicates, f"stored more than once: {duplicates}"
        for tag, message in zip(tags, messages, strict=True):
            attempt = by_tag.get(tag)
            assert attempt is not None and attempt.user == user, f"{user} has a message nobody sent: {tag}"
            assert message == attempt.message, f"{tag} is torn: {len(message)} of {len(attempt.message)} bytes"
            assert attempt.finished, f"{tag} is stored though its final dot was never sent"
            assert attempt.reply in (250, None), f"{tag} is stored though the server answered {attempt.reply}"
        acknowledged = {attempt.tag for attempt in attempts if attempt.user == user and attempt.reply == 250}
        missing = acknowledged - set(tags)
        assert not missing, f"{len(missing)} acknowledged messages of {user} are lost: {sorted(missing)[:5]}"


# ------------------------------------------------------------------------- crash

# When to pull the plug: after this many 250s (0: while the very first messages are in flight).
KILL_AFTER_ACKNOWLEDGED = (0, 7, 40)


def test_sigkill_mid_load_loses_no_acknowledged_message_and_tears_none(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    mailboxes = tmp_path / "mailboxes"
    attempts: list[Attempt] = []
    server = server_process(mailboxes=mailboxes)
    for round_number, acknowledged_before_kill in enumerate(KILL_AFTER_ACKNOWLEDGED):
        load = Load(server.port, f"round{round_number}")
        try:
            wait_for(lambda load=load, enough=acknowledged_before_kill: load.ready(enough), timeout=LOAD_SECONDS)
            server.process.kill()
            server.wait()
        finally:
            load.finish()
        attempts += load.attempts
        assert load.holder is not None and not load.holder.finished
        left_by_the_crash = leftovers(mailboxes)

        server = server_process(mailboxes=mailboxes)
        check_stored(server.port, attempts)
        assert left_by_the_crash, "the kill left no unfinished delivery in tmp/: the test proves nothing"
        assert not leftovers(mailboxes), "start-up did not clean tmp/"
    assert sum(attempt.reply == 250 for attempt in attempts) >= sum(KILL_AFTER_ACKNOWLEDGED)


def test_tmp_leftovers_are_never_retrieved_and_are_removed_at_start_up(
    start_server: Callable[..., RunningServer],
    server_process: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    mailboxes = tmp_path / "mailboxes"
    running = start_server(mailboxes_path=mailboxes)
    whole = make_message("whole", 500, random.Random(1))
    session = RawSession(running.host, running.port)
    log_in(session, "alice")
    assert session.send_message(dot_stuff(whole))[0] == 250
    # What a crash mid-delivery leaves: a half-written file in tmp/, named like a real delivery.
    torn = make_message("torn", 5_000, random.Random(2)).replace(b"\r\n", b"\n")[:2_345]
    (mailboxes / "alice" / ".Sent" / "tmp" / "1700000000.M000001P1Q000000001.crashed").write_bytes(torn)
    mailbox.Maildir(mailboxes / "bob", create=True).add_folder("Sent")
    (mailboxes / "bob" / ".Sent" / "tmp" / "1700000000.M000002P1Q000000002.crashed").write_bytes(torn)
    (mailboxes / "bob" / "tmp" / "1700000000.M000003P1Q000000003.crashed").write_bytes(torn)  # an inbox copy

    assert session.retr() == [whole]
    assert retrieve_as(running.port, "bob") == []
    session.close()

    process = server_process(mailboxes=mailboxes)
    assert not leftovers(mailboxes), process.log
    assert retrieve_as(process.port, "alice") == [whole]


# ---------------------------------------------------------------- shutting down


def test_sigterm_under_load_keeps_acknowledged_drops_the_rest_and_exits_quickly(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    mailboxes = tmp_path / "mailboxes"
    server = server_process(mailboxes=mailboxes)
    load = Load(server.port, "term")
    try:
        wait_for(lambda: load.ready(20), timeout=LOAD_SECONDS)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        status = server.wait(10)
        took = time.monotonic() - signalled
    finally:
        load.finish()
    assert status == 0, server.log
    assert took < 5, f"exit took {took:.1f} s"
    assert "Traceback" not in server.log
    # The held DATA was dropped with a 421, and its delivery thrown away.
    assert load.holder is not None and load.holder.reply == 421
    assert not leftovers(mailboxes), "an interrupted delivery was left in tmp/"

    stored: dict[str, bytes] = {}
    for path in [*mailboxes.glob("*/.Sent/new/*"), *mailboxes.glob("*/.Sent/cur/*")]:  # from disk: the server is gone
        text = path.read_bytes()
        stored[tag_of(text.replace(b"\n", b"\r\n"))] = text
    for attempt in load.attempts:
        on_disk = stored.get(attempt.tag)
        if attempt.reply == 250:
            assert on_disk == attempt.message.replace(b"\r\n", b"\n"), f"{attempt.tag} acknowledged but not stored"
        elif not attempt.finished or attempt.reply is not None:
            assert on_disk is None, f"{attempt.tag} stored though it got {attempt.reply}"
        else:  # the final dot went out and the server ended before answering: whole or absent
            assert on_disk in (None, attempt.message.replace(b"\r\n", b"\n")), f"{attempt.tag} is torn"
    assert len(stored) >= 20


# ---------------------------------------------------------------- 250 means on disk


def test_250_comes_only_after_fsync_rename_and_directory_fsync(
    smtp_server: RunningServer, logged_in: RawSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, ...]] = []
    real_fsync, real_rename, real_reply = os.fsync, os.rename, SMTPHandler.reply

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def rename(source: str | Path, target: str | Path) -> None:
        real_rename(source, target)
        events.append(("rename", str(source), str(target)))

    def reply(handler: SMTPHandler, code: int, *lines: str) -> None:
        events.append(("reply", str(code)))
        real_reply(handler, code, *lines)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(SMTPHandler, "reply", reply)
    code, text = logged_in.send_message(dot_stuff(make_message("synced", 1_000, random.Random(3))))
    assert code == 250
    key = text[0].rsplit(" ", 1)[-1]
    maildir = (smtp_server.mailboxes_path / "alice" / ".Sent").resolve()
    start = events.index(("reply", "354"))
    assert events[start + 1 :] == [
        ("fsync", str(maildir / "tmp" / key)),
        ("rename", str(maildir / "tmp" / key), str(maildir / "new" / key)),
        ("fsync", str(maildir / "new")),
        ("reply", "250"),
    ]


def test_concurrent_deliveries_share_directory_fsyncs_and_each_250_follows_one_started_after_its_rename(
    smtp_server: RunningServer, connect: Callable[..., RawSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit keeps the promise: a 250 comes only after an fsync of new/ that started after its rename.

    The first fsync of new/ is held until every sender has renamed its message into new/;
    that fsync started before their renames, so it must cover none of them but its own.
    They must all wait for the next one, and may share it: two fsyncs for all the messages.
    (The inboxes' new/, where a class's messages to one teacher are linked, share fsyncs the same way.)
    """
    senders = 6
    store_message(smtp_server.server.mailboxes, "alice", b"Subject: makes the folders\n\n")
    new_folder = str((smtp_server.mailboxes_path / "alice" / ".Sent" / "new").resolve())  # what RETR reads
    sessions = [connect() for _ in range(senders)]
    for session in sessions:
        session.login()
    tick = itertools.count()  # one clock for every thread: next() is atomic
    renamed: dict[str, int] = {}  # message key -> tick once its rename into new/ returned
    fsyncs: list[tuple[int, int]] = []  # fsyncs of new/: (tick at start, tick at end)
    replied: dict[str, int] = {}  # message key -> tick as its 250 is sent
    all_renamed = threading.Event()
    real_fsync, real_rename, real_reply = os.fsync, os.rename, SMTPHandler.reply

    def rename(source: str | Path, target: str | Path) -> None:
        real_rename(source, target)
        if str(Path(target).parent) == new_folder:
            renamed[Path(target).name] = next(tick)
            if len(renamed) == senders:
                all_renamed.set()

    def fsync(descriptor: int) -> None:
        if os.readlink(f"/proc/self/fd/{descriptor}") != new_folder:
            real_fsync(descriptor)
            return
        started = next(tick)
        if not fsyncs:
            all_renamed.wait(10)  # the first fsync of new/: hold it until every rename is done
        real_fsync(descriptor)
        fsyncs.append((started, next(tick)))

    def reply(handler: SMTPHandler, code: int, *lines: str) -> None:
        if code == 250 and lines and lines[0].startswith("OK: stored as "):
            replied[lines[0].rsplit(" ", 1)[-1]] = next(tick)
        real_reply(handler, code, *lines)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(SMTPHandler, "reply", reply)
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda session=session, n=n: codes.append(
                session.send_message(dot_stuff(make_message(f"group-{n}", 1_000, random.Random(n))))[0]
            )
        )
        for n, session in enumerate(sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == [250] * senders
    assert sorted(replied) == sorted(renamed)
    for key, renamed_at in renamed.items():
        covering = [(start, end) for start, end in fsyncs if renamed_at < start and end < replied[key]]
        assert covering, f"{key}: renamed at {renamed_at}, 250 at {replied[key]}, fsyncs of new/ {fsyncs}"
    assert len(fsyncs) == 2  # the held one, and one shared by the other five


# ---------------------------------------------------------------- storage faults

Fault = Callable[[pytest.MonkeyPatch, Path], contextlib.AbstractContextManager[None]]


def disk_full_after(room: int) -> Fault:
    """The disk fills up after room more bytes of the delivery's files (in the Maildir's tmp/)."""

    @contextlib.contextmanager
    def fault(monkeypatch: pytest.MonkeyPatch, maildir: Path) -> Iterator[None]:
        real_write, tmp, left = os.write, maildir.resolve() / "tmp", [room]

        def filling_write(descriptor: int, data: bytes) -> int:
            if Path(os.readlink(f"/proc/self/fd/{descriptor}")).parent != tmp:
                return real_write(descriptor, data)
            if not left[0]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written = real_write(descriptor, bytes(memoryview(data)[: left[0]]))
            left[0] -= written
            return written

        with monkeypatch.context() as patch:
            patch.setattr(os, "write", filling_write)  # how Draft writes its descriptor
            yield

    return fault


def fsync_fails(folder: str) -> Fault:
    """fsync raises EIO for a file in the Maildir's folder ("tmp"), or for the folder itself ("new")."""

    @contextlib.contextmanager
    def fault(monkeypatch: pytest.MonkeyPatch, maildir: Path) -> Iterator[None]:
        real_fsync, failing = os.fsync, maildir.resolve() / folder

        def failing_fsync(descriptor: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
            if failing in (path, path.parent):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fsync(descriptor)

        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", failing_fsync)
            yield

    return fault


def not_a_directory(folder: str) -> Fault:
    """The Maildir's tmp/ or new/ is a file: nothing can be written there, not even by root."""

    @contextlib.contextmanager
    def fault(monkeypatch: pytest.MonkeyPatch, maildir: Path) -> Iterator[None]:
        path, saved = maildir / folder, maildir / f"saved-{folder}"
        path.rename(saved)
        path.write_bytes(b"")
        try:
            yield
        finally:
            path.unlink()
            saved.rename(path)

    return fault


FAULTS: dict[str, tuple[Fault, int]] = {  # the fault, and the size of the message it meets
    "disk-full-mid-message": (disk_full_after(64 * 1024), 600_000),
    "disk-full-at-the-final-flush": (disk_full_after(100), 2_000),
    "fsync-of-the-message-fails": (fsync_fails("tmp"), 2_000),
    "fsync-of-new-fails-after-the-rename": (fsync_fails("new"), 2_000),
    "tmp-is-not-writable": (not_a_directory("tmp"), 2_000),
    "new-is-not-writable": (not_a_directory("new"), 2_000),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_storage_fault_is_answered_4xx_stores_nothing_and_the_session_goes_on(
    fault: str,
    smtp_server: RunningServer,
    logged_in: RawSession,
    connect: Callable[..., RawSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_fault, size = FAULTS[fault]
    maildir = smtp_server.mailboxes_path / "alice" / ".Sent"
    before = make_message("before", 500, random.Random(4))
    after = make_message("after", 500, random.Random(6))
    assert logged_in.send_message(dot_stuff(before))[0] == 250  # creates the Maildir

    with make_fault(monkeypatch, maildir):
        refused = dot_stuff(make_message("refused", size, random.Random(5)))
        code, text = logged_in.send_message(refused, data_may_be_refused=True)
    # RFC 5321 4.2.2: 452 insufficient system storage for a full disk, 451 local error for the rest.
    assert code == (452 if fault.startswith("disk-full") else 451), f"{code} {text}"

    assert logged_in.retr() == [before], "the refused message is visible"
    assert not leftovers(smtp_server.mailboxes_path), "the refused message was left in tmp/"
    # The same session goes on, and the server takes new connections.
    assert logged_in.send_message(dot_stuff(after))[0] == 250
    assert logged_in.retr() == [before, after]
    other = connect()
    other.login("bob")
    assert other.command("NOOP")[0] == 250


# ---------------------------------------------------------------------- POP3's QUIT

# Loaded into the server process through PYTHONPATH: every unlink in an inbox takes 5 ms more,
# so that a kill a moment after QUIT lands in the middle of removing the marked messages, and a
# +OK sent before the removals were done would be caught.
SLOW_UNLINK = """
import os, time
_unlink = os.unlink
def unlink(path, *args, **kwargs):
    if "/alice/new/" in os.fspath(path):  # alice's inbox, not her .Sent
        time.sleep(0.005)
    return _unlink(path, *args, **kwargs)
os.unlink = unlink
"""
INBOX_MESSAGES = 120


def inbox_message(number: int) -> bytes:
    return f"Message-Id: <{number}@inbox.test>\nSubject: number {number}\n\n".encode() + b"body line\n" * number


def inbox_on_disk(maildir: Path) -> dict[int, bytes]:
    """The messages in the inbox, from disk, by number (each must be whole)."""
    found: dict[int, bytes] = {}
    for path in [*maildir.glob("new/*"), *maildir.glob("cur/*")]:
        content = path.read_bytes()
        number = int(content.split(b"@", 1)[0].removeprefix(b"Message-Id: <"))
        assert content == inbox_message(number), f"message {number} is torn"
        assert number not in found, f"message {number} is there twice"
        found[number] = content
    return found


@pytest.mark.parametrize("moment", ["during-the-removals", "right-after-the-ok"])
def test_sigkill_during_a_pop3_quit_loses_nothing_that_was_not_deleted(
    tmp_path: Path, shared_users_file: Path, moment: str
) -> None:
    mailboxes = tmp_path / "mailboxes"
    store = storage.MailboxStore(mailboxes)
    for number in range(1, INBOX_MESSAGES + 1):
        delivery = store.start_delivery("carol", ["alice"])
        delivery.write(inbox_message(number))
        delivery.commit()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_UNLINK)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path / "site")}
    server = ServerProcess("--users", str(shared_users_file), "--mailboxes", str(mailboxes), env=env)
    try:
        session = RawSession("127.0.0.1", server.pop3_port)
        assert session.read_line().startswith("+OK")
        for line in ("USER alice", f"PASS {USERS['alice']}"):
            session.send(line + "\r\n")
            assert session.read_line().startswith("+OK")
        marked = set(range(2, INBOX_MESSAGES + 1, 2))
        session.send("".join(f"DELE {number}\r\n" for number in sorted(marked)))  # pipelined (RFC 2449)
        for _ in marked:
            assert session.read_line().startswith("+OK Message")
        session.send("QUIT\r\n")
        if moment == "during-the-removals":  # the first removals are done; 60 of 5 ms each take 0.3 s
            wait_for(lambda: len(list((mailboxes / "alice" / "new").iterdir())) < INBOX_MESSAGES, interval=0.001)
        else:
            assert re.fullmatch(r"\+OK .* POP3 server signing off \(60 messages left\)", session.read_line())
        server.process.kill()
        server.wait()
        session.close()
    finally:
        server.stop()
    left = inbox_on_disk(mailboxes / "alice")
    kept = set(range(1, INBOX_MESSAGES + 1)) - marked
    assert kept <= set(left), f"lost messages that were not deleted: {sorted(kept - set(left))[:5]}"
    removed = marked - set(left)
    if moment == "during-the-removals":
        assert 0 < len(removed) < len(marked), "the kill did not land during QUIT's removals: the test proves nothing"
    else:
        assert removed == marked, "QUIT's +OK came before its removals were done"
