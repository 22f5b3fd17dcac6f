"""client.py --raw: the protocol typed by hand, each reply explained.

Most tests pipe a script into `python client.py --raw`, one line per command, as the
console reads a pipe; the pseudo-terminal tests type into it as a student does, so
getpass, readline, Ctrl-C and Ctrl-D run for real. The last tests read the server's code
and check that every reply it can send has an explanation in the console's table.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import re
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import conftest
import pytest
from conftest import (
    ENV,
    ROOT,
    TIMEOUT,
    USERS,
    Certificate,
    ClientProcess,
    RawSession,
    Result,
    RunningServer,
    Terminal,
    plain_response,
    run_client,
    wait_for,
)
from test_client import deliver, mail_to

import client as client_module

PASSWORD = USERS["alice"]
CLOSED_NOTE = "   " + client_module.CLOSED_NOTE
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A terminal in the tests: one that understands colour, whatever runs the tests.
COLOUR_TERMINAL = {**ENV, "TERM": "xterm"}
COLOUR_TERMINAL.pop("NO_COLOR", None)


def raw(port: int, script: str, *args: str) -> Result:
    """Run client.py --raw with script piped in; return how it ended."""
    return run_client(port, script, "--raw", *args)


def screen(output: str) -> str:
    """What a terminal showed, as plain lines: colours and cursor moves taken out."""
    return ANSI.sub("", output).replace("\r\n", "\n")


def secrets_of(password: str, user: str = "alice") -> list[str]:
    """The password and every encoding of it a login sends."""
    return [password, plain_response(user, password), base64.b64encode(password.encode()).decode()]


# --- through a pipe -----------------------------------------------------------------


def test_greeting_and_an_explained_reply(smtp_server: RunningServer) -> None:
    result = raw(smtp_server.port, "RCPT TO:<bob@example.org>\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:7] == [
        "S: 220 mail.test Service ready",
        "   220: service ready — the server greets you; introduce yourself with EHLO <your name>",
        "C: RCPT TO:<bob@example.org>",
        "S: 530 Authentication required",
        "   530: log in first — :auth plain NAME",
        "C: QUIT",  # the end of the input leaves politely
    ]
    assert result.stderr == ""


def test_explanation_depends_on_the_command_answered(smtp_server: RunningServer) -> None:
    script = "EHLO laptop\n:auth plain alice\n" + PASSWORD + "\nRCPT TO:<bob@example.org>\nDATA\nMAIL FROM:<>\n"
    script += "MAIL FROM:<>\n"
    lines = raw(smtp_server.port, script).stdout.splitlines()
    assert lines[lines.index("C: RCPT TO:<bob@example.org>") + 2] == "   503: bad sequence — MAIL must come first"
    assert lines[lines.index("C: DATA") + 2] == (
        "   503: bad sequence — MAIL and at least one accepted RCPT must come first"
    )
    first_mail = lines.index("C: MAIL FROM:<>")
    assert lines[first_mail + 2] == "   250: sender accepted — now RCPT TO:<address>, once for each recipient"
    assert lines[lines.index("C: MAIL FROM:<>", first_mail + 1) + 2] == (
        "   503: bad sequence — a message is already started (RSET drops it)"
    )


def test_a_whole_transaction_is_stored(smtp_server: RunningServer) -> None:
    script = "\n".join(
        [
            "EHLO laptop",
            ":auth plain alice",
            PASSWORD,
            "MAIL FROM:<alice@mail.test>",
            "RCPT TO:<bob@example.org>",
            "DATA",
            "Subject: typed by hand",
            "",
            ".a line that starts with a dot",
            "the end",
            ".",
            "QUIT",
        ]
    )
    result = raw(smtp_server.port, script + "\n")
    assert result.returncode == 0, result.stderr
    assert smtp_server.stored("alice") == [b"Subject: typed by hand\n\n.a line that starts with a dot\nthe end\n"]
    lines = result.stdout.splitlines()
    start = lines.index("C: DATA")
    assert lines[start : start + 13] == [
        "C: DATA",
        "S: 354 Start mail input; end with <CRLF>.<CRLF>",
        '   354: go ahead — type the message, end it with a line holding only "."',
        '   (message mode: each line is sent as you type it; a line holding only "." ends it)',
        "C: Subject: typed by hand",
        "C:",
        "C: ..a line that starts with a dot",  # the wire form
        '   (the line starts with ".": SMTP sends it as "..a line that starts with a dot", RFC 5321 4.5.2)',
        "C: the end",
        "C: .",
        '   (end of the message: 4 lines sent, then the ".")',
        f"S: 250 OK: stored as {lines[start + 11].split(' stored as ')[1]}",
        "   250: message accepted — the server has stored it safely; MAIL starts another",
    ]
    assert lines[-4:] == [
        "C: QUIT",
        "S: 221 mail.test Service closing transmission channel",
        "   221: goodbye — the server closes the connection",
        "   (the server closed the connection)",
    ]


def test_end_of_input_in_a_message_sends_no_quit(smtp_server: RunningServer) -> None:
    # QUIT would be a line of the message; the console closes instead, and the server drops the message.
    script = f"EHLO laptop\n:auth plain alice\n{PASSWORD}\nMAIL FROM:<>\nRCPT TO:<bob@example.org>\nDATA\nunfinished\n"
    result = raw(smtp_server.port, script)
    assert result.returncode == 0
    assert result.stdout.endswith(
        'C: unfinished\n   (the message was not ended with a "." line, so the server drops it)\n'
    )
    assert "C: QUIT" not in result.stdout
    assert smtp_server.stored("alice") == []


def test_retr_blocks_are_shown_in_full(smtp_server: RunningServer) -> None:
    body = [f"line {number}" for number in range(1, 31)]
    deliver(smtp_server, "Subject: long\r\n\r\n" + "\r\n".join([".dot", *body]) + "\r\n")
    deliver(smtp_server, "Subject: short\r\n\r\n250 not a reply\r\n")
    result = raw(smtp_server.port, f"EHLO laptop\n:auth plain alice\n{PASSWORD}\nRETR\nNOOP\n")
    lines = result.stdout.splitlines()
    start = lines.index("C: RETR")
    assert lines[start + 1 : start + 3] == [
        "S: 250 2 messages follow",
        '   250: the messages you sent follow, each ended by a line holding only "."',
    ]
    first = [
        "S: Subject: long",
        "S:",
        "S: ..dot",
        *(f"S: {line}" for line in body),
        "S: .",
        "   (end of message 1 of 2)",
    ]
    second = ["S: Subject: short", "S:", "S: 250 not a reply", "S: .", "   (end of message 2 of 2)"]
    assert lines[start + 3 : start + 3 + len(first) + len(second)] == first + second  # no line left out
    assert lines[start + 3 + len(first) + len(second) :][:3] == [
        "C: NOOP",
        "S: 250 OK",
        "   250: nothing done — the server is still there",  # paired with NOOP, not with a line of a message
    ]


def test_no_explain(smtp_server: RunningServer) -> None:
    result = raw(smtp_server.port, "NOOP\n", "--no-explain")
    assert result.stdout.splitlines()[1:] == [
        "S: 220 mail.test Service ready",
        "C: NOOP",
        "S: 250 OK",
        "C: QUIT",
        "S: 221 mail.test Service closing transmission channel",
        "   (the server closed the connection)",
    ]


@pytest.mark.parametrize("mechanism", ["plain", "login"])
def test_auth_helper_logs_in_and_hides_the_password(smtp_server: RunningServer, tmp_path: Path, mechanism: str) -> None:
    saved = tmp_path / "transcript.txt"
    result = raw(smtp_server.port, f"EHLO laptop\n:auth {mechanism} alice\n{PASSWORD}\nNOOP\n:save {saved}\n")
    assert "S: 235 2.7.0 Authentication successful" in result.stdout
    transcript = saved.read_text()
    for shown in (result.stdout, result.stderr, transcript):
        for secret in secrets_of(PASSWORD):
            assert secret not in shown
    expected = (
        ["C: AUTH PLAIN ********"]
        if mechanism == "plain"
        else [
            "C: AUTH LOGIN",
            "S: 334 VXNlcm5hbWU6",
            '   334: go on — send the next answer of the login, in base64 (decoded, it asks "Username:")',
            "C: ********",
            "S: 334 UGFzc3dvcmQ6",
            '   334: go on — send the next answer of the login, in base64 (decoded, it asks "Password:")',
            "C: ********",
        ]
    )
    lines = transcript.splitlines()
    start = lines.index(expected[0])
    assert lines[start : start + len(expected) + 1] == [*expected, "S: 235 2.7.0 Authentication successful"]
    # The transcript is what was shown up to the :save, but for the helpers: they are not part of the dialogue.
    assert [line for line in result.stdout.splitlines() if not line.startswith("C: :")][: len(lines)] == lines
    assert "C: :auth" not in transcript


def test_credentials_typed_by_hand_are_masked_in_the_transcript(smtp_server: RunningServer, tmp_path: Path) -> None:
    saved = tmp_path / "transcript.txt"
    name, password = (base64.b64encode(text.encode()).decode() for text in ("alice", PASSWORD))
    script = f"EHLO laptop\nAUTH LOGIN\n{name}\n{password}\nAUTH PLAIN {plain_response('alice', PASSWORD)}\n"
    result = raw(smtp_server.port, script + f":save {saved}\n")
    for shown in (result.stdout, saved.read_text()):
        for secret in secrets_of(PASSWORD):
            assert secret not in shown
        assert "C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\n" in shown
        assert shown.count("C: ********\n") == 2  # the answers to the two 334s
        assert "S: 235 2.7.0 Authentication successful" in shown
        assert "C: AUTH PLAIN ********\nS: 503 Error: already authenticated\n" in shown


@pytest.mark.parametrize(
    ("script", "shown"),
    [
        pytest.param(
            f"AUTH PLAIN\n{plain_response('alice', PASSWORD)}\n", ["C: AUTH PLAIN", "S: 334", "C: ********"],
            id="the answer after the 334",
        ),
        pytest.param(f"AUTH\tPLAIN {plain_response('alice', PASSWORD)}\n", ["C: AUTH\tPLAIN ********"], id="tab"),
        pytest.param(
            f"AUTH LOGIN {base64.b64encode(b'alice').decode()}\n{PASSWORD}\n",
            ["C: AUTH LOGIN ********", "S: 334 UGFzc3dvcmQ6"], id="the password in clear after LOGIN",
        ),
    ],
)  # fmt: skip
def test_credentials_in_any_spelling_stay_off_screen_and_out_of_save(
    smtp_server: RunningServer, tmp_path: Path, script: str, shown: list[str]
) -> None:
    """Issue 18: the console masks by the rules of the server's log (tests/masking_cases.py)."""
    saved = tmp_path / "transcript.txt"
    result = raw(smtp_server.port, f"EHLO laptop\n{script}:save {saved}\n")
    for text in (result.stdout, saved.read_text()):
        for secret in secrets_of(PASSWORD):
            assert secret not in text
        lines = [line for line in text.splitlines() if line.startswith(("C:", "S:"))]  # the dialogue
        assert lines[lines.index(shown[0]) :][: len(shown)] == shown


