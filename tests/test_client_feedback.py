"""What the client tells a student, from issue 21 ("what a class saw"): typed into a pseudo-terminal
as a person does, unless the point is the wire or the server's log.

- mail to another domain: the client says it was not delivered;
- `--tls` reads the inbox, with STLS on a plain POP3 port, or says which option to add;
- a message without headers shows who sent it and when, from the envelope;
- `--trace` shows what was sent, as sent, once;
- choices 3 and 4 say "you sent", in the singular for one;
- Ctrl-C while typing a message keeps it in unsent-<date-time>.eml; at a y/N question it answers no;
- `--raw` leaves no prompt behind after an idle 421; a throttled login is refused once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ENV, USERS, Certificate, RawSession, RunningServer, ServerProcess, Terminal, run_client, wait_for
from test_client import DELETE, INBOX, LOGIN, MENU_PROMPT, QUIT, RETRIEVE, log_in_at_terminal, send_script, trace_lines

import client as client_module

NOT_DELIVERED = "Not delivered to {}: not a user of this server (kept in your Sent folder)."


def send_at_terminal(term: Terminal, to: str, subject: str, body: list[str]) -> None:
    """Menu choice 1 as a student types it, the default sender taken."""
    term.type("1\n")
    term.expect("From [")
    term.type("\n")
    term.expect("To (comma-separated): ")
    term.type(to + "\n")
    term.expect("Subject: ")
    term.type(subject + "\n")
    term.expect("Type the message")
    term.type("".join(line + "\n" for line in body) + ".\n")


def log_in_as(term: Terminal, user: str) -> None:
    term.expect("Username: ")
    term.type(user + "\n")
    term.expect("Password: ")
    term.type(USERS[user] + "\n")
    term.expect(f"Logged in as {user}.")
    term.expect(MENU_PROMPT)


# --- item 1: mail that stays in the Sent folder ---------------------------------------------


def test_mail_to_another_domain_says_it_was_not_delivered(
    smtp_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    term = terminal("--port", str(smtp_server.port))
    log_in_at_terminal(term)
    send_at_terminal(term, "ben@example.org, bob", "Hello", ["Hi both."])
    term.expect("Sent: 250 OK: stored as ")
    term.expect(NOT_DELIVERED.format("ben@example.org"))
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0
    assert NOT_DELIVERED.format("bob@mail.test") not in term.output  # bob is a user here: delivered
    assert len(smtp_server.inbox("bob")) == 1


# --- item 2: the inbox with --tls --------------------------------------------------------------


@pytest.mark.parametrize("pop3", ["plain port, STLS", "POP3S port"])
def test_a_tls_student_reads_the_inbox(
    server_process: Callable[..., ServerProcess], certificate: Certificate, terminal: Callable[..., Terminal], pop3: str
) -> None:
    """--tls (the SMTPS port): the inbox over TLS too, with --pop3-port a plain POP3 port (STLS) or the POP3S one."""
    process = server_process(
        "--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key), "--tls-port", "0", "--pop3s-port", "0"
    )
    wait_for(lambda: "POP3S (implicit TLS) serving on" in process.log)  # logged after the SMTPS line
    smtps = int(re.search(r"serving SMTPS \(implicit TLS\) on 127\.0\.0\.1:(\d+)", process.log)[1])
    pop3s = int(re.search(r"POP3S \(implicit TLS\) serving on 127\.0\.0\.1:(\d+)", process.log)[1])
    pop3_port = process.pop3_port if pop3 == "plain port, STLS" else pop3s
    options = ["--host", "localhost", "--port", str(smtps), "--tls", "--cafile", str(certificate.cert)]
    term = terminal(*options, "--pop3-port", str(pop3_port))
    log_in_at_terminal(term)
    send_at_terminal(term, "alice", "To myself", ["over TLS"])
    term.expect("Sent: 250 OK")
    term.expect(MENU_PROMPT)
    term.type(INBOX)
    term.expect("You have 1 message in your inbox.")
    term.expect("Subject: To myself")
    term.expect("Delete it from your inbox? [y/N] ")
    term.type("n\n")
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0
    assert "Cannot reach the inbox" not in term.output


def test_with_tls_and_the_usual_pop3_port_the_inbox_uses_stls_at_once(
    start_server: Callable[..., RunningServer], certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    """--tls without --pop3-port (main() makes pop3s False): STLS on the POP3 port, and no TLS handshake
    thrown at a plain port first, which the projected log would show as a line of binary."""
    server = start_server(pop3=True, tls_context=certificate.server_context(), verbose=True)
    account = client_module.Account(
        "localhost", server.port, None, certificate.client_context(), implicit_tls=True, pop3_port=server.pop3_port
    )
    account.credentials = ("alice", USERS["alice"])
    with caplog.at_level(logging.INFO, logger="mailserver"):
        inbox = account.open_inbox()
        assert inbox.stat() == (0, 0)
        account.close_inbox()
        wait_for(lambda: "disconnected" in caplog.text)
    assert " C: STLS" in caplog.text
    assert "Unknown command" not in caplog.text and "\\x16\\x03" not in caplog.text


def test_a_tls_student_is_told_which_option_to_add_when_the_inbox_has_no_tls(
    start_server: Callable[..., RunningServer],
    certificate: Certificate,
    terminal: Callable[..., Terminal],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SMTPS port, and a POP3 port with neither POP3S nor STLS: the one line names --pop3-port and --tls,
    and the password never crosses in clear text (no downgrade: STLS or nothing)."""
    caplog.set_level(logging.INFO, logger="mailserver")
    smtps = start_server(implicit_tls=True, tls_context=certificate.server_context())
    plain_pop3 = start_server(pop3=True, mailboxes_path=smtps.mailboxes_path)  # no TLS at all
    options = ["--host", "localhost", "--port", str(smtps.port), "--tls", "--cafile", str(certificate.cert)]
    term = terminal(*options, "--pop3-port", str(plain_pop3.pop3_port))
    log_in_at_terminal(term)
    term.type(INBOX)
    term.expect(
        f"Cannot reach the inbox at localhost:{plain_pop3.pop3_port} — it offers no TLS (neither POP3S nor STLS): "
        "give the server's --pop3s-port as --pop3-port, or leave out --tls."
    )
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0
    assert " login alice" in caplog.text  # the log is there to read (the SMTP login)
    assert "POP3 login" not in caplog.text  # and no USER/PASS reached the POP3 port


