"""Abuse: one bad client never takes the service from the others, and no secret leaks.

Issue 4: the login throttle (per name and address since issue 13; its races and rules are
in test_attacks.py), the connection caps (total and per address), the ceiling on how long
one command line or one DATA may take, the error limit, and
"the captured server log contains no password and no AUTH payload; users.txt contains
no plaintext". The second address of a test is another loopback address, 127.0.0.2.
"""

from __future__ import annotations

import base64
import re
import select
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, USERS, RawSession, RunningServer, ServerProcess, plain_response, wait_for

ATTACKER, BYSTANDER = "127.0.0.2", "127.0.0.1"
SLOW_SECONDS = 10.0  # a slow client gives up by itself after this long
MAX_ERRORS = 10  # issue 2: the 10th 5xx reply of a session is followed by 421 and the close
USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")  # issue 2's rule for names
BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


@pytest.fixture
def connect_from() -> Iterator[Callable[[RunningServer, str], RawSession]]:
    """connect_from(server, address) opens a session from address; the greeting is left unread."""
    sessions: list[RawSession] = []

    def open_session(server: RunningServer, source: str) -> RawSession:
        session = RawSession(server.host, server.port, source_address=source)
        sessions.append(session)
        return session

    yield open_session
    for session in sessions:
        session.close()


def try_login(session: RawSession, password: str) -> int:
    """EHLO and AUTH PLAIN as alice; return AUTH's reply code."""
    assert session.read_reply()[0] == 220
    assert session.command("EHLO client.test")[0] == 250
    return session.command(f"AUTH PLAIN {plain_response('alice', password)}")[0]


def handler_threads() -> int:
    return sum(thread.name.endswith("(process_request_thread)") for thread in threading.enumerate())


# ------------------------------------------------------------------------- brute force


def test_failed_logins_throttle_the_attacking_address_and_not_another(
    start_server: Callable[..., RunningServer], connect_from: Callable[[RunningServer, str], RawSession]
) -> None:
    server = start_server(max_login_failures=3, login_failure_window=60)
    for _ in range(3):
        attacker = connect_from(server, ATTACKER)
        assert try_login(attacker, "guess") == 535
        assert attacker.closed_by_server()
    # Now even the right password for that name is refused from that address, without a bcrypt check ...
    for password in ("guess", USERS["alice"]):
        assert try_login(connect_from(server, ATTACKER), password) == 454
    # ... while another address logs in as usual, as the same user.
    assert try_login(connect_from(server, BYSTANDER), USERS["alice"]) == 235


def test_the_throttle_lets_the_address_in_again_after_the_window(
    start_server: Callable[..., RunningServer], connect_from: Callable[[RunningServer, str], RawSession]
) -> None:
    server = start_server(max_login_failures=2, login_failure_window=1.0)
    for _ in range(2):
        assert try_login(connect_from(server, ATTACKER), "guess") == 535
    assert try_login(connect_from(server, ATTACKER), USERS["alice"]) == 454
    wait_for(lambda: try_login(connect_from(server, ATTACKER), USERS["alice"]) == 235, timeout=5, interval=0.2)


# ------------------------------------------------------------------------- connection caps


def test_connections_over_the_caps_get_421_and_no_handler(
    start_server: Callable[..., RunningServer], connect_from: Callable[[RunningServer, str], RawSession]
) -> None:
    server = start_server(max_connections=5, max_connections_per_ip=3)
    flood = [connect_from(server, ATTACKER) for _ in range(3)]
    for session in flood:
        assert session.read_reply()[0] == 220
    threads = handler_threads()

    over_per_address = connect_from(server, ATTACKER)
    code, text = over_per_address.read_reply()
    assert code == 421, text
    assert over_per_address.closed_by_server()

    # The flood from one address does not starve the others ...
    others = [connect_from(server, BYSTANDER) for _ in range(2)]
    for session in others:
        assert session.read_reply()[0] == 220
        assert session.command("NOOP")[0] == 250
    # ... up to the total cap.
    over_total = connect_from(server, "127.0.0.3")
    code, text = over_total.read_reply()
    assert code == 421, text
    assert over_total.closed_by_server()
    assert handler_threads() <= threads + 2, "a refused connection got a handler thread"

    # A closed session frees its slot.
    flood[0].command("QUIT")
    flood[0].close()

    def admitted() -> bool:
        session = connect_from(server, ATTACKER)
        return session.read_reply()[0] == 220

    wait_for(admitted, timeout=5, interval=0.05)


