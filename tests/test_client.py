"""client.py end to end: the real server on port 0, the client as a real process.

Most tests pipe a script into `python client.py`, as a class's scripts do; the
pseudo-terminal tests at the end type into it as a person does, so the getpass
path runs.  Each script is the answers in order, e.g. LOGIN + QUIT logs in
and quits.
"""

from __future__ import annotations

import base64
import poplib
import re
import signal
import smtplib
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    TIMEOUT,
    USERS,
    Certificate,
    ClientProcess,
    Result,
    RunningServer,
    ServerProcess,
    Terminal,
    run_client,
    wait_for,
)

sys.path.insert(0, str(ROOT))
import client as client_module

LOGIN = "alice\nalice-password\n"
# The menu's choices, as typed.
INBOX, RETRIEVE, DELETE, QUIT = "2\n", "3\n", "4\n", "5\n"
GREETING = "Grüße, 你好"
MENU_PROMPT = "Choose: "
TRACE_LINE = re.compile(r"(?:[CS]: .*|[CS]:$|   \(\d+ more lines? not shown\))$", re.MULTILINE)


def send_script(to: str, subject: str, body: list[str], sender: str = "") -> str:
    """The answers of menu choice 1, the body ended by a "." line."""
    return "1\n" + "\n".join([sender, to, subject, *body, "."]) + "\n"


def deliver(server: RunningServer, message: EmailMessage | str, user: str = "alice") -> None:
    """Store a message for user through smtplib, as any SMTP client would."""
    with smtplib.SMTP(server.host, server.port, local_hostname="test.local") as smtp:
        smtp.login(user, USERS[user])
        if isinstance(message, str):
            smtp.sendmail(f"{user}@mail.test", ["bob@example.org"], message)
        else:
            smtp.send_message(message)


def trace_lines(stdout: str) -> list[str]:
    """The C:/S: lines of a trace; on a pipe a prompt may stand in front of one."""
    return [match[0] for match in TRACE_LINE.finditer(stdout)]


def shown_message(stdout: str, number: int = 1) -> str:
    """The block the client printed for message number, up to the next menu."""
    block = stdout.split(f"--- Message {number} ---\n", 1)[1]
    return block.split("\n\n  1. Send a message", 1)[0].split(f"\n\n--- Message {number + 1} ---", 1)[0]


# --- logging in --------------------------------------------------------------------


def test_login_and_quit(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + QUIT)
    assert result.returncode == 0
    assert result.stdout.startswith("220 mail.test Service ready\nUsername: Password: Logged in as alice.\n")
    assert result.stdout.endswith("Choose: 221 mail.test Service closing transmission channel\n")
    assert result.stderr == ""  # no getpass warning on a pipe, no traceback


def test_user_option_asks_only_the_password(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, "bob-password\n" + QUIT, "--user", "bob")
    assert result.returncode == 0
    assert "Username:" not in result.stdout
    assert "Logged in as bob." in result.stdout


def test_wrong_password_then_retry_reconnects(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, "alice\nwrong\n" + LOGIN + QUIT, "--trace")
    assert result.returncode == 0
    assert result.stdout.count("Login failed: wrong username or password.") == 1
    assert "Logged in as alice." in result.stdout
    assert result.stdout.count("S: 220 ") == 2  # the server hung up after the 535: a new connection
    assert result.stderr == ""


def test_three_failed_logins_exit_1(smtp_server: RunningServer) -> None:
    # A fourth, correct, attempt is in the script: it must not be tried.
    result = run_client(smtp_server.port, "alice\nwrong\n" * 3 + LOGIN + QUIT)
    assert result.returncode == 1
    assert result.stdout.count("Login failed: wrong username or password.") == 3
    assert result.stdout.count("Username:") == 3
    assert "Logged in" not in result.stdout
    assert result.stderr == "Login failed 3 times; giving up.\n"


def test_non_ascii_password_is_explained_without_reconnecting(smtp_server: RunningServer) -> None:
    # smtplib sends AUTH data as ASCII only; nothing reaches the server, so the connection stays.
    result = run_client(smtp_server.port, "alice\npässwort\n" + LOGIN + QUIT, "--trace")
    assert result.returncode == 0
    assert "Login failed: smtplib can only send ASCII usernames and passwords." in result.stdout
    assert result.stdout.count("S: 220 ") == 1
    assert "Logged in as alice." in result.stdout