# --- item 3: a message without headers ---------------------------------------------------------


def send_without_headers(server: RunningServer, recipient: str) -> None:
    """alice sends a message of one text line and no header at all, as one types it in --raw."""
    session = RawSession(server.host, server.port)
    try:
        session.read_reply()
        session.login("alice")
        assert session.send_message(b"typed by hand\r\n", "alice@mail.test", [recipient])[0] == 250
    finally:
        session.close()


def test_a_message_without_headers_shows_the_envelope_sender_and_the_date_received(
    pop3_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    """As `--raw` or `curl -T` send it: no From:, Date: or To:; the inbox copy's trace fields tell."""
    send_without_headers(pop3_server, "bob@mail.test")
    [by] = [line for line in pop3_server.inbox("bob")[0].split(b"\n") if line.startswith(b"\tby ")]  # Received's last
    received = by.split(b"; ", 1)[1].decode()  # the Received field's date
    term = terminal("--port", str(pop3_server.port), "--pop3-port", str(pop3_server.pop3_port))
    log_in_as(term, "bob")
    term.type(INBOX)
    term.expect("--- Message 1 ---")
    term.expect(f"Date:    {received} (received)")
    term.expect("From:    alice@mail.test (envelope)")
    term.expect("To:      bob (your inbox)")
    term.expect("typed by hand")
    term.expect("[y/N] ")
    term.type("\n")
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0


def test_a_sent_message_without_headers_says_it_is_yours(
    smtp_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    send_without_headers(smtp_server, "bob@example.org")
    term = terminal("--port", str(smtp_server.port))
    log_in_at_terminal(term)
    term.type(RETRIEVE)
    term.expect("--- Message 1 ---")
    term.expect("Date:    (not in the message)")
    term.expect("From:    alice (you sent it)")
    term.expect("To:      (not in the message)")
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0


# --- item 4: --trace ----------------------------------------------------------------------------


def test_trace_shows_each_line_as_sent_and_the_greeting_once(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + send_script("bob", "Lunch?", ["At noon."]) + QUIT, "--trace")
    assert result.returncode == 0, result.stderr
    sent = [line for line in trace_lines(result.stdout) if line.startswith("C: ")]
    # smtplib writes its verbs in lower case, and so they cross the wire (RFC 5321 2.4: any case will do).
    assert any(line.startswith("C: ehlo ") for line in sent)
    assert any(re.fullmatch(r"C: mail FROM:<alice@mail\.test> size=\d+", line) for line in sent)
    assert "C: rcpt TO:<bob@mail.test>" in sent and "C: data" in sent
    assert not [line for line in sent if line[3:7] in ("EHLO", "MAIL", "RCPT", "DATA")]
    assert result.stdout.count("220 mail.test Service ready") == 1  # the S: line, not again under it
    assert result.stdout.count("221 mail.test Service closing transmission channel") == 1  # the goodbye too


# --- item 5: choices 3 and 4 speak of the mail you sent ------------------------------------------


def test_choices_3_and_4_say_you_sent_and_one_is_singular(
    smtp_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    term = terminal("--port", str(smtp_server.port))
    log_in_at_terminal(term)
    term.type(RETRIEVE)
    term.expect("You have sent no messages (your Sent folder is empty).")
    term.expect(MENU_PROMPT)
    send_at_terminal(term, "bob", "One", ["one"])
    term.expect(MENU_PROMPT)
    term.type(RETRIEVE)
    term.expect("You sent 1 message.")
    term.expect(MENU_PROMPT)
    term.type(DELETE)
    term.expect("Delete the message you sent? [y/N] ")
    term.type("y\n")
    term.expect("Deleted the message you sent.")
    term.expect(MENU_PROMPT)
    for subject in ("Two", "Three"):
        send_at_terminal(term, "bob", subject, [subject])
        term.expect(MENU_PROMPT)
    term.type(RETRIEVE)
    term.expect("You sent 2 messages.")
    term.expect(MENU_PROMPT)
    term.type(DELETE)
    term.expect("Delete all 2 messages you sent? [y/N] ")
    term.type("y\n")
    term.expect("Deleted 2 messages you sent.")
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0
    assert "You have 1 message." not in term.output and "Deleted 2 messages." not in term.output


# --- item 6: Ctrl-C ---------------------------------------------------------------------------------

# Linux's numbers for the calls that wait for a terminal: read, poll, select, pselect6, ppoll (x86-64, then arm64).
READING_CALLS = {"0", "7", "23", "270", "271", "63", "72", "73"}


def waiting_for_input(pid: int) -> bool:
    """True while the process sleeps in a call that waits for input: what was typed has all been read."""
    state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return state == "S" and Path(f"/proc/{pid}/syscall").read_text().split()[0] in READING_CALLS


def test_ctrl_c_while_typing_a_message_saves_it_and_says_where(
    smtp_server: RunningServer, terminal: Callable[..., Terminal], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the client saves into the folder it runs in
    term = terminal("--port", str(smtp_server.port))
    log_in_at_terminal(term)
    term.type("1\n\nbob\nHalf done\n")
    term.expect("Type the message")
    term.type("the first line\nthe second line\n")
    term.expect("the second line\r\n")
    # Ctrl-C makes the terminal drop typed lines not yet read: wait until the client has read them all.
    wait_for(lambda: waiting_for_input(term.pid))
    term.ctrl_c(then="Message not sent; it is saved in ")
    term.expect(".eml")
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0
    [saved] = tmp_path.glob("unsent-*.eml")
    assert re.fullmatch(r"unsent-\d{8}-\d{6}\.eml", saved.name)
    assert str(saved) in term.output.replace("\r\n", "")
    text = saved.read_text()
    assert "Subject: Half done" in text and "To: bob@mail.test" in text
    assert "the first line\nthe second line\n" in text
    assert smtp_server.stored("alice") == []  # not sent


@pytest.mark.parametrize("where", ["choice 4", "choice 2"])
def test_ctrl_c_at_a_yes_no_question_answers_no_and_returns_to_the_menu(
    pop3_server: RunningServer, terminal: Callable[..., Terminal], where: str
) -> None:
    term = terminal("--port", str(pop3_server.port), "--pop3-port", str(pop3_server.pop3_port))
    log_in_at_terminal(term)
    send_at_terminal(term, "alice", "To myself", ["kept"])
    term.expect(MENU_PROMPT)
    term.type(DELETE if where == "choice 4" else INBOX)
    term.expect("[y/N] ")
    term.ctrl_c(then="Nothing deleted.")
    term.expect(MENU_PROMPT)
    term.type(QUIT)
    assert term.wait() == 0
    assert "221 mail.test" in term.output and "Traceback" not in term.output
    assert len(pop3_server.stored("alice")) == 1 and len(pop3_server.inbox("alice")) == 1


# --- item 11: --raw after an idle 421; a throttled name ----------------------------------------------


def shown_on_screen(output: str) -> str:
    """The text a terminal ends up showing: a line erased by "\\r ESC[K" is gone, other escapes dropped."""
    screen = ""
    for piece in re.split(r"(\r\x1b\[K)", output.replace("\r\n", "\n")):
        screen = screen.rpartition("\n")[0] + "\n" if piece == "\r\x1b[K" and "\n" in screen else screen + piece
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


def test_raw_at_a_terminal_leaves_no_prompt_after_an_idle_421(
    start_server: Callable[..., RunningServer], terminal: Callable[..., Terminal]
) -> None:
    server = start_server(timeout=1)
    term = terminal("--raw", "--port", str(server.port), env={**ENV, "TERM": "xterm", "NO_COLOR": "1"})
    term.expect("C: ")
    term.type("NOOP\r")
    term.expect("   250: ")
    term.expect("S: 421 mail.test Timeout, closing transmission channel")
    assert term.wait() == 1
    tail = shown_on_screen(term.output).split("S: 421 mail.test Timeout, closing transmission channel\n", 1)[1]
    assert tail == (
        "   421: the server is closing the connection (shutting down, idle too long, too many errors or connections)"
        " — connect again later\n"
        "   (the server closed the connection)\n"
    )


def test_a_throttled_name_is_refused_once_per_login(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """smtplib would try LOGIN after PLAIN's 454: the client stops at a refusal that is not about the mechanism."""
    server = start_server(max_login_failures=1)
    guess = RawSession(server.host, server.port)
    try:
        guess.read_reply()
        guess.command("EHLO client.test")
        assert guess.command("AUTH PLAIN AGFsaWNlAHdyb25n")[0] == 535  # alice, wrong: the name now waits
    finally:
        guess.close()
    with caplog.at_level(logging.WARNING, logger="mailserver"):
        result = run_client(server.port, LOGIN)
        wait_for(lambda: "SMTP login refused for alice" in caplog.text)
    assert result.returncode == 1
    assert result.stderr.startswith("Login refused: too many failed logins for this name; try again in ")
    assert caplog.text.count("SMTP login refused for alice") == 1