def test_pop3_pass_after_a_tab_stays_off_screen_and_out_of_save(pop3_server: RunningServer, tmp_path: Path) -> None:
    saved = tmp_path / "pop3.txt"
    result = raw_pop3(pop3_server, f"USER bob\nPASS\tbob-password\n:save {saved}\n")
    for text in (result.stdout, saved.read_text()):
        assert "bob-password" not in text
        assert "C: PASS ********\nS: -ERR Unknown command" in text  # the server takes no tab there


def test_wrong_password_is_explained_and_the_console_ends(smtp_server: RunningServer) -> None:
    result = raw(smtp_server.port, "EHLO laptop\n:auth plain alice\nwrong\nNOOP\n")
    assert result.returncode == 1  # the server ended it
    assert result.stdout.endswith(
        "S: 535 5.7.8 Authentication credentials invalid\n"
        "   535: wrong username or password — the server will now close the connection\n"
        "   (the server closed the connection)\n"
    )


@pytest.mark.parametrize(
    ("options", "dialogue"),
    [
        pytest.param([], [b"220 fake ready", b"EHLO laptop", b"250 fake", b"NOOP", b"535 5.7.8 No"], id="SMTP 535"),
        pytest.param([], [b"220 fake ready", b"NOOP", b"421 fake Timeout, closing"], id="SMTP 421"),
        pytest.param(["--pop3"], [b"+OK fake ready", b"USER bob", b"+OK", b"PASS x", b"-ERR [AUTH] No"], id="POP3"),
    ],
)
def test_nothing_more_is_sent_after_a_reply_that_closes(options: list[str], dialogue: list[bytes]) -> None:
    # A server that says it closes may take a moment to do it: the console waits for the close
    # (up to a second) before the next line, so that line does not meet a closing connection.
    received: list[bytes] = []

    def serve(listener: socket.socket) -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as lines:
            for line in dialogue:
                if line[:1].isdigit() or line[:1] in b"+-":
                    connection.sendall(line + b"\r\n")
                else:
                    received.append(lines.readline().rstrip(b"\r\n"))
            connection.settimeout(0.5)  # then it closes; whatever came meanwhile was sent too early
            with contextlib.suppress(TimeoutError):
                received.append(lines.readline())

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve, args=(listener,))
        server.start()
        port = str(listener.getsockname()[1])
        sent = [line.decode() for line in dialogue if not (line[:1].isdigit() or line[:1] in b"+-")]
        result = raw(int(port), "\n".join([*sent, "NOOP", "NOOP"]) + "\n", *options, "--pop3-port", port)
        server.join(TIMEOUT)
    assert received == [line.encode() for line in sent]
    assert result.returncode == 1
    assert result.stdout.endswith(f"{CLOSED_NOTE}\n")