def test_server_full_at_connect(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(max_connections=0)
    result = run_client(server.port, LOGIN + QUIT)
    assert result.returncode == 1
    assert result.stderr == (
        "Connection closed by server: 421 mail.test Too many connections, closing transmission channel\n"
    )


def test_unknown_user_is_a_wrong_login(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, "mallory\nalice-password\n" + LOGIN + QUIT)
    assert result.returncode == 0
    assert result.stdout.count("Login failed: wrong username or password.") == 1


# --- sending -----------------------------------------------------------------------


def test_send_utf8_and_a_body_line_starting_with_a_dot(smtp_server: RunningServer) -> None:
    body = [GREETING, ".hidden line", "..two dots", "end"]
    result = run_client(smtp_server.port, LOGIN + send_script("bob@example.org", GREETING, body) + QUIT, "--trace")
    assert result.returncode == 0, result.stderr
    assert "Sent: 250 OK" in result.stdout
    # RFC 6152: the UTF-8 body goes as 8-bit text, declared in MAIL.
    assert re.search(r"^C: mail FROM:<alice@mail.test> size=\d+ BODY=8BITMIME$", result.stdout, re.MULTILINE)
    [stored] = smtp_server.stored("alice")
    headers, _, stored_body = stored.partition(b"\n\n")
    assert b"From: alice@mail.test\n" in headers  # the default sender: user@server's name
    assert b"To: bob@example.org\n" in headers
    assert b"Subject: =?utf-8?" in headers  # RFC 2047: headers stay ASCII on the wire
    assert b"Message-ID: <" in headers and b"Date: " in headers
    assert stored_body.decode("utf-8") == "\n".join(body) + "\n"  # 8-bit UTF-8, dots as typed


def test_retrieve_shows_exactly_what_was_sent(smtp_server: RunningServer) -> None:
    body = [GREETING, ".hidden line", "..two dots", "", "  indented"]
    script = LOGIN + send_script("bob@example.org, carol@example.org", GREETING, body, sender="me@example.org")
    result = run_client(smtp_server.port, script + RETRIEVE + QUIT)
    assert result.returncode == 0, result.stderr
    assert "You sent 1 message." in result.stdout
    shown = shown_message(result.stdout)
    assert shown.startswith("Date:    ")
    assert "\n".join(shown.splitlines()[1:]) == "\n".join(
        [
            "From:    me@example.org",
            "To:      bob@example.org, carol@example.org",
            f"Subject: {GREETING}",
            "",
            *body,
        ]
    )


def test_a_bare_name_is_a_user_of_the_server(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + send_script("bob, carol@example.org", "hi", ["hi"]) + QUIT, "--trace")
    assert result.returncode == 0, result.stderr
    lines = trace_lines(result.stdout)
    assert "C: rcpt TO:<bob@mail.test>" in lines  # the server's name, from its greeting
    assert "C: rcpt TO:<carol@example.org>" in lines
    assert "C: To: bob@mail.test, carol@example.org" in lines


def test_body_ended_by_end_of_input_is_sent(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + "1\n\nbob@example.org\nhi\nlast line\n")
    assert result.returncode == 0
    assert "Sent: 250 OK" in result.stdout
    [stored] = smtp_server.stored("alice")
    assert stored.endswith(b"\n\nlast line\n")


def test_bad_addresses_are_asked_again(smtp_server: RunningServer) -> None:
    script = LOGIN + "1\nnot an address\n\nbob smith\n,\nbob@example.org\nhi\n.\n" + QUIT
    result = run_client(smtp_server.port, script)
    assert result.returncode == 0
    assert "Not an email address: 'not an address'. Write it as name@domain" in result.stdout
    assert "Not an email address: 'bob smith'." in result.stdout
    assert "At least one recipient is needed." in result.stdout
    assert result.stdout.count("To (comma-separated): ") == 3
    assert len(smtp_server.stored("alice")) == 1


def test_message_over_the_size_limit_is_refused(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(max_message_size=500)
    result = run_client(server.port, LOGIN + send_script("bob@example.org", "big", ["x" * 70] * 10) + QUIT)
    assert result.returncode == 0
    assert "Not sent: 552 " in result.stdout
    assert "221 " in result.stdout  # the session went on to the Quit
    assert server.stored("alice") == []


def test_refused_recipients_are_reported(smtp_server: RunningServer) -> None:
    # The server takes 100 recipients (RFC 5321 4.5.3.1.8) and refuses the 101st with a 452.
    recipients = ", ".join(f"r{number}@example.org" for number in range(101))
    result = run_client(smtp_server.port, LOGIN + send_script(recipients, "many", ["hi"]) + QUIT)
    assert result.returncode == 0
    assert "Sent: 250 OK" in result.stdout
    assert "These recipients were refused:\n  r100@example.org: 452 " in result.stdout


# --- retrieving and deleting ------------------------------------------------------


def test_retrieve_with_no_messages(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + RETRIEVE + QUIT)
    assert result.returncode == 0
    assert "Choose: You have sent no messages (your Sent folder is empty).\n" in result.stdout


def test_retrieve_decodes_mime(smtp_server: RunningServer) -> None:
    quoted = EmailMessage()
    quoted["Subject"] = "quoted"
    quoted.set_content("Café crème\n", cte="quoted-printable")
    mixed = EmailMessage()
    mixed["Subject"] = "=?utf-8?b?" + base64.b64encode("Grüße".encode()).decode() + "?="
    mixed.set_content(f"{GREETING}\n", cte="base64")
    mixed.add_alternative("<p>html</p>", subtype="html")
    mixed.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="notes.pdf")
    for message in (quoted, mixed):
        message["From"], message["To"] = "alice@mail.test", "bob@example.org"
        deliver(smtp_server, message)

    result = run_client(smtp_server.port, LOGIN + RETRIEVE + QUIT)
    assert "You sent 2 messages." in result.stdout
    assert shown_message(result.stdout, 1).endswith("Subject: quoted\n\nCafé crème")
    second = shown_message(result.stdout, 2)
    assert f"Subject: Grüße\n\n{GREETING}\n" in second
    assert "[text/html part not shown]" in second
    assert "[application/pdf part 'notes.pdf' not shown]" in second
    assert "<p>html</p>" not in second and "JVBER" not in second  # named, not dumped


def test_retrieve_hides_terminal_control_characters(smtp_server: RunningServer) -> None:
    deliver(smtp_server, "Subject: trap\r\n\r\nbefore\x1b[2Jafter\r\n")
    result = run_client(smtp_server.port, LOGIN + RETRIEVE + QUIT)
    assert "\x1b" not in result.stdout
    assert "before?[2Jafter" in result.stdout


def test_delete_answered_no_keeps_the_messages(smtp_server: RunningServer) -> None:
    deliver(smtp_server, "Subject: one\r\n\r\n1\r\n")
    deliver(smtp_server, "Subject: two\r\n\r\n2\r\n")
    result = run_client(smtp_server.port, LOGIN + DELETE + "n\n" + QUIT)
    assert result.returncode == 0
    assert "Delete all 2 messages you sent? [y/N] Nothing deleted." in result.stdout
    assert len(smtp_server.stored("alice")) == 2


def test_delete_answered_yes(smtp_server: RunningServer) -> None:
    deliver(smtp_server, "Subject: one\r\n\r\n1\r\n")
    deliver(smtp_server, "Subject: two\r\n\r\n2\r\n")
    deliver(smtp_server, "Subject: bob's\r\n\r\n3\r\n", user="bob")
    result = run_client(smtp_server.port, LOGIN + DELETE + "y\n" + RETRIEVE + QUIT)
    assert result.returncode == 0
    assert "Delete all 2 messages you sent? [y/N] Deleted 2 messages you sent." in result.stdout
    assert "Choose: You have sent no messages (your Sent folder is empty)." in result.stdout  # the retrieve after it
    assert smtp_server.stored("alice") == []
    assert len(smtp_server.stored("bob")) == 1  # only the user's own


def test_delete_with_no_messages_asks_nothing(smtp_server: RunningServer) -> None:
    # If the client asked, it would read the Quit as the answer and not quit.
    result = run_client(smtp_server.port, LOGIN + DELETE + QUIT)
    assert result.returncode == 0
    assert "Choose: You have sent no messages (your Sent folder is empty).\n" in result.stdout
    assert "Delete all" not in result.stdout
    assert "221 " in result.stdout


# --- the inbox (POP3) ----------------------------------------------------------------

LOGIN_BOB = "bob\nbob-password\n"
RECONNECTED = client_module.RECONNECTED


def mail_to(server: RunningServer, user: str, subject: str, body: str = "hello\n") -> None:
    """alice sends a message to user at the server (through smtplib): it lands in user's inbox."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "alice@mail.test", f"{user}@mail.test", subject
    message.set_content(body)
    deliver(server, message)


def run_inbox(server: RunningServer, script: str, *args: str) -> Result:
    """client.py for this server's SMTP and POP3 ports, with script piped in."""
    return run_client(server.port, script, "--pop3-port", str(server.pop3_port), *args)


def test_read_inbox_shows_the_messages_and_deletes_them_on_yes(pop3_server: RunningServer) -> None:
    mail_to(pop3_server, "bob", "first", ".dot\nline\n")
    mail_to(pop3_server, "bob", GREETING, f"{GREETING}\n")
    mail_to(pop3_server, "carol", "not for bob")
    result = run_inbox(pop3_server, LOGIN_BOB + INBOX + "y\n" + INBOX + QUIT)
    assert result.returncode == 0, result.stderr
    assert "Choose: You have 2 messages in your inbox.\n" in result.stdout
    first, second = shown_message(result.stdout, 1), shown_message(result.stdout, 2)
    assert (
        "\n".join(first.splitlines()[1:])
        == "From:    alice@mail.test\nTo:      bob@mail.test\nSubject: first\n\n.dot\nline"
    )
    assert second.endswith(
        f"Subject: {GREETING}\n\n{GREETING}\n\nDelete them from your inbox? [y/N] Deleted 2 messages from your inbox."
    )
    assert "Choose: Your inbox is empty.\n" in result.stdout  # the second look
    assert pop3_server.inbox("bob") == []
    assert len(pop3_server.inbox("carol")) == 1  # only bob's own


@pytest.mark.parametrize("answer", ["n", "", "yes please"])
def test_read_inbox_deletes_nothing_without_a_yes(pop3_server: RunningServer, answer: str) -> None:
    mail_to(pop3_server, "bob", "keep me")
    result = run_inbox(pop3_server, LOGIN_BOB + INBOX + f"{answer}\n" + QUIT)
    assert result.returncode == 0, result.stderr
    assert "Delete it from your inbox? [y/N] Nothing deleted.\n" in result.stdout
    assert len(pop3_server.inbox("bob")) == 1


def test_end_of_input_at_the_question_deletes_nothing(pop3_server: RunningServer) -> None:
    mail_to(pop3_server, "bob", "keep me")
    result = run_inbox(pop3_server, LOGIN_BOB + INBOX, "--trace")
    assert result.returncode == 0
    assert "POP3 C: DELE" not in result.stdout
    assert result.stdout.endswith("C: quit\nS: 221 mail.test Service closing transmission channel\n")
    assert len(pop3_server.inbox("bob")) == 1


def test_read_inbox_with_trace(pop3_server: RunningServer) -> None:
    body = "".join(f"line {number}\n" for number in range(1, 31))
    mail_to(pop3_server, "bob", "long", body)
    result = run_inbox(pop3_server, LOGIN_BOB + INBOX + "y\n" + QUIT, "--trace")
    assert result.returncode == 0, result.stderr
    pop3 = re.findall(r"POP3 [CS]:.*", result.stdout)  # on a pipe, a prompt may stand in front
    assert pop3[:6] == [
        "POP3 S: +OK mail.test POP3 server ready",
        "POP3 C: USER bob",
        "POP3 S: +OK Send your password with PASS",
        "POP3 C: PASS ********",
        "POP3 S: +OK bob has 1 message (" + pop3[4].split("(", 1)[1],
        "POP3 C: UIDL",  # the ids, to delete the very messages shown
    ]
    assert "POP3 C: RETR 1" in pop3 and "POP3 S: line 10" in pop3 and "POP3 S: line 11" not in pop3
    assert "   (20 more lines not shown)" in result.stdout  # the trace is short, the message shown whole
    assert "\n".join(f"line {number}" for number in range(1, 31)) in shown_message(result.stdout)
    assert pop3[-4:] == ["POP3 C: DELE 1", "POP3 S: +OK Message 1 deleted", "POP3 C: QUIT", pop3[-1]]
    smtp = re.findall(r"(?:^|: )([CS]: .*)", result.stdout, re.MULTILINE)  # unmarked, maybe after a prompt
    assert "C: AUTH PLAIN ********" in smtp  # SMTP's lines stay as they were
    assert not [line for line in smtp if line.startswith(("C: USER", "C: PASS", "S: +OK"))]
    for secret in ("bob-password", base64.b64encode(b"bob-password").decode()):
        assert secret not in result.stdout + result.stderr


def test_inbox_unreachable_is_one_line_and_the_menu_goes_on(smtp_server: RunningServer, closed_port: int) -> None:
    result = run_client(smtp_server.port, LOGIN + INBOX + QUIT, "--pop3-port", str(closed_port))
    assert result.returncode == 0
    assert (
        f"Choose: Cannot reach the inbox at 127.0.0.1:{closed_port} — nothing answers there;"
        " is POP3 on another port? (--pop3-port)\n\n  1. Send a message"
    ) in result.stdout
    assert result.stdout.endswith("Choose: 221 mail.test Service closing transmission channel\n")
    assert result.stderr == ""


def test_inbox_at_a_port_that_is_no_pop3(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + INBOX + QUIT, "--pop3-port", str(smtp_server.port))
    assert result.returncode == 0
    assert (
        f"Cannot reach the inbox at 127.0.0.1:{smtp_server.port} — not a POP3 server, it said:"
        " 220 mail.test Service ready\n"
    ) in result.stdout


def test_inbox_in_use(pop3_server: RunningServer) -> None:
    mail_to(pop3_server, "bob", "hi")
    other = poplib.POP3(pop3_server.host, pop3_server.pop3_port, timeout=TIMEOUT)  # bob, elsewhere
    try:
        other.user("bob")
        other.pass_("bob-password")
        result = run_inbox(pop3_server, LOGIN_BOB + INBOX + QUIT)
    finally:
        other.quit()
    assert result.returncode == 0
    assert "Choose: The inbox refused the login: -ERR [IN-USE] " in result.stdout
    assert "221 mail.test" in result.stdout


@pytest.mark.parametrize("mode", ["--starttls", "--tls"])
def test_inbox_over_tls(start_server: Callable[..., RunningServer], certificate: Certificate, mode: str) -> None:
    server = start_server(
        pop3=True, tls_context=certificate.server_context(), implicit_tls=mode == "--tls", require_tls=True
    )
    script = LOGIN + "1\n\nbob\nsealed\nover TLS\n.\n" + QUIT
    assert run_inbox(server, script, mode, "--cafile", str(certificate.cert)).returncode == 0
    result = run_inbox(server, LOGIN_BOB + INBOX + "n\n" + QUIT, mode, "--cafile", str(certificate.cert), "--trace")
    assert result.returncode == 0, result.stderr
    assert ("POP3 C: STLS" in result.stdout) == (mode == "--starttls")
    assert "POP3 S: +OK bob has 1 message" in result.stdout  # require_tls: the login went through TLS
    assert "Subject: sealed\n\nover TLS" in shown_message(result.stdout)


def test_a_yes_after_the_inbox_session_ended_reconnects_and_deletes_only_what_was_shown(
    start_server: Callable[..., RunningServer], client_process: Callable[..., ClientProcess]
) -> None:
    server = start_server(pop3=True, pop3_timeout=1)
    mail_to(server, "bob", "first")
    mail_to(server, "bob", "second")
    client = client_process(server.port, "--pop3-port", str(server.pop3_port))
    client.type(LOGIN_BOB + INBOX)
    wait_for(lambda: "Delete them from your inbox? [y/N] " in client.output())
    # bob thinks too long: the server ends the idle POP3 session. Meanwhile another client
    # deletes the first message and a third arrives, so the numbers shown no longer fit.
    other = wait_for_inbox(server, "bob")
    other.dele(1)
    other.quit()
    mail_to(server, "bob", "arrived meanwhile")
    client.type("y\n" + QUIT)
    result = client.finish()
    assert result.returncode == 0, result.stderr
    assert f"[y/N] {RECONNECTED}\nDeleted 1 message from your inbox.\n" in result.stdout
    [kept] = server.inbox("bob")
    assert b"Subject: arrived meanwhile" in kept


def wait_for_inbox(server: RunningServer, user: str) -> poplib.POP3:
    """Log in to user's inbox as soon as no other session holds it ([IN-USE]); return the session."""
    sessions: list[poplib.POP3] = []

    def logged_in() -> bool:
        session = poplib.POP3(server.host, server.pop3_port, timeout=TIMEOUT)
        session.user(user)
        try:
            session.pass_(USERS[user])
        except poplib.error_proto:  # [IN-USE]
            session.close()
            return False
        sessions.append(session)
        return True

    wait_for(logged_in)
    return sessions[0]


def test_the_readme_demo_alice_sends_to_bob_who_reads_it(pop3_server: RunningServer) -> None:
    sent = run_inbox(
        pop3_server, LOGIN + send_script("bob", "Hello class", ["Hi Bob,", "this is my first message."]) + QUIT
    )
    assert "Sent: 250 OK" in sent.stdout
    read = run_inbox(pop3_server, LOGIN_BOB + INBOX + "y\n" + QUIT)
    assert "You have 1 message in your inbox." in read.stdout
    shown = shown_message(read.stdout)
    assert (
        "From:    alice@mail.test\nTo:      bob@mail.test\nSubject: Hello class\n\nHi Bob,\nthis is my first message.\n"
        in shown
    )
    assert pop3_server.inbox("bob") == []
    assert len(pop3_server.stored("alice")) == 1  # and alice's Sent keeps hers


# --- the menu and the ways a session ends -------------------------------------------


def test_bad_menu_input_lists_the_choices(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + "9\nsend\n\n" + QUIT)
    assert result.returncode == 0
    assert result.stdout.count("Please choose 1, 2, 3, 4 or 5 (q quits too).") == 3
    assert result.stdout.count(MENU_PROMPT) == 4
    assert "221 " in result.stdout


@pytest.mark.parametrize("key", ["q", "Q"])
def test_q_quits_too(smtp_server: RunningServer, key: str) -> None:
    result = run_client(smtp_server.port, LOGIN + f"{key}\n")
    assert result.returncode == 0
    assert result.stdout.endswith("Choose: 221 mail.test Service closing transmission channel\n")


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("", id="username"),
        pytest.param("alice\n", id="password"),
        pytest.param(LOGIN, id="menu"),
        pytest.param(LOGIN + "1\n", id="from"),
        pytest.param(LOGIN + "1\n\n", id="to"),
        pytest.param(LOGIN + "1\n\nbob@example.org\n", id="subject"),
        pytest.param(LOGIN + DELETE, id="delete-confirmation"),
    ],
)
def test_end_of_input_at_a_prompt_quits_cleanly(smtp_server: RunningServer, script: str) -> None:
    deliver(smtp_server, "Subject: keep me\r\n\r\nhi\r\n")
    result = run_client(smtp_server.port, script, "--trace")
    assert result.returncode == 0
    goodbye = "221 mail.test Service closing transmission channel"
    assert result.stdout.endswith(f"C: quit\nS: {goodbye}\n")  # once: the trace's line (issue 21)
    assert result.stderr == ""
    assert len(smtp_server.stored("alice")) == 1  # nothing sent, nothing deleted


