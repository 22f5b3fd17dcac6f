"""`python server.py` as a user runs it: start-up, user management, signals, the log."""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import poplib
import re
import select
import signal
import smtplib
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    USERS,
    Certificate,
    POP3Session,
    RawSession,
    RunningServer,
    ServerProcess,
    deliver,
    inbox_of,
    store_message,
    wait_for,
    write_users_file,
)

import server as server_module
from mailserver.config import CLASSROOM, ServerConfig, options
from mailserver.inbox_lock import hold_inbox
from mailserver.storage import MailboxStore
from mailserver.users import UserStore

SERVER = str(ROOT / "server.py")


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run server.py to completion (start-up errors, adduser and friends)."""
    return subprocess.run(
        [sys.executable, SERVER, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


def manage(users: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """adduser, passwd or deluser on users, with bcrypt's cheapest cost where a password is set."""
    rounds = ["--rounds", "4"] if args[0] != "deluser" else []
    return run("--users", str(users), "--mailboxes", str(users.parent / "mailboxes"), *args, *rounds, stdin=stdin)


# Polling with failing logins must not trip the failed-login throttle of the server under test.
PATIENT = ("--max-login-failures", "1000", "--max-login-failures-per-ip", "1000")


def can_log_in(port: int, user: str, password: str) -> bool:
    session = RawSession("127.0.0.1", port)
    try:
        session.read_reply()
        session.command("EHLO client.test")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return session.command(f"AUTH PLAIN {token}")[0] == 235
    finally:
        session.close()