def test_helpers_that_go_wrong_say_so_and_the_session_goes_on(smtp_server: RunningServer, tmp_path: Path) -> None:
    script = f":nope\n:auth\n:auth cram-md5 alice\n:save\n:save {tmp_path / 'no' / 'such.txt'}\n:help\n"
    result = raw(smtp_server.port, script)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "   (:nope is no helper; :help lists them)" in lines
    assert lines.count("   (write :auth plain NAME or :auth login NAME)") == 2
    assert "   (write :save FILE)" in lines
    assert any(line.startswith("   (cannot save: [Errno 2] No such file or directory") for line in lines)
    assert "   :auth plain|login NAME — log in as NAME; the password is asked without echo, and masked" in "\n".join(
        lines
    )
    assert "C: HELP" in lines and "S: 214 HELP <command> explains one" in lines  # the server's own list
    assert "Password:" not in result.stdout  # no helper that failed asked for one


def test_idle_timeout_421_shows_up_by_itself(
    start_server: Callable[..., RunningServer], client_process: Callable[..., ClientProcess]
) -> None:
    server = start_server(timeout=1)
    client = client_process(server.port, "--raw")
    client.type("NOOP\n")
    # Nothing more is typed and stdin stays open: the console must notice the 421 itself, and leave.
    client.process.wait(TIMEOUT)
    result = client.finish()
    assert result.returncode == 1
    assert result.stdout.endswith(
        "S: 421 mail.test Timeout, closing transmission channel\n"
        "   421: the server is closing the connection (shutting down, idle too long, too many errors or"
        " connections) — connect again later\n"
        "   (the server closed the connection)\n"
    )
    assert result.stderr == ""