def test_server_shutdown_mid_session(smtp_server: RunningServer, client_process: Callable[..., ClientProcess]) -> None:
    client = client_process(smtp_server.port)
    client.type(LOGIN)
    wait_for(lambda: MENU_PROMPT in client.output())
    smtp_server.stop()  # the server says 421 to every open session
    client.type(RETRIEVE)  # the client tries to log in again, and finds nobody
    result = client.finish()
    assert result.returncode == 1
    assert result.stderr == (
        "The server closed the connection, and reconnecting failed: "
        f"Cannot connect to 127.0.0.1:{smtp_server.port} — is the server running?\n"
    )


def test_server_killed_mid_session(
    server_process: Callable[..., ServerProcess], client_process: Callable[..., ClientProcess]
) -> None:
    server = server_process()
    client = client_process(server.port)
    client.type(LOGIN)
    wait_for(lambda: MENU_PROMPT in client.output())
    server.process.kill()  # no 421: the connection just ends
    server.wait()
    client.type(RETRIEVE)
    result = client.finish()
    assert result.returncode == 1
    assert result.stderr == (
        "The server closed the connection, and reconnecting failed: "
        f"Cannot connect to 127.0.0.1:{server.port} — is the server running?\n"
    )


def test_ctrl_c_on_a_pipe_quits_with_130(
    smtp_server: RunningServer, client_process: Callable[..., ClientProcess]
) -> None:
    client = client_process(smtp_server.port)
    client.type(LOGIN)
    wait_for(lambda: MENU_PROMPT in client.output())
    client.process.send_signal(signal.SIGINT)
    result = client.finish()
    assert result.returncode == 130
    assert result.stdout.endswith("221 mail.test Service closing transmission channel\n")
    assert result.stderr == ""


