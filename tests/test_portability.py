"""Linux, macOS and Windows: the server runs where a call of ours is missing, because each has a fallback.

These tests run server.py as a real process on this machine with the pieces another OS lacks
taken away (a `sitecustomize` applies the changes before server.py starts), and prove that
delivery, RETR, DELE and the shutdown still work:

- Windows has no `os.O_DIRECTORY` (no directory fsync: NTFS journals the rename) and opens
  descriptors in text mode unless given `os.O_BINARY`, which would turn every LF into CRLF;
- an OS may lack SIGTERM, and Windows has SIGBREAK (Ctrl-Break);
- `threading.stack_size()` may be unsupported.
"""

from __future__ import annotations

import os
import signal
import smtplib
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import USERS, ServerProcess, retrieve, wait_for

from mailserver.storage import MailboxStore

FAKE_O_BINARY = 1 << 30  # a bit no POSIX open() flag uses: os.open below strips it again

WINDOWS_LIKE = f"""
    import os, signal, threading

    del os.O_DIRECTORY  # Windows cannot open a directory to fsync it
    os.O_BINARY = {FAKE_O_BINARY}
    _posix_open = os.open

    def open_as_windows_would(path, flags, mode=0o777, *, dir_fd=None):
        # On Windows a descriptor without O_BINARY is in text mode: LF written becomes CRLF.
        if flags & (os.O_WRONLY | os.O_RDWR) and not flags & os.O_BINARY:
            raise OSError(f"{{path}} opened in text mode: every LF would become CRLF")
        return _posix_open(path, flags & ~os.O_BINARY, mode, dir_fd=dir_fd)

    os.open = open_as_windows_would

    def stack_size(size=0):
        raise RuntimeError("setting the thread stack size is not supported")

    threading.stack_size = stack_size
"""

NO_SIGTERM = """
    import signal

    del signal.SIGTERM
"""

WITH_SIGBREAK = """
    import signal

    signal.SIGBREAK = signal.SIGUSR1  # Windows' Ctrl-Break, played by a signal this OS has
"""

WIRE = b"Subject: portable\r\n\r\nline one\r\n.a line starting with a dot\r\nline three\r\n"
STORED = WIRE.replace(b"\r\n", b"\n")  # the Maildir holds LF line ends


@pytest.fixture
def server_as_on(tmp_path: Path, shared_users_file: Path) -> Iterator[Callable[[str], ServerProcess]]:
    """server_as_on(patches): server.py as a real process, with patches applied before it starts (via
    sitecustomize); every one is stopped after the test."""
    started: list[ServerProcess] = []

    def start(patches: str) -> ServerProcess:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(textwrap.dedent(patches))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(site)}
        arguments = ["--users", str(shared_users_file), "--mailboxes", str(tmp_path / "mailboxes")]
        started.append(ServerProcess(*arguments, "--hostname", "mail.test", env=env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def deliver_retrieve_delete(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as smtp:
        smtp.login("alice", USERS["alice"])
        smtp.sendmail("alice@mail.test", ["bob@example.org"], WIRE)
    assert retrieve("127.0.0.1", port) == [WIRE.decode().split("\r\n")[:-1]]
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as smtp:
        smtp.login("alice", USERS["alice"])
        assert smtp.docmd("DELE") == (250, b"1 message deleted")
    assert retrieve("127.0.0.1", port) == []


def stops_cleanly(server: ServerProcess, signum: int) -> None:
    server.signal(signum)
    assert server.wait() == 0
    wait_for(lambda: "stopped" in server.log)
    assert "Traceback" not in server.log, server.log
    assert "error" not in server.log.lower(), server.log


@pytest.mark.parametrize("patches", [WINDOWS_LIKE, NO_SIGTERM], ids=["windows-like", "no-sigterm"])
def test_delivery_retr_dele_and_ctrl_c_work_without_the_missing_pieces(
    server_as_on: Callable[[str], ServerProcess], patches: str
) -> None:
    server = server_as_on(patches)
    deliver_retrieve_delete(server.port)
    stops_cleanly(server, signal.SIGINT)


def test_windows_like_os_stores_the_bytes_as_sent(server_as_on: Callable[[str], ServerProcess], tmp_path: Path) -> None:
    server = server_as_on(WINDOWS_LIKE)
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test") as smtp:
        smtp.login("alice", USERS["alice"])
        smtp.sendmail("alice@mail.test", ["bob@example.org"], WIRE)
    [open_message] = MailboxStore(tmp_path / "mailboxes").sent_messages("alice")
    with open_message() as message:
        assert message.read() == STORED


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs a spare signal to play SIGBREAK")
def test_ctrl_break_stops_the_server_where_the_os_has_it(server_as_on: Callable[[str], ServerProcess]) -> None:
    stops_cleanly(server_as_on(WITH_SIGBREAK), signal.SIGUSR1)