# ------------------------------------------------------------------------- slow clients


def trickle(session: RawSession, chunks: list[bytes], every: float, started: float) -> tuple[float, bytes]:
    """Send one chunk every `every` seconds until the server answers or closes (or SLOW_SECONDS pass).

    Return how long after `started` the server stopped us, and what it said.
    """
    for chunk in chunks:
        if time.monotonic() - started > SLOW_SECONDS:
            break
        try:
            session.send(chunk)
        except OSError:
            break  # the server hung up
        readable, _, _ = select.select([session.sock], [], [], every)  # the server's answer, or the pace
        if readable:
            break
    elapsed = time.monotonic() - started
    session.sock.settimeout(2)
    try:
        return elapsed, session.file.readline(1000)
    except OSError:
        return elapsed, b""


def test_a_one_byte_at_a_time_command_line_is_cut_off_at_the_timeout_and_frees_its_slot(
    start_server: Callable[..., RunningServer], connect_from: Callable[[RunningServer, str], RawSession]
) -> None:
    # A byte every 0.4 s never lets the 1.5 s idle timeout expire: only the ceiling on a whole
    # command line (the server's watchdog) can end this.
    server = start_server(timeout=1.5, max_connections=1)
    slow = connect_from(server, ATTACKER)
    assert slow.read_reply()[0] == 220
    started = time.monotonic()  # the server starts the clock of the first command line here
    waiting = connect_from(server, BYSTANDER)
    assert waiting.read_reply()[0] == 421  # the slow client holds the only slot

    elapsed, said = trickle(slow, [b"N", b"O", b"O", b"P", b" ", *[b"x"] * 100], every=0.4, started=started)
    assert said.startswith(b"421 "), said
    assert 1.2 <= elapsed <= 3.0, f"cut off after {elapsed:.1f} s, the ceiling is 1.5 s"
    assert slow.closed_by_server()

    def admitted() -> bool:
        session = connect_from(server, BYSTANDER)
        return session.read_reply()[0] == 220

    wait_for(admitted, timeout=5, interval=0.05)


def test_a_slow_data_transfer_is_cut_off_at_the_data_timeout(
    start_server: Callable[..., RunningServer], connect_from: Callable[[RunningServer, str], RawSession]
) -> None:
    # A line every 0.3 s keeps each read within the 1 s timeout; only data_timeout ends it.
    server = start_server(timeout=1, data_timeout=2)
    slow = connect_from(server, ATTACKER)
    slow.read_reply()
    slow.login()
    slow.start_data()
    started = time.monotonic()
    elapsed, said = trickle(slow, [b"line %d\r\n" % number for number in range(100)], every=0.3, started=started)
    assert said.startswith(b"421 "), said
    assert 1.7 <= elapsed <= 3.5, f"cut off after {elapsed:.1f} s, data_timeout is 2 s (the idle timeout 1 s)"
    assert slow.closed_by_server()
    assert server.stored("alice") == []
    assert not list(server.mailboxes_path.glob("*/tmp/*")), "the cut-off delivery was left in tmp/"


# ------------------------------------------------------------------------- error limit