def test_cannot_connect(closed_port: int) -> None:
    result = run_client(closed_port, LOGIN + QUIT)
    assert result.returncode == 1
    assert result.stderr == f"Cannot connect to 127.0.0.1:{closed_port} — is the server running?\n"
    assert result.stdout == ""


# --- the trace ---------------------------------------------------------------------


def test_trace_shows_the_protocol_as_sent(smtp_server: RunningServer) -> None:
    script = LOGIN + send_script("bob@example.org", "Hello", ["first", ".dot"]) + RETRIEVE + QUIT
    result = run_client(smtp_server.port, script, "--trace")
    assert result.returncode == 0
    lines = trace_lines(result.stdout)
    for expected in [
        "S: 220 mail.test Service ready",
        "C: AUTH PLAIN ********",
        "S: 235 2.7.0 Authentication successful",
        "C: rcpt TO:<bob@example.org>",
        "C: data",
        "S: 354 Start mail input; end with <CRLF>.<CRLF>",
        "C: Subject: Hello",
        "C: ..dot",  # the wire shows the stuffed dot
        "C: .",
        "C: RETR",
        "S: 250 1 message follows",
        "S: ..dot",
        "S: .",
        "C: quit",
        "S: 221 mail.test Service closing transmission channel",
    ]:
        assert expected in lines, expected
    assert any(line.startswith("C: ehlo ") for line in lines)
    assert any(re.fullmatch(r"S: 250[- ]AUTH PLAIN LOGIN", line) for line in lines)  # wherever AUTH comes in EHLO
    assert any(line.startswith("C: mail FROM:<alice@mail.test>") for line in lines)
    # smtplib's verbs, in its lower case (issue 21: the bytes sent, not a tidied copy)
    assert not [line for line in lines if line[:3] == "C: " and line[3:7] in ("EHLO", "MAIL", "RCPT", "DATA", "QUIT")]