@contextlib.contextmanager
def running_server(tmp_path: Path, users: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """server.py with its log in a file, so the whole log can be read after it exits."""
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                SERVER,
                "--port",
                "0",
                "--pop3-port",
                "0",
                "--users",
                str(users),
                "--mailboxes",
                str(tmp_path / "mb"),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for(lambda: "serving on" in log_path.read_text() or process.poll() is not None, timeout=15)
        assert process.poll() is None, log_path.read_text()
        yield process, log_path
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def port_of(log: str) -> int:
    match = re.search(r"serving on 127\.0\.0\.1:(\d+)", log)
    assert match, log
    return int(match[1])


# --------------------------------------------------------------------------- start-up


def test_serving_line_names_the_real_port(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process()
    port = port_of(process.log)
    assert port != 0 and port == process.port
    session = RawSession("127.0.0.1", port)
    try:
        assert session.read_reply() == (220, ["mail.test Service ready"])
    finally:
        session.close()


def test_mailboxes_folder_is_created(server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    mailboxes = tmp_path / "not" / "yet" / "there"
    server_process(mailboxes=mailboxes)
    assert mailboxes.is_dir()


def test_a_message_sent_to_the_process_is_stored(server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    process = server_process(mailboxes=tmp_path / "mb")
    with smtplib.SMTP("127.0.0.1", process.port, timeout=10) as client:
        client.login("alice", USERS["alice"])
        client.sendmail("a@x.org", ["b@y.org"], "Subject: hi\r\n\r\nhello\r\n")
        code, text = client.docmd("RETR")
        assert code == 250 and text.startswith(b"1 ")
        block = [client.file.readline() for _ in range(4)]  # smtplib reads replies only: the block by hand
        assert block == [b"Subject: hi\r\n", b"\r\n", b"hello\r\n", b".\r\n"]
    assert len(MailboxStore(tmp_path / "mb").sent_messages("alice")) == 1


def test_missing_users_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing-users.txt"
    result = run("--port", "0", "--users", str(missing), "--mailboxes", str(tmp_path / "mb"))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreadable_users_file(tmp_path: Path) -> None:
    not_a_file = tmp_path / "users-dir"
    not_a_file.mkdir()
    result = run("--port", "0", "--users", str(not_a_file), "--mailboxes", str(tmp_path / "mb"))
    assert result.returncode == 2
    assert str(not_a_file) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "bad_line", ["no colon here", ".dot:$2b$04$" + "a" * 53, "alice:plaintext", "alice:$2b$99$" + "a" * 53]
)
def test_malformed_users_file_names_the_line(tmp_path: Path, bad_line: str) -> None:
    users = tmp_path / "users.txt"
    users.write_text(f"# accounts\nbob:$2b$04${'b' * 53}\n{bad_line}\n")
    result = run("--port", "0", "--users", str(users), "--mailboxes", str(tmp_path / "mb"))
    assert result.returncode == 2
    assert f"{users}:3" in result.stderr
    assert "Traceback" not in result.stderr
    assert "serving on" not in result.stderr


# ---------------------------------------------------------------------------- POP3


def test_pop3_serves_beside_smtp_and_logs_its_port(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process()
    assert re.search(rf"POP3 serving on 127\.0\.0\.1:{process.pop3_port}$", process.log, re.MULTILINE)
    assert process.pop3_port not in (0, 1100, process.port)  # --pop3-port 0 picked a free one
    client = poplib.POP3("127.0.0.1", process.pop3_port, timeout=10)
    assert client.getwelcome() == b"+OK mail.test POP3 server ready"
    client.quit()


def test_pop3_port_defaults_to_1100() -> None:
    result = run("--help")
    assert re.search(r"--pop3-port PORT\s+POP3 port; 0 picks a free one \(default 1100\)", result.stdout)


def test_no_pop3_serves_smtp_only(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process("--no-pop3")
    assert "POP3" not in process.log
    with smtplib.SMTP("127.0.0.1", process.port, timeout=10) as client:
        assert client.noop()[0] == 250


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pop3s-port", "0"], "--pop3s-port need --tls-cert and --tls-key"),
        (["--no-pop3", "--pop3s-port", "0", "--tls-cert", "c", "--tls-key", "k"], "contradict"),
    ],
)
def test_pop3_options_that_cannot_work_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    result = run("--port", "0", "--pop3-port", "0", "--users", str(users), *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_taken_pop3_port_is_a_clear_error(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run("--port", "0", "--pop3-port", port, "--users", str(users), "--mailboxes", str(tmp_path / "mb"))
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"server.py: error: cannot listen on 127.0.0.1:{port}: the port is in use "
        "(is another server running? stop it, or choose another --pop3-port)\n"
    )


def test_each_domain_option_adds_a_local_domain(server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    process = server_process("--domain", "school.example", "--domain", "Class.Example", mailboxes=tmp_path / "mb")
    with smtplib.SMTP("127.0.0.1", process.port, timeout=10) as client:
        client.login("alice", USERS["alice"])
        refused = client.sendmail(
            "alice@mail.test",
            ["bob@school.example", "carol@class.example", "bob@localhost", "bob@mail.test", "bob@elsewhere.example",
             "nobody@school.example"],
            "Subject: hi\r\n\r\nhello\r\n",
        )  # fmt: skip
    assert refused == {"nobody@school.example": (550, b"5.1.1 <nobody@school.example>: no such user here")}
    assert len(list((tmp_path / "mb" / "bob" / "new").iterdir())) == 1  # one copy for its three addresses
    assert len(list((tmp_path / "mb" / "carol" / "new").iterdir())) == 1


def test_pop3_logins_are_logged_without_passwords(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process()
    client = poplib.POP3("127.0.0.1", process.pop3_port, timeout=10)
    client.user("bob")
    client.pass_(USERS["bob"])
    client.quit()
    failed = poplib.POP3("127.0.0.1", process.pop3_port, timeout=10)
    failed.user("alice")
    with pytest.raises(poplib.error_proto, match="AUTH"):
        failed.pass_("secret-wrong-password")
    failed.close()
    wait_for(lambda: process.log.count("disconnected") >= 2)
    assert re.search(r"POP3 login bob \(0 messages\)", process.log)
    assert re.search(r"POP3 login failed for alice", process.log)
    assert USERS["bob"] not in process.log and "secret-wrong-password" not in process.log


def test_command_line_options_reach_the_server(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process("--max-message-size", "1234", "--max-connections", "1", "--timeout", "1")
    first, second = RawSession("127.0.0.1", process.port), None
    try:
        first.read_reply()
        assert first.ehlo()["SIZE"] == "1234"
        second = RawSession("127.0.0.1", process.port)
        assert second.read_reply()[0] == 421  # over --max-connections
        assert first.read_reply()[0] == 421  # idle past --timeout
        assert first.closed_by_server()
    finally:
        first.close()
        if second:
            second.close()


# ------------------------------------------------------------- adduser, passwd, deluser


def read_until(fd: int, marker: bytes, timeout: float = 15) -> bytes:
    """Read a pseudo-terminal until marker shows up (or it closes); fail after timeout."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {marker!r} on the terminal, got {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side has closed
                chunk = b""
            if not chunk:
                break
            seen += chunk
    return seen


def adduser_on_a_terminal(users: Path, first: str, second: str) -> tuple[int, bytes]:
    """Run adduser with a terminal as stdin; answer both password prompts; return (exit status, output)."""
    pid, fd = os.forkpty()
    if pid == 0:  # the child: becomes server.py, its terminal is the pty
        os.execv(sys.executable, [sys.executable, SERVER, "--users", str(users), "adduser", "dave", "--rounds", "4"])
    try:
        output = read_until(fd, b"Password")
        os.write(fd, first.encode() + b"\n")
        output += read_until(fd, b"gain")
        os.write(fd, second.encode() + b"\n")
        output += read_until(fd, b"\0never")  # to the end of output
        _, status = os.waitpid(pid, 0)
        pid = 0
        return os.waitstatus_to_exitcode(status), output
    finally:
        os.close(fd)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_adduser_asks_twice_on_a_terminal(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    status, output = adduser_on_a_terminal(users, "typed-secret", "typed-secret")
    assert status == 0, output
    assert b"typed-secret" not in output  # getpass: no echo
    assert UserStore(users).check("dave", b"typed-secret")


def test_adduser_on_a_terminal_refuses_two_different_passwords(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    status, output = adduser_on_a_terminal(users, "one-secret", "another-secret")
    assert status != 0
    assert b"Traceback" not in output
    assert not users.exists() or "dave" not in users.read_text()


def test_adduser_creates_the_file(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    result = manage(users, "adduser", "dave", stdin="dave-password\n")
    assert result.returncode == 0, result.stderr
    assert UserStore(users).check("dave", b"dave-password")


def test_adduser_default_cost_is_12(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    result = run("--users", str(users), "adduser", "dave", stdin="dave-password\n")
    assert result.returncode == 0, result.stderr
    [line] = [line for line in users.read_text().splitlines() if line.startswith("dave:")]
    assert line.split("$")[2] == "12"


def test_adduser_appends_and_keeps_the_rest(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    before = users.read_text()
    assert manage(users, "adduser", "dave", stdin="dave-password\n").returncode == 0
    assert users.read_text().startswith(before)  # the comment and alice's line as they were
    store = UserStore(users)
    assert store.check("alice", b"alice-password") and store.check("dave", b"dave-password")


def test_password_is_the_first_line_of_stdin(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    assert manage(users, "adduser", "dave", stdin="first line\r\nsecond line\n").returncode == 0
    store = UserStore(users)
    assert store.check("dave", b"first line")
    assert not store.check("dave", b"second line")


def test_adduser_of_an_existing_name_fails(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    before = users.read_text()
    result = manage(users, "adduser", "alice", stdin="other\n")
    assert result.returncode != 0
    assert "alice" in result.stderr and "passwd" in result.stderr
    assert "Traceback" not in result.stderr
    assert users.read_text() == before


@pytest.mark.parametrize("name", ["Alice", "ALICE"])
def test_adduser_refuses_a_name_that_differs_only_by_case(tmp_path: Path, name: str) -> None:
    """Mail addresses ignore case: Alice@localhost must not be a second mailbox beside alice's."""
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    before = users.read_text()
    result = manage(users, "adduser", name, stdin="other\n")
    assert result.returncode == 2
    assert f"user {name!r} exists already as 'alice'" in result.stderr
    assert "Traceback" not in result.stderr
    assert users.read_text() == before


@pytest.mark.parametrize("name", [".hidden", "-dash", "../evil", "n" * 65])
def test_adduser_refuses_a_bad_name(tmp_path: Path, name: str) -> None:
    users = tmp_path / "users.txt"
    result = manage(users, "adduser", name, stdin="password\n")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert not users.exists() or name not in users.read_text()


@pytest.mark.parametrize("name", ["_x", "first.last-" + "n" * 53])
def test_adduser_accepts_a_good_name(tmp_path: Path, name: str) -> None:
    users = tmp_path / "users.txt"
    assert manage(users, "adduser", name, stdin="password\n").returncode == 0
    assert name in UserStore(users)


def test_adduser_refuses_an_empty_password(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    result = manage(users, "adduser", "dave", stdin="")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert not users.exists() or "dave" not in users.read_text()


def test_passwd(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password", "bob": "bob-password"})
    assert manage(users, "passwd", "alice", stdin="new-password\n").returncode == 0
    store = UserStore(users)
    assert store.check("alice", b"new-password")
    assert not store.check("alice", b"alice-password")
    assert store.check("bob", b"bob-password")


def test_passwd_of_an_unknown_user_fails(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    before = users.read_text()
    result = manage(users, "passwd", "nobody", stdin="pw\n")
    assert result.returncode != 0
    assert "nobody" in result.stderr and "Traceback" not in result.stderr
    assert users.read_text() == before


def test_deluser_keeps_the_mailbox_and_says_so(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password", "bob": "bob-password"})
    store_message(MailboxStore(tmp_path / "mailboxes"), "bob", b"bob's mail\n")
    result = manage(users, "deluser", "bob")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"deleted bob from {users}; the mailbox {tmp_path / 'mailboxes' / 'bob'} is kept"
        " (a new bob gets it only with adduser --take-over-mailbox)\n"
    )
    store = UserStore(users)
    assert "bob" not in store and store.check("alice", b"alice-password")
    assert len(MailboxStore(tmp_path / "mailboxes").sent_messages("bob")) == 1


@pytest.mark.parametrize("name", ["bob", "Bob"])
def test_a_reused_name_does_not_inherit_the_old_accounts_mail(tmp_path: Path, name: str) -> None:
    """Issue 18: deluser bob, adduser bob; the new bob must not read the old bob's inbox or Sent."""
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password", "bob": "bob-password"})
    store = MailboxStore(tmp_path / "mailboxes")
    store_message(store, "bob", b"the old bob's sent mail\n")
    assert manage(users, "deluser", "bob").returncode == 0
    result = manage(users, "adduser", name, stdin="new-password\n")
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"error: {tmp_path / 'mailboxes' / 'bob'} holds the mail of an earlier bob: move it out of"
        f" {tmp_path / 'mailboxes'} first, or add --take-over-mailbox to give it to the new {name}\n"
    )
    assert name not in UserStore(users)
    taken = manage(users, "adduser", "bob", "--take-over-mailbox", stdin="new-password\n")
    assert taken.returncode == 0, taken.stderr
    assert UserStore(users).check("bob", b"new-password")
    assert len(store.sent_messages("bob")) == 1  # told to: the mailbox is the new bob's


def test_deluser_names_no_mailbox_that_does_not_exist(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password", "bob": "bob-password"})
    result = manage(users, "deluser", "bob")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"deleted bob from {users}; bob had no mailbox in {tmp_path / 'mailboxes'}\n"


def test_deluser_does_not_ask(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    result = manage(users, "deluser", "alice", stdin="")  # nothing to answer with
    assert result.returncode == 0
    assert "alice" not in UserStore(users)


# ------------------------------------------------------------- clear (issue 21, item 9)


def clear(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("--mailboxes", str(tmp_path / "mailboxes"), "clear", *args)


def mail_for_bob(tmp_path: Path) -> MailboxStore:
    """Two messages in bob's inbox and one in his Sent folder; mail of alice's too."""
    store = MailboxStore(tmp_path / "mailboxes")
    for text in (b"one\n", b"two\n"):
        deliver(store, "bob", text, sender="alice")
    store_message(store, "bob", b"bob's own\n")
    return store


@pytest.mark.parametrize(
    ("option", "inbox_left", "sent_left", "said"),
    [
        ((), 0, 0, "2 messages from the inbox and 1 message from the Sent folder"),
        (("--inbox",), 0, 1, "2 messages from the inbox"),
        (("--sent",), 2, 0, "1 message from the Sent folder"),
    ],
)
def test_clear_empties_the_folders_asked_and_counts_them(
    tmp_path: Path, option: tuple[str, ...], inbox_left: int, sent_left: int, said: str
) -> None:
    store = mail_for_bob(tmp_path)
    result = clear(tmp_path, "bob", *option)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cleared bob in {tmp_path / 'mailboxes'}: {said}\n"
    assert len(inbox_of(tmp_path / "mailboxes" / "bob")) == inbox_left
    assert len(store.sent_messages("bob")) == sent_left
    assert len(store.sent_messages("alice")) == 2  # nobody else's mail


def test_clear_refuses_while_pop3_has_the_inbox_open(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    mail_for_bob(tmp_path)
    server = server_process()
    session = POP3Session("127.0.0.1", server.pop3_port)
    try:
        assert session.read_line().startswith("+OK")
        session.login("bob")
        result = clear(tmp_path, "bob")
        assert result.returncode == 2
        assert result.stderr.endswith(
            "error: bob's inbox is open in a POP3 session now: try again when it ends "
            "(--sent empties the Sent folder alone)\n"
        )
        assert len(inbox_of(tmp_path / "mailboxes" / "bob")) == 2  # nothing removed, the Sent folder neither
        assert len(MailboxStore(tmp_path / "mailboxes").sent_messages("bob")) == 1
        assert clear(tmp_path, "bob", "--sent").returncode == 0  # the Sent folder is no POP3 session's
        assert session.status("STAT") == "+OK 2 10"  # the session goes on with its messages
        assert session.status("QUIT").startswith("+OK")
    finally:
        session.close()
    result = clear(tmp_path, "bob", "--inbox")
    assert result.stdout.endswith(": 2 messages from the inbox\n"), result.stderr


def test_a_pop3_login_waits_out_a_clear_in_progress(tmp_path: Path, pop3_server: RunningServer) -> None:
    """The lock works both ways: while clear holds the inbox (here: a process holding it), POP3 says [IN-USE]."""
    deliver(MailboxStore(pop3_server.mailboxes_path), "alice", b"waiting\n")
    held = hold_inbox(pop3_server.mailboxes_path / "alice")
    assert held is not None
    session = POP3Session("127.0.0.1", pop3_server.pop3_port)
    try:
        assert session.read_line().startswith("+OK")
        assert session.status("USER alice").startswith("+OK")
        assert session.status(f"PASS {USERS['alice']}").startswith("-ERR [IN-USE]")
    finally:
        session.close()
        held.release()


@pytest.mark.parametrize(("name", "error"), [("zed", "zed has no mailbox in"), ("../bob", "bad username '../bob'")])
def test_clear_of_no_mailbox_says_so(tmp_path: Path, name: str, error: str) -> None:
    mail_for_bob(tmp_path)
    result = clear(tmp_path, name)
    assert result.returncode == 2
    assert error in result.stderr and "Traceback" not in result.stderr
    assert len(inbox_of(tmp_path / "mailboxes" / "bob")) == 2


def test_deluser_of_an_unknown_user_fails(tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "users.txt", {"alice": "alice-password"})
    result = manage(users, "deluser", "nobody")
    assert result.returncode != 0
    assert "nobody" in result.stderr and "Traceback" not in result.stderr


def test_user_commands_default_to_users_txt_in_the_working_directory(tmp_path: Path) -> None:
    result = run("adduser", "dave", "--rounds", "4", stdin="pw\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert UserStore(tmp_path / "users.txt").check("dave", b"pw")


def test_running_server_notices_an_added_user(server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    users = write_users_file(tmp_path / "live-users.txt", {"alice": "alice-password"})
    process = server_process(*PATIENT, users=users)
    assert not can_log_in(process.port, "dave", "dave-password")
    assert manage(users, "adduser", "dave", stdin="dave-password\n").returncode == 0
    wait_for(lambda: can_log_in(process.port, "dave", "dave-password"), timeout=5)


def test_running_server_notices_a_changed_password(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    users = write_users_file(tmp_path / "live-users.txt", {"alice": "alice-password"})
    process = server_process(*PATIENT, users=users)
    assert manage(users, "passwd", "alice", stdin="changed\n").returncode == 0
    wait_for(lambda: can_log_in(process.port, "alice", "changed"), timeout=5)
    assert not can_log_in(process.port, "alice", "alice-password")


def test_an_edit_of_users_txt_is_logged_within_about_a_second_without_a_login(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    users = write_users_file(tmp_path / "live-users.txt", {"alice": "alice-password"})
    process = server_process(users=users)
    assert manage(users, "adduser", "dave", stdin="dave-password\n").returncode == 0
    wait_for(lambda: f"reloaded {users}: 2 accounts" in process.log, timeout=5)
    users.write_text(users.read_text() + "broken line\n")
    wait_for(lambda: f"{users}:4: expected name:bcrypt-hash; keeping the previous 2 accounts" in process.log, timeout=5)
    assert "login" not in process.log and "connected" not in process.log


def test_running_server_refuses_a_remembered_password_right_after_passwd(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The auth cache knows alice's old password, yet the login right after passwd sees the new hash."""
    users = write_users_file(tmp_path / "live-users.txt", {"alice": "alice-password", "bob": "bob-password"})
    process = server_process(*PATIENT, users=users)
    assert can_log_in(process.port, "alice", "alice-password")
    assert can_log_in(process.port, "bob", "bob-password")
    assert manage(users, "passwd", "alice", stdin="changed\n").returncode == 0
    assert not can_log_in(process.port, "alice", "alice-password")
    assert manage(users, "deluser", "bob").returncode == 0
    assert not can_log_in(process.port, "bob", "bob-password")
    assert can_log_in(process.port, "alice", "changed")


def test_a_negative_auth_cache_ttl_is_a_usage_error(tmp_path: Path) -> None:
    result = run("--auth-cache-ttl", "-1", "--users", str(tmp_path / "users.txt"))
    assert result.returncode == 2
    assert "--auth-cache-ttl must be 0 (off) or more seconds" in result.stderr
    assert "Traceback" not in result.stderr


def test_running_server_keeps_the_accounts_after_a_malformed_edit(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    users = write_users_file(tmp_path / "live-users.txt", {"alice": "alice-password"})
    process = server_process(*PATIENT, users=users)
    users.write_text(users.read_text() + "broken line\n")
    # The file is looked at when an account is: log in until the error shows in the log.
    wait_for(lambda: can_log_in(process.port, "alice", "alice-password") and f"{users}:3" in process.log, timeout=5)
    assert process.process.poll() is None


# -------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_cleanly(tmp_path: Path, shared_users_file: Path, signum: int) -> None:
    with running_server(tmp_path, shared_users_file) as (process, log_path):
        process.send_signal(signum)
        assert process.wait(timeout=5) == 0
    log = log_path.read_text()
    assert "Traceback" not in log, log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_open_sessions(tmp_path: Path, shared_users_file: Path, signum: int) -> None:
    """Sessions in flight are finished or dropped within a couple of seconds, then exit 0."""
    with running_server(tmp_path, shared_users_file) as (process, log_path):
        port = port_of(log_path.read_text())
        idle, busy = RawSession("127.0.0.1", port), RawSession("127.0.0.1", port)
        try:
            idle.read_reply()
            busy.read_reply()
            busy.login()
            busy.start_data()
            busy.send("half a message\r\n")
            process.send_signal(signum)
            assert process.wait(timeout=5) == 0
            assert idle.closed_by_server() and busy.closed_by_server()
        finally:
            idle.close()
            busy.close()
    assert "Traceback" not in log_path.read_text()
    assert MailboxStore(tmp_path / "mb").sent_messages("alice") == []  # the unfinished message was not stored


# ---------------------------------------------------------------------------- the log


def test_verbose_logs_the_dialogue_with_auth_masked(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process("--verbose")
    token = base64.b64encode(b"\0alice\0alice-password").decode()
    user, password = base64.b64encode(b"bob").decode(), base64.b64encode(b"bob-password").decode()
    first, second = RawSession("127.0.0.1", process.port), RawSession("127.0.0.1", process.port)
    try:
        first.read_reply()
        first.ehlo()
        first.expect(f"""
            C: AUTH PLAIN {token}
            S: 235 *
            C: NOOP
            S: 250 *
        """)
        second.read_reply()
        second.expect(f"""
            C: HELO client.test
            S: 250 *
            C: AUTH LOGIN
            S: 334 *
            C: {user}
            S: 334 *
            C: {password}
            S: 235 *
            C: QUIT
            S: 221 *
        """)
    finally:
        first.close()
        second.close()
    wait_for(lambda: "S: 221" in process.log)
    log = process.log
    assert re.search(r"C: EHLO client\.test", log)
    assert re.search(r"S: 250-mail\.test", log)
    assert re.search(r"C: NOOP", log) and re.search(r"S: 235", log)
    assert "C: AUTH PLAIN" in log
    for secret in (token, user, password, "alice-password", "bob-password"):
        assert secret not in log


def test_verbose_logs_the_message_lines_too(server_process: Callable[..., ServerProcess]) -> None:
    """The whole dialogue: the lines after DATA's 354 and RETR's blocks are part of it."""
    process = server_process("--verbose")
    with smtplib.SMTP("127.0.0.1", process.port, timeout=10) as client:
        client.login("alice", USERS["alice"])
        client.sendmail("a@x.org", ["b@y.org"], "Subject: projected\r\n\r\n.dotted body line\r\n")
        assert client.docmd("RETR")[0] == 250
        block = [client.file.readline() for _ in range(4)]
        assert block[-1] == b".\r\n"
    wait_for(lambda: "S: 221" in process.log)
    log = process.log
    for sent in ("C: Subject: projected", "C: ..dotted body line", "C: ."):
        assert re.search(rf"{re.escape(sent)}$", log, re.MULTILINE), sent
    for received in ("S: Subject: projected", "S: ..dotted body line", "S: ."):
        assert re.search(rf"{re.escape(received)}$", log, re.MULTILINE), received


def test_log_without_verbose(server_process: Callable[..., ServerProcess]) -> None:
    """Connect, login success and failure, stored message, disconnect; never a password or AUTH payload."""
    process = server_process()
    with smtplib.SMTP("127.0.0.1", process.port, timeout=10) as client:
        client.login("alice", USERS["alice"])
        client.sendmail("a@x.org", ["b@y.org"], "Subject: hi\r\n\r\nhello\r\n")
    failed = smtplib.SMTP("127.0.0.1", process.port, timeout=10)
    with pytest.raises(smtplib.SMTPException):
        failed.login("bob", "secret-wrong-password")
    failed.close()
    wait_for(lambda: process.log.count("disconnected") >= 2)
    log = process.log
    assert "C: " not in log  # no dialogue without --verbose
    assert re.search(r"login.*alice", log) and re.search(r"login failed.*bob", log)
    assert "stored" in log
    for secret in ("alice-password", "secret-wrong-password", base64.b64encode(b"\0alice\0alice-password").decode()):
        assert secret not in log


# ------------------------------------------------- the options, --classroom, and a port that cannot be had


def test_every_option_has_help_text() -> None:
    for action in server_module.build_parser()._actions:
        if action.option_strings:  # "(default ...)" alone is no help
            assert re.sub(r"\(default [^)]*\)$", "", action.help or "").strip(), action.option_strings


def config_of(*argv: str) -> ServerConfig:
    parser = server_module.build_parser()
    return server_module.config_from(server_module.parse_arguments(parser, list(argv)), parser)


def test_classroom_preset() -> None:
    config = config_of("--classroom")
    assert config.timeout == 30 * 60  # a student may listen to the teacher for half an hour
    assert config.pop3_timeout == config.timeout  # issue 21, item 11: between two looks at the inbox too
    assert config.who_interval == 5 * 60
    assert config.max_login_failures == 5 and config.max_login_failures_per_ip == 30
    assert config.verbose


def test_without_classroom_the_defaults_stay() -> None:
    assert config_of() == ServerConfig()


@pytest.mark.parametrize(
    "argv", [["--classroom", "--timeout", "600", "--no-verbose"], ["--timeout", "600", "--no-verbose", "--classroom"]]
)
def test_options_given_win_over_the_classroom_preset(argv: list[str]) -> None:
    config = config_of(*argv)
    assert config.timeout == 600 and not config.verbose
    assert config.max_login_failures == CLASSROOM["max_login_failures"]


def test_every_classroom_setting_is_an_option() -> None:
    assert set(CLASSROOM) <= {field.name for field in options()}


def test_classroom_help_lists_the_settings() -> None:
    [classroom] = [action for action in server_module.build_parser()._actions if "--classroom" in action.option_strings]
    assert "--timeout 1800 --pop3-timeout 1800 --max-login-failures 5" in classroom.help
    assert "--max-login-failures-per-ip 30 --verbose --who-interval 300" in classroom.help


def test_the_classroom_guide_spells_the_preset_out() -> None:
    preset = " ".join(server_module.flag_for(name, value) for name, value in CLASSROOM.items())
    assert f"`--classroom` stands for `{preset}`" in (ROOT / "docs" / "classroom.md").read_text()


def test_classroom_reaches_the_running_server(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process("--classroom")
    session = RawSession("127.0.0.1", process.port)
    try:
        session.read_reply()
        session.command("NOOP")
    finally:
        session.close()
    wait_for(lambda: re.search(r"127\.0\.0\.1:\d+ C: NOOP", process.log))  # --verbose came with it


def test_who_interval_logs_who_is_logged_in_per_protocol(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 21, item 9: one line a teacher can find in the projected log, every --who-interval seconds."""
    server = start_server(pop3=True, who_interval=0.1)
    with caplog.at_level(logging.INFO, logger="mailserver"):
        wait_for(lambda: "logged in now: nobody; 0 sessions open" in caplog.text)
        smtp, pop3, idle = RawSession("127.0.0.1", server.port), POP3Session("127.0.0.1", server.pop3_port), None
        try:
            smtp.read_reply()
            smtp.login("alice")
            assert pop3.read_line().startswith("+OK")
            pop3.login("bob")
            idle = RawSession("127.0.0.1", server.port)  # connected, not logged in: counted as open only
            wait_for(lambda: "logged in now: SMTP 1 (alice), POP3 1 (bob); 3 sessions open" in caplog.text)
        finally:
            for session in (smtp, pop3, idle):
                if session is not None:
                    session.close()


def test_a_port_in_use_is_named(tmp_path: Path, shared_users_file: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run("--port", str(port), "--users", str(shared_users_file), "--mailboxes", str(tmp_path / "mb"))
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"server.py: error: cannot listen on 127.0.0.1:{port}: the port is in use "
        "(is another server running? stop it, or choose another --port)\n"
    )
    assert "Traceback" not in result.stderr


def test_a_tls_port_in_use_is_named_as_such(tmp_path: Path, shared_users_file: Path, certificate: Certificate) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        tls = ["--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key), "--tls-port", str(port)]
        result = run("--port", "0", *tls, "--users", str(shared_users_file), "--mailboxes", str(tmp_path / "mb"))
    assert result.returncode == 2
    assert result.stderr.endswith(f"127.0.0.1:{port}: the port is in use (is another server running? stop it, "
                                  "or choose another --tls-port)\n")  # fmt: skip


def test_a_port_out_of_range(tmp_path: Path, shared_users_file: Path) -> None:
    result = run("--port", "70000", "--users", str(shared_users_file), "--mailboxes", str(tmp_path / "mb"))
    assert result.returncode == 2
    assert result.stderr.endswith(
        "server.py: error: cannot listen on 127.0.0.1:70000: a port is a number from 0 to 65535 (check --port)\n"
    )


def test_permission_denied_names_the_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_users_file: Path
) -> None:
    """Ports below 1024 need root on Linux and macOS; the test runs as anyone, so the refusal is played."""

    def refuse(listener: socketserver.TCPServer) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socketserver.TCPServer, "server_bind", refuse)
    monkeypatch.setattr(threading, "stack_size", lambda size=0: 0)  # leave this process's threads as they are
    config = ServerConfig(port=25, users=str(shared_users_file), mailboxes=str(tmp_path / "mb"))
    with pytest.raises(OSError) as refused:
        server_module.start(config)
    assert str(refused.value) == (
        "cannot listen on 127.0.0.1:25: permission denied "
        "(ports below 1024 need administrator rights: choose --port 1024 or above)"
    )