def test_the_tenth_error_of_a_session_is_followed_by_421_and_the_close(logged_in: RawSession) -> None:
    # Any 5xx counts: unknown verbs, syntax errors, bad sequences, bad HELP topics.
    mistakes = ["XYZZY", "MAIL FROM:nobody", "RCPT TO:<x@y.example>", "HELP FLY", "DATA", "RETR now"]
    mistakes += ["HELO", "MAIL FROM:<a@b.example> COLOR=red", "VRFY"]
    assert len(mistakes) == MAX_ERRORS - 1
    for mistake in mistakes:
        code, text = logged_in.command(mistake)
        assert 500 <= code < 600, f"{mistake}: {code} {text}"
        assert logged_in.command("NOOP")[0] == 250  # successes do not wipe the slate
    logged_in.send("XYZZY\r\n")
    assert logged_in.read_reply()[0] == 500
    assert logged_in.read_reply()[0] == 421
    assert logged_in.closed_by_server()


# ------------------------------------------------------------------------- secrets


def test_the_log_shows_no_password_and_no_auth_payload(server_process: Callable[..., ServerProcess]) -> None:
    server = server_process("--verbose")
    alice, carol = USERS["alice"], USERS["carol"]
    secrets = {alice, carol, "hunter2-wrong", "typed-in-the-name-field"}
    payloads = {
        plain_response("alice", alice),
        plain_response("bob", "hunter2-wrong"),
        plain_response("typed-in-the-name-field", "x"),
    }
    payloads |= {base64.b64encode(text.encode()).decode() for text in ("alice", alice, "carol", carol)}  # LOGIN's

    def session() -> RawSession:
        opened = RawSession("127.0.0.1", server.port)
        assert opened.read_reply()[0] == 220
        assert opened.command("EHLO secrets.test")[0] == 250
        return opened

    with smtplib.SMTP("127.0.0.1", server.port) as client:  # PLAIN with an initial response
        client.login("alice", alice)
        client.sendmail("alice@example.org", ["bob@example.org"], "Subject: hi\r\n\r\nhello\r\n")
    login = session()  # LOGIN with both answers after 334s
    assert login.command("AUTH LOGIN")[0] == 334
    assert login.command(base64.b64encode(b"carol").decode())[0] == 334
    assert login.command(base64.b64encode(carol.encode()).decode())[0] == 235
    assert login.command("RETR")[0] == 250
    login.close()
    initial = session()  # LOGIN with the username as initial response
    assert initial.command(f"AUTH LOGIN {base64.b64encode(b'alice').decode()}")[0] == 334
    assert initial.command(base64.b64encode(alice.encode()).decode())[0] == 235
    initial.close()
    for payload in (plain_response("bob", "hunter2-wrong"), plain_response("typed-in-the-name-field", "x")):  # failures
        failed = session()
        assert failed.command(f"AUTH PLAIN {payload}")[0] == 535
        failed.close()
    server.stop()
    wait_for(lambda: "stopped" in server.log)  # all of it collected

    log = server.log
    assert "C: AUTH PLAIN" in log and "login alice" in log and "login carol" in log  # it did log the dialogue
    for secret in sorted(secrets | payloads):
        assert secret not in log, f"the log shows {secret!r}"


def test_users_txt_holds_bcrypt_hashes_only(tmp_path: Path) -> None:
    # The shipped file: every account line is name:bcrypt-hash, and the README's demo passwords are not in it.
    shipped = (ROOT / "users.txt").read_text()
    accounts = [line for line in shipped.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert accounts
    for line in accounts:
        name, _, hashed = line.strip().partition(":")
        assert USERNAME.fullmatch(name) and BCRYPT_HASH.fullmatch(hashed), line
    demo_passwords = re.findall(r"^\|\s*[A-Za-z0-9._-]+\s*\|\s*(\S+)\s*\|$", (ROOT / "README.md").read_text(), re.M)
    for password in demo_passwords:
        if set(password) - set("-:"):  # not the table's header rule
            assert password not in shipped

    # A file written by `server.py adduser`: the hash is there, the password is not.
    users = tmp_path / "users.txt"
    subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--users", str(users), "adduser", "dave", "--rounds", "4"],
        input="correct horse battery staple\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )
    written = users.read_text()
    assert "correct horse" not in written
    name, _, hashed = written.strip().partition(":")
    assert name == "dave" and BCRYPT_HASH.fullmatch(hashed)