def test_trace_never_shows_the_password(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, "alice\nwrong-password\n" + LOGIN + QUIT, "--trace")
    assert result.returncode == 0
    shown = result.stdout + result.stderr
    assert "C: AUTH PLAIN ********" in shown
    assert "C: AUTH LOGIN" not in shown  # a 535 is no reason to try the next mechanism (issue 21)
    for secret in ("alice-password", "wrong-password"):
        assert secret not in shown
        plain = base64.b64encode(f"\0alice\0{secret}".encode()).decode()
        assert plain not in shown
    assert base64.b64encode(b"alice").decode() not in shown


def test_trace_masks_answers_to_334_challenges(smtp_server: RunningServer) -> None:
    trace: list[str] = []
    client = client_module.MailClient(trace=trace.append)
    client.connect(smtp_server.host, smtp_server.port)
    client.ehlo()
    client.user, client.password = "alice", "alice-password"  # where smtplib's auth_login looks
    client.auth("LOGIN", client.auth_login, initial_response_ok=False)
    client.quit()
    assert trace[-8:] == [
        "C: AUTH LOGIN",
        "S: 334 VXNlcm5hbWU6",
        "C: ********",
        "S: 334 UGFzc3dvcmQ6",
        "C: ********",
        "S: 235 2.7.0 Authentication successful",
        "C: quit",
        "S: 221 mail.test Service closing transmission channel",
    ]


