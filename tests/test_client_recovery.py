"""client.py loses nothing a student typed: it logs in again after the server closed an idle session,
keeps a message it could not send in unsent-<date-time>.eml, and Ctrl-C while writing gives up only
that message.
"""

from __future__ import annotations

import contextlib
import signal
import smtplib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    USERS,
    ClientProcess,
    RunningServer,
    ServerProcess,
    retrieve,
    wait_for,
    write_users_file,
)
from test_client import (
    DELETE,
    LOGIN,
    MENU_PROMPT,
    QUIT,
    RETRIEVE,
    deliver,
    send_script,
    trace_lines,
)

import client as client_module
from mailserver.users import hash_password, rewrite_users_file

RECONNECTED = "(reconnected: the server had closed the idle connection)"
IDLE_TIMEOUT = 3.0  # seconds: the server closes a session that says nothing for this long (the login is faster)


def logged_in_then_idle(server: RunningServer, client: ClientProcess) -> None:
    """Log in, and wait until the server has closed the session for idleness."""
    client.type(LOGIN)
    wait_for(lambda: MENU_PROMPT in client.output())
    assert server.server.connections.wait_until_idle(10), "the server did not close the idle session"


ACTIONS = {
    "send": (send_script("bob@example.org", "after the break", ["still here"]), "Sent: 250 OK"),
    "retrieve": (RETRIEVE, "--- Message 1 ---"),
    "delete": (DELETE + "y\n", "Deleted the message you sent."),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_after_an_idle_timeout_the_next_action_logs_in_again_and_is_carried_out(
    start_server: Callable[..., RunningServer], client_process: Callable[..., ClientProcess], action: str
) -> None:
    server = start_server(timeout=IDLE_TIMEOUT)
    deliver(server, "Subject: stored before\r\n\r\nhello\r\n")
    client = client_process(server.port, "--trace")
    logged_in_then_idle(server, client)
    script, outcome = ACTIONS[action]
    client.type(script + QUIT)
    result = client.finish()
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(RECONNECTED) == 1
    assert outcome in result.stdout.split(RECONNECTED, 1)[1]
    # The trace shows the second login, password masked: nothing was asked again.
    assert trace_lines(result.stdout).count("C: AUTH PLAIN ********") == 2
    assert result.stdout.count("Password: ") == 1
    stored = server.stored("alice")
    expected = {"send": 2, "retrieve": 1, "delete": 0}[action]
    assert len(stored) == expected
    if action == "send":
        assert b"still here" in stored[-1]


def test_after_a_server_restart_the_message_is_sent_to_the_new_server(
    server_process: Callable[..., ServerProcess], client_process: Callable[..., ClientProcess], tmp_path: Path
) -> None:
    first = server_process()
    client = client_process(first.port)
    client.type(LOGIN)
    wait_for(lambda: MENU_PROMPT in client.output())
    assert first.stop() == 0  # every session is told 421 Service shutting down
    second = server_process("--port", str(first.port))
    client.type(send_script("bob@example.org", "across a restart", ["hello again"]) + QUIT)
    result = client.finish()
    assert result.returncode == 0, result.stderr
    assert RECONNECTED in result.stdout
    assert "Sent: 250 OK" in result.stdout
    [stored] = retrieve("127.0.0.1", second.port)  # RETR from the new server: what alice sent
    assert "Subject: across a restart" in stored
    assert second.stop() == 0


def test_when_reconnecting_fails_the_message_is_saved_and_the_path_printed(
    smtp_server: RunningServer, client_process: Callable[..., ClientProcess], tmp_path: Path
) -> None:
    folder = tmp_path / "student"
    folder.mkdir()
    client = client_process(smtp_server.port, cwd=folder)
    client.type(LOGIN)
    wait_for(lambda: MENU_PROMPT in client.output())
    smtp_server.stop()
    client.type(send_script("bob@example.org", "Homework", ["Three pages", "of careful work."]))
    result = client.finish()
    assert result.returncode == 1
    [saved] = folder.iterdir()
    assert saved.name.startswith("unsent-") and saved.suffix == ".eml"
    assert f"Message not sent; it is saved in {saved}\n" in result.stdout
    text = saved.read_text()
    assert "Subject: Homework" in text and "To: bob@example.org" in text
    assert text.endswith("\n\nThree pages\nof careful work.\n")
    assert USERS["alice"] not in text  # the password stays in memory
    assert result.stderr == (
        "The server closed the connection, and reconnecting failed: "
        f"Cannot connect to 127.0.0.1:{smtp_server.port} — is the server running?\n"
    )


@pytest.fixture
def server_that_hangs_after_login() -> Iterator[tuple[int, list[bytes]]]:
    """A server that logs anyone in, then answers nothing else (not even QUIT); yields its port and
    the command lines it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection, connection.makefile("rb") as lines:
                connection.sendall(b"220 hang.test Service ready\r\n")
                for line in lines:
                    received.append(line)
                    verb = line.split(b" ")[0].strip().upper()
                    if verb == b"EHLO":
                        connection.sendall(b"250-hang.test\r\n250 AUTH PLAIN\r\n")
                    elif verb == b"AUTH":
                        connection.sendall(b"235 2.7.0 Authentication successful\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], received
    listener.close()


def test_ctrl_c_while_the_server_does_not_answer_keeps_the_message(
    server_that_hangs_after_login: tuple[int, list[bytes]],
    client_process: Callable[..., ClientProcess],
    tmp_path: Path,
) -> None:
    port, received = server_that_hangs_after_login
    client = client_process(port, cwd=tmp_path)
    client.type(LOGIN + send_script("bob@example.org", "Essay", ["An hour of work."]))
    wait_for(lambda: any(line.upper().startswith(b"MAIL FROM:") for line in received))  # waiting for the answer
    client.process.send_signal(signal.SIGINT)
    result = client.finish()
    assert result.returncode == 130
    [saved] = tmp_path.iterdir()
    assert f"Message not sent; it is saved in {saved}" in result.stdout
    assert saved.read_text().endswith("\n\nAn hour of work.\n")


def test_a_second_unsent_message_does_not_overwrite_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for subject in ("first", "second"):
        client_module.keep_unsent(client_module.build_message("a@b.c", ["d@e.f"], subject, "text\n"))
    saved = sorted(tmp_path.iterdir())
    assert len(saved) == 2
    assert {path.read_text().split("Subject: ")[1].split("\n")[0] for path in saved} == {"first", "second"}


def test_when_the_password_changed_meanwhile_the_message_is_saved(
    start_server: Callable[..., RunningServer], client_process: Callable[..., ClientProcess], tmp_path: Path
) -> None:
    users = write_users_file(tmp_path / "users.txt", USERS)
    server = start_server(users_path=users, timeout=IDLE_TIMEOUT)
    folder = tmp_path / "student"
    folder.mkdir()
    client = client_process(server.port, cwd=folder)
    logged_in_then_idle(server, client)
    rewrite_users_file(users, "alice", hash_password("changed by the teacher", rounds=4))
    wait_for(lambda: not server.server.users.check("alice", USERS["alice"].encode()))  # noticed within a second
    client.type(send_script("bob@example.org", "Homework", ["done"]))
    result = client.finish()
    assert result.returncode == 1
    assert [path.suffix for path in folder.iterdir()] == [".eml"]
    assert result.stderr == (
        "The server closed the connection, and reconnecting failed: "
        "the server no longer accepts this session's password\n"
    )


def test_ctrl_c_while_typing_the_body_gives_up_only_that_message(
    smtp_server: RunningServer, client_process: Callable[..., ClientProcess], tmp_path: Path
) -> None:
    """The message is kept (issue 21: nothing a student typed is lost); at a terminal: test_client_feedback.py."""
    client = client_process(smtp_server.port, cwd=tmp_path)
    client.type(LOGIN + "1\n\nbob@example.org\nhalf done\nthe first line\n")
    wait_for(lambda: "Type the message" in client.output())
    client.process.send_signal(signal.SIGINT)
    wait_for(lambda: "Message not sent; it is saved in " in client.output())
    client.type(QUIT)
    result = client.finish()
    assert result.returncode == 0, result.stderr
    after = result.stdout.split("Message not sent; it is saved in ", 1)[1]
    assert MENU_PROMPT in after and "221 mail.test" in after
    assert smtp_server.stored("alice") == []
    [saved] = tmp_path.glob("unsent-*.eml")
    assert "Subject: half done" in saved.read_text()


# --- the mechanism, for any connection a menu action uses ------------------------------


def test_reconnecting_runs_the_operation_again_on_the_new_connection() -> None:
    calls: list[str] = []

    def operation(connection: str) -> str:
        calls.append(connection)
        if connection == "old":
            raise smtplib.SMTPServerDisconnected("421 Timeout")
        return f"done on {connection}"

    result = client_module.reconnecting(operation, lambda: "old", lambda: "new", (smtplib.SMTPServerDisconnected,))
    assert result == "done on new"
    assert calls == ["old", "new"]


def test_reconnecting_tries_once_only() -> None:
    def operation(connection: str) -> str:
        raise smtplib.SMTPServerDisconnected(f"gone on {connection}")

    with pytest.raises(smtplib.SMTPServerDisconnected, match="gone on new"):
        client_module.reconnecting(operation, lambda: "old", lambda: "new", (smtplib.SMTPServerDisconnected,))


def test_reconnecting_leaves_other_errors_alone() -> None:
    reconnects: list[int] = []

    def operation(connection: str) -> str:
        raise smtplib.SMTPDataError(554, b"refused")

    def reconnect() -> str:
        reconnects.append(1)
        return "new"

    with pytest.raises(smtplib.SMTPDataError):
        client_module.reconnecting(operation, lambda: "old", reconnect, (smtplib.SMTPServerDisconnected,))
    assert reconnects == []