def test_ctrl_c_on_a_pipe_sends_quit_and_exits_130(
    smtp_server: RunningServer, client_process: Callable[..., ClientProcess]
) -> None:
    client = client_process(smtp_server.port, "--raw")
    client.type("NOOP\n")
    wait_for(lambda: "   250: nothing done" in client.output())
    client.process.send_signal(signal.SIGINT)
    result = client.finish()
    assert result.returncode == 130
    assert result.stdout.endswith(
        "C: QUIT\n"
        "S: 221 mail.test Service closing transmission channel\n"
        "   221: goodbye — the server closes the connection\n"
        f"{CLOSED_NOTE}\n"
    )
    assert result.stderr == ""


@pytest.mark.parametrize("how", [":starttls", "--starttls", "--tls"])
def test_tls(start_server: Callable[..., RunningServer], certificate: Certificate, how: str) -> None:
    server = start_server(tls_context=certificate.server_context(), implicit_tls=how == "--tls", require_tls=True)
    options = [how] if how.startswith("--") else []
    script = (":starttls\n" if how == ":starttls" else "") + f"EHLO laptop\n:auth plain alice\n{PASSWORD}\n"
    result = raw(server.port, script, "--cafile", str(certificate.cert), *options)
    assert result.returncode == 0, result.stderr
    assert "S: 235 2.7.0 Authentication successful" in result.stdout  # require_tls: only over TLS
    if how == "--tls":
        assert "STARTTLS" not in result.stdout
    else:
        assert (
            "C: STARTTLS\n"
            "S: 220 Ready to start TLS\n"
            "   220: go ahead with TLS — the console does the TLS handshake now (RFC 3207)\n"
            "   (TLS is on: TLSv1."
        ) in result.stdout


def test_untrusted_certificate(start_server: Callable[..., RunningServer], certificate: Certificate) -> None:
    server = start_server(tls_context=certificate.server_context())
    result = raw(server.port, ":starttls\nEHLO laptop\n")
    assert result.returncode == 1
    assert result.stdout.endswith(
        "   (TLS failed: the server's certificate is not trusted (self-signed certificate): add --cafile cert.pem)\n"
        "   (the server closed the connection)\n"
    )
    assert "C: EHLO" not in result.stdout
    assert "Traceback" not in result.stderr