def test_trace_shortens_long_bodies(smtp_server: RunningServer) -> None:
    body = [f"line {number}" for number in range(1, 31)]
    result = run_client(
        smtp_server.port, LOGIN + send_script("bob@example.org", "long", body) + RETRIEVE + QUIT, "--trace"
    )
    lines = trace_lines(result.stdout)
    assert "C: line 10" in lines and "C: line 11" not in lines
    assert "S: line 10" in lines and "S: line 11" not in lines
    assert lines.count("   (20 more lines not shown)") == 2  # sent and retrieved
    assert "\n".join(body) in shown_message(result.stdout)  # the menu's own view is whole


# --- MailClient, the protocol class, in this process ---------------------------------


def test_mail_client_retr_unstuffs_and_dele_counts(smtp_server: RunningServer) -> None:
    deliver(smtp_server, "Subject: a\r\n\r\n.dot\r\n..two\r\n")
    deliver(smtp_server, "Subject: b\r\n\r\nplain\r\n")
    with client_module.MailClient() as client:
        client.connect(smtp_server.host, smtp_server.port)
        client.login("alice", "alice-password")
        assert [message.split(b"\r\n\r\n", 1)[1] for message in client.retr()] == [b".dot\r\n..two\r\n", b"plain\r\n"]
        assert client.dele() == 2
        assert client.retr() == []
        assert client.dele() == 0


