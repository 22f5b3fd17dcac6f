"""Concurrency: sessions of the same users sending, retrieving and deleting at once.

Issue 4 ("Concurrency") and issue 2's Storage section: "Concurrent sessions of the same
user (sending, RETR, DELE at once) never tear, lose or duplicate a message."
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from conftest import RawSession, RunningServer, dot_stuff, write_users_file

USERS = {f"user{number}": f"password-{number}" for number in range(5)}
SENDERS_PER_USER = 10  # 50 sending sessions in all
MESSAGES_PER_SENDER = 8
TIME_LIMIT = 30.0  # seconds: every loop below stops by then at the latest


def message_text(user: str, sender: int, number: int) -> bytes:
    """A message (CRLF line ends) that says who sent it; sizes vary, some lines need dot-stuffing."""
    body = b"".join(b".%d line of %s\r\n" % (line, user.encode()) for line in range(1 + (sender * 37 + number) % 400))
    return f"Message-Id: <{user}-{sender}-{number}@concurrency.test>\r\n\r\n".encode() + body


def identity(message: bytes) -> tuple[int, int]:
    """(sender, number) of a message made by message_text."""
    first = message.split(b"\r\n", 1)[0].decode()
    assert first.startswith("Message-Id: <"), f"not a whole message: {message[:80]!r}"
    _user, sender, number = first.removeprefix("Message-Id: <").partition("@")[0].split("-")
    return int(sender), int(number)


def open_session(server: RunningServer, user: str) -> RawSession:
    session = RawSession(server.host, server.port, timeout=TIME_LIMIT)
    assert session.read_reply()[0] == 220
    session.login(user, USERS[user])
    return session


def delete_all(session: RawSession) -> int:
    code, text = session.command("DELE")
    assert code == 250, text
    return int(text[0].split()[0])


class Worker(threading.Thread):
    """Runs work(); an exception is kept for the test to raise, not lost in the thread."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as error:
            self.error = error


def test_concurrent_send_retr_and_dele_of_the_same_users_lose_tear_and_duplicate_nothing(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = start_server(
        users_path=write_users_file(tmp_path / "users.txt", USERS),
        max_connections=100,
        max_connections_per_ip=100,
    )
    deadline = time.monotonic() + TIME_LIMIT
    senders_done = threading.Event()
    acknowledged: dict[str, list[tuple[int, int]]] = defaultdict(list)  # list.append is atomic under the GIL
    deleted: dict[str, list[int]] = defaultdict(list)  # what each DELE reported
    retrievals: dict[str, int] = defaultdict(int)

    def send(user: str, sender: int) -> None:
        session = open_session(server, user)
        start_together.wait(TIME_LIMIT)  # all first messages at once: the Maildirs do not exist yet
        for number in range(MESSAGES_PER_SENDER):
            assert time.monotonic() < deadline, "sending took too long"
            # Pipelined, as PIPELINING allows: the four replies come back in order.
            session.start_data(f"{user}@example.org", ["x@example.org"], pipelined=True)
            session.send(dot_stuff(message_text(user, sender, number)) + b".\r\n")
            code, text = session.read_reply()
            assert code == 250, f"{user} {sender}-{number}: {code} {text}"
            acknowledged[user].append((sender, number))
        assert session.command("QUIT")[0] == 221

    def retrieve_repeatedly(user: str) -> None:
        session = open_session(server, user)
        while not senders_done.is_set() and time.monotonic() < deadline:
            # An empty block is a message a DELE took while RETR was sending (docs/protocol.md): not torn.
            messages = [message for message in session.retr() if message]
            seen = [identity(message) for message in messages]
            for message, (sender, number) in zip(messages, seen, strict=True):
                assert message == message_text(user, sender, number), f"RETR of {user}: {sender}-{number} is torn"
            assert len(seen) == len(set(seen)), f"RETR of {user} shows a message twice"
            for sender in {sender for sender, _ in seen}:
                numbers = [number for s, number in seen if s == sender]
                assert numbers == sorted(numbers), f"RETR of {user} is not oldest first: {numbers}"
            retrievals[user] += 1

    def delete_repeatedly(user: str) -> None:
        session = open_session(server, user)
        while not senders_done.wait(0.01) and time.monotonic() < deadline:
            deleted[user].append(delete_all(session))

    start_together = threading.Barrier(len(USERS) * SENDERS_PER_USER)
    senders = [Worker(lambda u=user, s=sender: send(u, s)) for user in USERS for sender in range(SENDERS_PER_USER)]
    others = [Worker(lambda u=user: retrieve_repeatedly(u)) for user in USERS]
    others += [Worker(lambda u=user: delete_repeatedly(u)) for user in USERS]
    for worker in senders + others:
        worker.start()
    for worker in senders:
        worker.join(TIME_LIMIT)
    senders_done.set()
    for worker in others:
        worker.join(TIME_LIMIT)
    for worker in senders + others:
        assert not worker.is_alive(), "a session hangs"
        if worker.error is not None:
            raise worker.error

    for user in USERS:
        assert len(acknowledged[user]) == SENDERS_PER_USER * MESSAGES_PER_SENDER
        session = open_session(server, user)
        remaining = session.retr()
        identities = [identity(message) for message in remaining]
        assert len(identities) == len(set(identities)), f"{user}: a message is stored twice"
        for message, (sender, number) in zip(remaining, identities, strict=True):
            assert message == message_text(user, sender, number), f"{user} {sender}-{number} is torn"
        # Each message is either still there or was deleted by a DELE that counted it.
        assert sum(deleted[user]) + len(remaining) == len(acknowledged[user]), (
            f"{user}: {len(acknowledged[user])} sent, DELE reported {sum(deleted[user])}, {len(remaining)} remain"
        )
        assert delete_all(session) == len(remaining)
        assert session.retr() == []
        assert retrievals[user] > 0 and deleted[user], f"no RETR or DELE of {user} ran alongside the senders"