def test_nobody_listening(closed_port: int) -> None:
    result = raw(closed_port, "NOOP\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"Cannot connect to 127.0.0.1:{closed_port} — is the server running?\n"


# --- POP3 (--raw --pop3) ----------------------------------------------------------------


def raw_pop3(server: RunningServer, script: str, *args: str) -> Result:
    """Run client.py --raw --pop3 against the server's POP3 port, with script piped in."""
    return raw(server.port, script, "--pop3", "--pop3-port", str(server.pop3_port), *args)


def test_pop3_list_retr_and_dele(pop3_server: RunningServer) -> None:
    body = [f"line {number}" for number in range(1, 31)]
    mail_to(pop3_server, "bob", "first", "\n".join([".dot", "+OK not a reply", *body]) + "\n")
    mail_to(pop3_server, "bob", "second")
    result = raw_pop3(pop3_server, ":auth user bob\nbob-password\nLIST\nRETR 1\nDELE 2\nQUIT\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:3] == [
        "S: +OK mail.test POP3 server ready",
        "   +OK: the server greets you — log in with USER <name> then PASS <password>, or :auth plain NAME",
    ]
    assert "C: USER bob" in lines and "C: PASS ********" in lines
    assert "bob-password" not in result.stdout
    listing = lines.index("C: LIST")
    assert lines[listing + 1].startswith("S: +OK 2 messages (")
    assert lines[listing + 2].startswith("   +OK: message number and size in octets")
    assert re.fullmatch(r"S: 1 \d+", lines[listing + 3]) and re.fullmatch(r"S: 2 \d+", lines[listing + 4])
    assert lines[listing + 5 : listing + 7] == ["S: .", "C: RETR 1"]  # the block's lines are not replies
    retr = lines.index("C: RETR 1")
    assert lines[retr + 2] == (
        '   +OK: the message follows as stored, ended by a line holding only "." (leading dots doubled)'
    )
    block = lines[retr + 3 : lines.index("C: DELE 2")]
    # In full, as on the wire, and no line of it taken for a reply.
    assert block[-33:] == ["S: ..dot", "S: +OK not a reply", *(f"S: {line}" for line in body), "S: ."]
    assert lines[-3:] == [
        "S: +OK mail.test POP3 server signing off (1 message left)",
        "   +OK: goodbye — the messages marked with DELE are deleted now",
        "   (the server closed the connection)",
    ]
    assert len(pop3_server.inbox("bob")) == 1


def test_pop3_auth_plain_and_its_transcript(pop3_server: RunningServer, tmp_path: Path) -> None:
    saved = tmp_path / "pop3.txt"
    result = raw_pop3(pop3_server, f":auth plain bob\nbob-password\nSTAT\n:save {saved}\n")
    expected = [
        "C: AUTH PLAIN",
        "S: +",
        "   +: go on — the server waits for your answer, in base64 (RFC 5034)",
        "C: ********",
        "S: +OK bob has 0 messages (0 octets)",
        "   +OK: logged in — your inbox is yours alone until QUIT (AUTH alone: the mechanisms follow)",
    ]
    for shown in (result.stdout, saved.read_text()):
        lines = shown.splitlines()
        assert lines[lines.index("C: AUTH PLAIN") :][:6] == expected
        for secret in secrets_of("bob-password", "bob"):
            assert secret not in shown


def test_pop3_wrong_password_ends_the_session(pop3_server: RunningServer) -> None:
    result = raw_pop3(pop3_server, ":auth user bob\nwrong\nSTAT\n")
    assert result.returncode == 1
    assert result.stdout.endswith(
        "S: -ERR [AUTH] Invalid username or password\n"
        "   -ERR [AUTH]: the login was refused (RFC 3206) — the text says why; after a wrong username or password"
        " the server closes the connection\n"
        "   (the server closed the connection)\n"
    )


def test_pop3_stls(start_server: Callable[..., RunningServer], certificate: Certificate) -> None:
    server = start_server(pop3=True, tls_context=certificate.server_context(), require_tls=True)
    result = raw_pop3(server, ":starttls\n:auth user bob\nbob-password\n", "--cafile", str(certificate.cert))
    assert result.returncode == 0, result.stderr
    assert (
        "C: STLS\n"
        "S: +OK Begin TLS negotiation\n"
        "   +OK: go ahead with TLS — the console does the TLS handshake now (RFC 2595)\n"
        "   (TLS is on: TLSv1."
    ) in result.stdout
    assert "S: +OK bob has 0 messages (0 octets)" in result.stdout  # require_tls: only over TLS


# --- at a terminal --------------------------------------------------------------------


def test_terminal_session(smtp_server: RunningServer, terminal: Callable[..., Terminal]) -> None:
    term = terminal("--raw", "--port", str(smtp_server.port), env=COLOUR_TERMINAL)
    term.expect("S: 220 mail.test Service ready")
    term.expect("\x1b[2m   220: service ready")  # the explanation is dimmed
    term.expect("C: ")
    term.type("EHLO laptop\r")
    term.expect("S: 250 HELP")
    term.expect("C: ")
    term.type(":auth plain alice\r")
    term.expect("Password: ")
    term.type(f"{PASSWORD}\r")  # getpass: not echoed
    term.expect("S: 235 2.7.0 Authentication successful")
    term.expect("C: ")
    term.type("MAIL FROM:<alice@mail.test>")
    term.expect("MAIL FROM:<alice@mail.test>")
    term.ctrl_c(then="C: ")  # the line is dropped, not sent
    term.type("RCPT TO:<bob@example.org>\r")
    term.expect("   503: bad sequence — MAIL must come first")
    term.expect("C: ")
    term.type("\x04")  # Ctrl-D: QUIT, and leave
    assert term.wait() == 0
    shown = screen(term.output)
    assert "C: QUIT\nS: 221 mail.test Service closing transmission channel\n" in shown
    for secret in secrets_of(PASSWORD):
        assert secret not in shown
    assert "C: AUTH PLAIN ********" in shown
    assert "Traceback" not in shown


def test_terminal_password_typed_by_hand_is_overwritten(
    smtp_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    term = terminal("--raw", "--port", str(smtp_server.port), env=COLOUR_TERMINAL)
    term.expect("C: ")
    term.type(f"AUTH PLAIN {plain_response('alice', PASSWORD)}\r")
    term.expect("S: 503 Error: send HELO or EHLO first")
    term.expect("C: ")  # type only at the prompt: readline drops what came before it
    term.type("\x04")
    assert term.wait() == 0
    payload = plain_response("alice", PASSWORD)
    # The terminal echoed it as typed; the console then went up a line and wrote it masked over it.
    assert f"C: AUTH PLAIN {payload}\r\n\x1b[A\r\x1b[KC: AUTH PLAIN ********\r\n" in term.output


def test_terminal_answer_to_334_is_not_echoed_nor_kept_in_the_history(
    smtp_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    term = terminal("--raw", "--port", str(smtp_server.port), env=COLOUR_TERMINAL)
    term.expect("C: ")
    term.type("EHLO laptop\r")
    term.expect("S: 250 HELP")
    term.expect("C: ")
    term.type("AUTH PLAIN\r")
    term.expect("   334: go on")
    term.expect("C: ")
    term.type(plain_response("alice", PASSWORD) + "\r")  # read as a password is: no echo
    term.expect("S: 235 2.7.0 Authentication successful")
    term.expect("C: ")
    term.type("\x1b[A")  # the arrow up: the line before, from the history
    term.expect("AUTH PLAIN")  # the blob never went into the history
    term.ctrl_c(then="C: ")
    term.type("\x04")
    assert term.wait() == 0
    for secret in secrets_of(PASSWORD):
        assert secret not in term.output
    assert "C: ********" in screen(term.output)


def test_terminal_without_colour(smtp_server: RunningServer, terminal: Callable[..., Terminal]) -> None:
    term = terminal("--raw", "--port", str(smtp_server.port), env={**COLOUR_TERMINAL, "NO_COLOR": "1"})
    term.expect("   220: service ready")
    term.expect("C: ")
    term.type("\x04")
    assert term.wait() == 0
    assert "\x1b[2m" not in term.output


def test_terminal_idle_421_while_at_the_prompt(
    start_server: Callable[..., RunningServer], terminal: Callable[..., Terminal]
) -> None:
    server = start_server(timeout=1)
    term = terminal("--raw", "--port", str(server.port), env=COLOUR_TERMINAL)
    term.expect("C: ")
    term.type("NOO")  # typed, not sent: the 421 arrives while the student is at the prompt
    assert term.wait() == 1
    shown = screen(term.output)
    # Printed above the prompt, which comes back with what was typed.
    assert "C: NOO\rS: 421 mail.test Timeout, closing transmission channel\nC: NOO" in shown
    assert "   421: the server is closing the connection" in shown
    # No prompt is left waiting after the close (issue 21); what was typed is shown as not sent.
    assert shown.endswith("   (the server closed the connection)\n   (not sent: NOO)\n")


def test_terminal_pop3(pop3_server: RunningServer, terminal: Callable[..., Terminal]) -> None:
    mail_to(pop3_server, "bob", "hello bob")
    term = terminal("--raw", "--pop3", "--pop3-port", str(pop3_server.pop3_port), env=COLOUR_TERMINAL)
    for line, reply in [
        ("USER bob", "S: +OK Send your password with PASS"),
        ("PASS bob-password", "S: +OK bob has 1 message"),
        ("LIST", "S: ."),
    ]:
        term.expect("C: ")
        term.type(f"{line}\r")
        term.expect(reply)
    term.expect("C: ")
    term.type("\x04")  # Ctrl-D: QUIT, and leave
    assert term.wait() == 0
    shown = screen(term.output)
    assert "C: PASS ********\n" in shown  # the typed password, overwritten
    assert "C: QUIT\nS: +OK mail.test POP3 server signing off (1 message left)\n" in shown
    assert len(pop3_server.inbox("bob")) == 1


# --- the explanations -----------------------------------------------------------------


def test_explain_uses_the_command_then_the_code_then_its_class() -> None:
    explain = client_module.explain
    assert explain("503", "Error: need MAIL command", "RCPT") == "503: bad sequence — MAIL must come first"
    assert explain("503", "Error", "NOOP") == "503: bad sequence of commands — this command cannot come now"
    assert explain("503", "Error", None) == "503: bad sequence of commands — this command cannot come now"
    assert explain("599", "odd", "NOOP") == "599: permanent failure — not done; repeating the command will not help"
    assert explain("-ERR", "[IN-USE] locked", "PASS").startswith("-ERR [IN-USE]: your inbox is open in another")
    assert explain("-ERR", "[NEW-CODE] what", None) == "-ERR: error — not done; the text says why"
    assert explain("+OK", "", "DELE") == "+OK: marked for deletion — it goes at QUIT; RSET unmarks every message"
    assert explain("334", "not base64!", "AUTH") == "334: go on — send the next answer of the login, in base64"


def test_the_dialects_know_which_replies_a_block_follows() -> None:
    smtp, pop3 = client_module.SMTPDialect, client_module.POP3Dialect
    sent, reply = client_module.Sent, client_module.ParsedReply
    ok = reply("+OK", "", True)
    assert smtp.blocks_after(sent("RETR"), reply("250", "2 messages follow", True)) == 2
    assert smtp.blocks_after(sent("RETR"), reply("530", "Authentication required", True)) == 0
    assert smtp.blocks_after(sent("NOOP"), reply("250", "2 OK", True)) == 0
    for verb in ("LIST", "UIDL", "CAPA", "RETR", "TOP", "AUTH"):
        assert pop3.blocks_after(sent(verb, "" if verb in ("LIST", "UIDL", "CAPA", "AUTH") else "1"), ok) == 1, verb
    assert pop3.blocks_after(sent("LIST", "1"), ok) == 0  # one message: a one-line answer
    assert pop3.blocks_after(sent("UIDL", "1"), ok) == 0
    assert pop3.blocks_after(sent("AUTH", "PLAIN"), ok) == 0
    assert pop3.blocks_after(sent("RETR", "1"), reply("-ERR", "No such message", True)) == 0
    assert pop3.blocks_after(sent("STAT"), ok) == 0


def reply_codes_in_the_server(package: Path = ROOT / "mailserver") -> dict[str, set[str]]:
    """Every reply the server's code can send, found in its syntax trees: {code: files}.

    SMTP: a call reply(NNN, ...) or Reply(NNN, ...), or a string starting "NNN " (a reply
    written out whole, such as the refusal at the connection caps). POP3: a string that is a
    status ("+OK", "-ERR", the "+ " of AUTH), and a response code "[CODE]" starting a string
    (after "-ERR " if it is there), as in reply(ERR, "[IN-USE] ...").
    """
    found: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for code in reply_codes(node):
                found.setdefault(code, set()).add(path.name)
    return found


REPLY_IN_TEXT = [
    re.compile(r"(\d{3}) "),  # SMTP, written out
    re.compile(r"(\+OK|-ERR|\+)(?: |$)"),  # a POP3 status
    re.compile(r"\s*(?:-ERR\s+)?(\[[A-Z][A-Z0-9/-]*\])"),  # RFC 2449 8: a response code
]


def reply_codes(node: ast.AST) -> list[str]:
    """The replies one node of a syntax tree stands for (ast.walk visits the pieces of an f-string too)."""
    if isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        first = node.args[0] if node.args else None
        if name in ("reply", "Reply") and isinstance(first, ast.Constant) and isinstance(first.value, int):
            return [str(first.value)]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [match[1] for pattern in REPLY_IN_TEXT if (match := pattern.match(node.value))]
    return []


def test_every_reply_the_server_can_send_is_explained() -> None:
    found = reply_codes_in_the_server()
    # The walk itself must work: these are certainly there.
    assert {"214", "220", "221", "235", "250", "334", "354", "421", "500", "503", "535"} <= set(found)
    assert {"+OK", "-ERR", "+", "[AUTH]", "[IN-USE]", "[SYS/TEMP]"} <= set(found)
    unexplained = {code: files for code, files in found.items() if code not in client_module.REPLY_MEANINGS}
    assert unexplained == {}, "add these to REPLY_MEANINGS in client.py"


def test_the_seeds_and_the_rfcs_replies_are_explained() -> None:
    seed = {"211", "214", "220", "221", "250", "354", "421", "500", "504"}
    rfc_5321 = {"251", "252", "450", "451", "452", "455", "501", "502", "503", "550", "551", "552", "553", "554", "555"}
    rfc_4954 = {"235", "334", "432", "454", "530", "534", "535", "538"}
    pop3 = {"+OK", "-ERR", "+", "[AUTH]", "[IN-USE]", "[SYS/TEMP]", "[SYS/PERM]", "[LOGIN-DELAY]"}
    assert seed | rfc_5321 | rfc_4954 | pop3 <= set(client_module.REPLY_MEANINGS)


# --- each verb-specific explanation, caused by a real server ---------------------------

LONG_LINE = "x" * 1100  # over RFC 5321's 1000 octets: 500 after the "."
BIG = "\n".join(["y" * 60] * 8)  # 488 octets: over the 300 the server below takes

# Each probe: (command as typed, which of its occurrences, status, a word its explanation must hold).
# Two SMTP sessions: the server hangs up after ten errors in one (each probe: command as shown,
# which of its occurrences, status, a word its explanation must hold).
LOGIN_SCRIPT = [
    "HELP", "AUTH PLAIN =", "STARTTLS", "HELO laptop", "EHLO laptop", "AUTH XOAUTH2", "AUTH PLAIN !!!!",
    "AUTH LOGIN", "*", ":auth plain alice", PASSWORD, "HELP FOO", "RETR x", "DELE x",
]  # fmt: skip
LOGIN_PROBES = [
    ("CONNECT", 0, "220", "EHLO"), ("HELP", 0, "214", "commands"), ("AUTH PLAIN ********", 0, "503", "EHLO"),
    ("STARTTLS", 0, "454", "certificate"), ("HELO laptop", 0, "250", "log in"), ("EHLO laptop", 0, "250", "extensions"),
    ("AUTH XOAUTH2", 0, "504", "PLAIN"), ("AUTH PLAIN ********", 1, "501", "base64"),
    ("AUTH LOGIN", 0, "334", "answer"),
    ("HELP FOO", 0, "504", "HELP alone"), ("RETR x", 0, "504", "no parameter"), ("DELE x", 0, "504", "no parameter"),
]  # fmt: skip
MAIL_SCRIPT = [
    "EHLO laptop", ":auth plain alice", PASSWORD, "RCPT TO:<bob@example.org>", "DATA", "MAIL FROM:<bob@mail.test>",
    "MAIL FROM:<alice@mail.test> SIZE=100000", "MAIL FROM:<alice@mail.test>", "MAIL FROM:<Alice@mail.test>",
    "RCPT TO:<nobody@localhost>", "RCPT TO:<bob@localhost>", "RCPT TO:<dave@example.org>", "DATA", "Subject: x", "",
    "hi", ".", "MAIL FROM:<ALICE@mail.test>", "RCPT TO:<erin@example.org>", "DATA", LONG_LINE, ".",
    "MAIL FROM:<aLice@mail.test>", "RCPT TO:<fay@example.org>", "DATA", BIG, ".",
    "RSET", "NOOP", "RETR", "DELE", "QUIT",
]  # fmt: skip
MAIL_PROBES = [
    ("RCPT TO:<bob@example.org>", 0, "503", "MAIL must come first"), ("DATA", 0, "503", "accepted RCPT"),
    ("MAIL FROM:<bob@mail.test>", 0, "553", "not yours"), ("MAIL FROM:<alice@mail.test> SIZE=100000", 0, "552", "SIZE"),
    ("MAIL FROM:<alice@mail.test>", 0, "250", "sender accepted"), ("MAIL FROM:<Alice@mail.test>", 0, "503", "RSET"),
    ("RCPT TO:<nobody@localhost>", 0, "550", "no account"), ("RCPT TO:<bob@localhost>", 0, "452", "full"),
    ("RCPT TO:<dave@example.org>", 0, "250", "recipient accepted"), (".", 0, "250", "stored it safely"),
    (".", 1, "500", "1000 octets"), (".", 2, "552", "size limit"), ("RSET", 0, "250", "dropped"),
    ("NOOP", 0, "250", "still there"), ("RETR", 0, "250", "messages you sent follow"), ("DELE", 0, "250", "gone"),
]  # fmt: skip
POP3_SCRIPT = ["CAPA", "AUTH", "USER bob", "PASS bob-password", "STAT", "LIST", "UIDL", "RETR 1", "TOP 1 0", "DELE 1",
               "RSET", "NOOP", "QUIT"]  # fmt: skip
POP3_PROBES = [
    ("CONNECT", 0, "+OK", "USER"), ("CAPA", 0, "+OK", "supports"), ("AUTH", 0, "+OK", "mechanisms"),
    ("USER bob", 0, "+OK", "PASS"), ("PASS ********", 0, "+OK", "logged in"), ("STAT", 0, "+OK", "total size"),
    ("LIST", 0, "+OK", "size in octets"), ("UIDL", 0, "+OK", "unique id"), ("RETR 1", 0, "+OK", "as stored"),
    ("TOP 1 0", 0, "+OK", "first lines"), ("DELE 1", 0, "+OK", "marked"), ("RSET", 0, "+OK", "removed"),
    ("NOOP", 0, "+OK", "still there"), ("QUIT", 0, "+OK", "goodbye"),
]  # fmt: skip


def explanation_after(output: str, command: str, occurrence: int, status: str) -> str:
    """The explanation the console showed for the reply to the occurrence-th `C: command` ("CONNECT": the greeting)."""
    lines = output.splitlines()
    start = 0
    if command != "CONNECT":
        starts = [number for number, line in enumerate(lines) if line == f"C: {command}"]
        assert len(starts) > occurrence, f"C: {command} not shown {occurrence + 1} times:\n{output}"
        start = starts[occurrence]
    return next(line for line in lines[start + 1 :] if line.startswith(f"   {status}: ")).removeprefix(f"   {status}: ")


def check_probes(output: str, probes: list[tuple[str, int, str, str]], verbs: dict[str, str]) -> set[tuple[str, str]]:
    """Check that each probe's reply got its verb-specific explanation, holding its word; return the pairs
    (status, verb) checked."""
    checked = set()
    for command, occurrence, status, word in probes:
        verb = verbs.get(command, command.split(" ")[0])
        expected = client_module.REPLY_MEANINGS[status].after[verb]
        shown = explanation_after(output, command, occurrence, status)
        assert shown.startswith(expected) and word in expected, (command, status, shown)  # 334: and what it asks
        checked.add((status, verb))
    return checked


def test_every_verb_specific_explanation_the_server_can_cause_is_shown(
    start_server: Callable[..., RunningServer], certificate: Certificate
) -> None:
    """Issue 18: the explanation of 452 after RCPT ("mailbox full") was guarded by no test; now each one is."""
    checked: set[tuple[str, str]] = set()
    server = start_server(pop3=True, max_message_size=300, max_mailbox_size=1)
    conftest.deliver(server.server.mailboxes, "bob", b"Subject: fills the inbox\n\nx\n")
    for script, probes in ((LOGIN_SCRIPT, LOGIN_PROBES), (MAIL_SCRIPT, MAIL_PROBES)):
        checked |= check_probes(raw(server.port, "\n".join(script) + "\n").stdout, probes, {})
    pop3 = raw_pop3(server, "\n".join(POP3_SCRIPT) + "\n").stdout
    checked |= check_probes(pop3, POP3_PROBES, {"PASS ********": "PASS"})

    tls = start_server(pop3=True, tls_context=certificate.server_context(), require_tls=True)
    cafile = ("--cafile", str(certificate.cert))
    smtp_tls = raw(tls.port, "EHLO laptop\nAUTH PLAIN =\nSTARTTLS\nSTARTTLS\n", *cafile).stdout
    checked |= check_probes(
        smtp_tls,
        [("AUTH PLAIN ********", 0, "530", "TLS"), ("STARTTLS", 0, "220", "handshake"),
         ("STARTTLS", 1, "503", "already on")],
        {},
    )  # fmt: skip
    checked |= check_probes(raw_pop3(tls, "STLS\n", *cafile).stdout, [("STLS", 0, "+OK", "handshake")], {})

    throttled = start_server(max_login_failures=1, max_connections=2)
    failed = RawSession(throttled.host, throttled.port)
    failed.read_reply()
    failed.ehlo()
    assert failed.command(f"AUTH PLAIN {plain_response('alice', 'wrong')}")[0] == 535
    failed.close()
    login = f"AUTH PLAIN {plain_response('alice', PASSWORD)}"
    refused = raw(throttled.port, f"EHLO laptop\n{login}\n").stdout
    checked |= check_probes(refused, [("AUTH PLAIN ********", 0, "454", "wait")], {})
    held = [RawSession(throttled.host, throttled.port) for _ in range(2)]  # the caps are full
    try:
        for session in held:
            session.read_reply()
        checked |= check_probes(raw(throttled.port, "").stdout, [("CONNECT", 0, "421", "busy")], {})
    finally:
        for session in held:
            session.close()

    can_send = set(reply_codes_in_the_server())
    caused = {(status, verb) for status, meaning in client_module.REPLY_MEANINGS.items() for verb in meaning.after}
    assert checked == {(status, verb) for status, verb in caused if status in can_send}