def test_mail_client_refusal_raises(smtp_server: RunningServer) -> None:
    with client_module.MailClient() as client:
        client.connect(smtp_server.host, smtp_server.port)
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            client.retr()  # not logged in
        assert refused.value.smtp_code == 530


def log_in_at_terminal(term: Terminal) -> None:
    term.expect("Username: ")
    term.type("alice\n")
    term.expect("Password: ")
    term.type("alice-password\n")
    term.expect("Logged in as alice.")
    term.expect(MENU_PROMPT)


def test_terminal_session_password_not_echoed(smtp_server: RunningServer, terminal: Callable[..., Terminal]) -> None:
    term = terminal("--port", str(smtp_server.port))
    log_in_at_terminal(term)
    term.type("1\n")
    for prompt, answer in [("From [alice@mail.test]: ", ""), ("To (comma-separated): ", "bob@example.org")]:
        term.expect(prompt)
        term.type(answer + "\n")
    term.expect("Subject: ")
    term.type(f"{GREETING}\n{GREETING}\n.\n")
    term.expect("Sent: 250 OK")
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0
    assert "alice-password" not in term.output  # getpass turned the echo off
    assert "alice\r\n" in term.output  # while the username was echoed as typed
    assert "221 mail.test" in term.output
    assert "Warning" not in term.output
    [stored] = smtp_server.stored("alice")
    assert stored.endswith(f"\n\n{GREETING}\n".encode())


def test_terminal_ctrl_d_at_the_menu_exits_0(smtp_server: RunningServer, terminal: Callable[..., Terminal]) -> None:
    term = terminal("--port", str(smtp_server.port))
    log_in_at_terminal(term)
    term.type("\x04")  # Ctrl-D: end of input
    assert term.wait() == 0
    assert "221 mail.test" in term.output
    assert "Traceback" not in term.output


def test_terminal_ctrl_c_at_the_password_exits_130(
    smtp_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    term = terminal("--port", str(smtp_server.port), "--trace")
    term.expect("Username: ")
    term.type("alice\n")
    term.expect("Password: ")
    term.type("\x03")  # Ctrl-C: SIGINT from the terminal, inside getpass
    assert term.wait() == 130
    assert "C: quit" in term.output and "221 mail.test" in term.output
    assert "Traceback" not in term.output


# --- TLS -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["--starttls", "--tls"])
def test_tls_options_send_and_retrieve_over_tls(
    start_server: Callable[..., RunningServer], certificate: Certificate, mode: str
) -> None:
    server = start_server(tls_context=certificate.server_context(), implicit_tls=mode == "--tls", require_tls=True)
    script = LOGIN + send_script("bob@example.org", "sealed", ["over TLS"]) + RETRIEVE + QUIT
    result = run_client(server.port, script, mode, "--cafile", str(certificate.cert), "--trace")
    assert result.returncode == 0, result.stderr
    assert ("C: STARTTLS" in result.stdout) == (mode == "--starttls")
    assert "S: 235 2.7.0 Authentication successful" in result.stdout  # require_tls: only over TLS
    assert "Subject: sealed" in shown_message(result.stdout)


def test_untrusted_certificate_is_a_clear_error(
    start_server: Callable[..., RunningServer], certificate: Certificate
) -> None:
    server = start_server(tls_context=certificate.server_context())
    result = run_client(server.port, LOGIN + QUIT, "--starttls")  # no --cafile: the system CAs don't know it
    assert result.returncode == 1
    assert result.stderr == (
        "The server's certificate is not trusted: add --cafile cert.pem (the file your teacher handed out).\n"
    )


def test_missing_cafile_is_a_clear_error(smtp_server: RunningServer, tmp_path: Path) -> None:
    result = run_client(smtp_server.port, LOGIN + QUIT, "--tls", "--cafile", str(tmp_path / "nope.pem"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"Cannot use --cafile {tmp_path / 'nope.pem'}:")


def test_the_account_talks_to_the_server_and_never_prints(
    pop3_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Account returns what the server said or raises; the menu and main() do the printing."""
    account = client_module.Account(pop3_server.host, pop3_server.port, None, pop3_port=pop3_server.pop3_port)
    greetings: list[tuple[int, bytes]] = []
    account.connect(greeted=greetings.append)
    with pytest.raises(client_module.WrongLoginError, match=r"^wrong username or password$"):
        account.log_in("alice", "not her password")
    account.log_in("alice", USERS["alice"])  # on a new connection: the server hung up after the 535
    account.connection().close()  # as an idle timeout leaves it
    assert account.log_in_again().noop()[0] == 250
    assert account.open_inbox().stat() == (0, 0)
    account.close_inbox()
    goodbye = account.close()
    assert goodbye is not None and goodbye[0] == 221
    assert [code for code, _ in greetings] == [220]
    assert capsys.readouterr() == ("", "")
