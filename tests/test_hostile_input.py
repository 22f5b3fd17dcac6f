"""Hostile input: whatever a client sends, the server answers well-formed replies and stays up.

Issue 4 ("Hostile input", "SMTP smuggling"): property-based tests of the address parser,
the command dispatch and AUTH decoding; a socket fuzzer sending a few thousand random and
mutated sessions; and the smuggling sequences inside DATA. Issue 2: every reply line is
`^\\d{3}[ -].*\\r\\n`; a handler exception is a bug even when it is answered 421.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import logging
import random
import re
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import USERS, RawSession, RunningServer
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.envelope import parse_path
from mailserver.sasl import well_formed_name
from mailserver.users import find_account

REPLY_LINE = re.compile(rb"\d{3}[ -][^\r\n]*\r\n")
RETR_REPLY = re.compile(rb"250 (\d+) messages? follows?\r\n")
# Every code the contract (issue 2) can give to a line of a session that is not over its error limit.
CODES = {214, 221, 235, 250, 252, 334, 354, 454, 500, 501, 503, 504, 530, 535, 552, 555}
CLOSING_CODES = {221, 535}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


RIGHT_PLAIN = b64(f"\0alice\0{USERS['alice']}".encode())


def as_bytes(text: str | bytes) -> bytes:
    """Text as UTF-8; lone surrogates become the invalid UTF-8 a hostile client may send."""
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")


def server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the server logged at ERROR or above: tracebacks of handler exceptions, say."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def read_reply(session: RawSession) -> tuple[int, bytes]:
    """One reply, each line checked against ^\\d{3}[ -][^\\r\\n]*\\r\\n; return (code, last line)."""
    while True:
        line = session.file.readline(100_000)
        assert line, "the server closed the connection without a reply"
        assert REPLY_LINE.fullmatch(line), f"malformed reply line: {line!r}"
        if line[3:4] == b" ":
            return int(line[:3]), line


def skip_retrieved(session: RawSession, last_line: bytes) -> None:
    """After `250 N messages follow`, read the N dot-ended blocks."""
    if match := RETR_REPLY.fullmatch(last_line):
        for _ in range(int(match[1])):
            while session.file.readline(100_000) not in (b".\r\n", b""):
                pass


def hostile_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    # The throttle would answer every AUTH with 454 after a few failures: lift it, to reach the decoder.
    return start_server(max_login_failures=10**9, max_login_failures_per_ip=10**9)


# ----------------------------------------------------------------------- the address parser

# RFC 5321 4.1.2 and 4.5.3.1, restated here so that the parser is not checked against itself.
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM = rf"[{re.escape(ATEXT)}]+(?:\.[{re.escape(ATEXT)}]+)*"
_QUOTED_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
RFC5321_MAILBOX = re.compile(
    rf"(?P<local>{_DOT_ATOM}|{_QUOTED_STRING})@(?P<domain>{_LABEL}(?:\.{_LABEL})*|\[[\x21-\x5a\x5e-\x7e]+\])"
)
MAX_LOCAL_PART, MAX_DOMAIN, MAX_PATH = 64, 255, 256  # octets; the path counts its angle brackets

NASTY_PIECES = [
    *["", " ", "  ", "<", ">", "<>", "@", "@@", '"', '\\"', "\\", ".", "..", "\0", "\r", "\n", "\t", "\x7f", "\x1b[2J"],
    *["[", "]", "[127.0.0.1]", "[IPv6:::1]", "é", "ü@ü", "postmaster", "PostMaster", "a" * 64, "a" * 65, "b" * 300],
    *["SIZE=10", "SIZE=99999999999999", "BODY=8BITMIME", "BODY=", "=", ":", "FROM:", "TO:", "-", "a-", "-a", "a.b"],
]
piece = st.one_of(
    st.sampled_from(NASTY_PIECES), st.text(max_size=20), st.from_regex(r"[A-Za-z0-9.-]{1,70}", fullmatch=True)
)
pieces = st.lists(piece, max_size=4).map("".join)
path_arguments = st.one_of(
    st.text(max_size=300),
    st.builds(
        "{}{}<{}@{}{}{}".format,
        st.sampled_from(["FROM:", "TO:", "from:", "To:", "FROM", "", "FROM:FROM:"]),
        st.sampled_from(["", " ", "  ", "\t"]),
        pieces,
        pieces,
        st.sampled_from([">", "", ">>", "> "]),
        pieces,
    ),
)


@settings(max_examples=300, deadline=None)
@given(argument=path_arguments, keyword=st.sampled_from(["FROM:", "TO:"]), allow_null=st.booleans())
def test_parse_path_never_raises_and_returns_only_valid_paths(argument: str, keyword: str, allow_null: bool) -> None:
    parsed = parse_path(argument, keyword, allow_null=allow_null)
    if parsed is None:
        return  # refused: the caller answers 501
    address, parameters = parsed
    assert argument[: len(keyword)].upper() == keyword
    assert len(address) + 2 <= MAX_PATH
    assert not set(address) & set("\r\n\0")
    assert all(parameter and not any(c.isspace() for c in parameter) for parameter in parameters)
    if address == "":
        assert allow_null, "<> is only a reverse-path"
    elif address.lower() == "postmaster" and not allow_null:
        pass  # RFC 5321 4.5.1
    else:
        match = RFC5321_MAILBOX.fullmatch(address)
        assert match is not None, address
        assert len(match["local"]) <= MAX_LOCAL_PART
        assert len(match["domain"]) <= MAX_DOMAIN


atoms = st.text(ATEXT, min_size=1, max_size=12)
local_parts = st.one_of(
    st.lists(atoms, min_size=1, max_size=4).map(".".join),
    st.lists(  # RFC 5321 4.1.2: a quoted string of qtext and quoted pairs
        st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\')
        | st.characters(min_codepoint=0x20, max_codepoint=0x7E).map("\\".__add__),
        max_size=20,
    ).map(lambda characters: '"' + "".join(characters) + '"'),
)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
domains = st.one_of(st.lists(labels, min_size=1, max_size=4).map(".".join), st.just("[192.0.2.1]"))


@settings(max_examples=150, deadline=None)
@given(local=local_parts, domain=domains, spaces=st.sampled_from(["", " "]), keyword=st.sampled_from(["FROM:", "TO:"]))
def test_parse_path_accepts_every_valid_address(local: str, domain: str, spaces: str, keyword: str) -> None:
    """The other half: RFC 5321 addresses within the length limits are not refused."""
    address = f"{local}@{domain}"
    if len(local) > MAX_LOCAL_PART or len(address) + 2 > MAX_PATH:
        return
    parsed = parse_path(f"{keyword.lower()}{spaces}<{address}> SIZE=100", keyword, allow_null=False)
    assert parsed == (address, ["SIZE=100"])


# ----------------------------------------------------------------------- command dispatch

VERBS = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "HELP", "AUTH", "RETR", "DELE"]
VERBS += ["STARTTLS", "EXPN", "TURN", "XYZZY", "BDAT", ""]
ARGUMENTS = ["FROM:<a@b.example>", "TO:<x@y.example>", "FROM:<>", "TO:<postmaster>", "PLAIN", "LOGIN", "*", "="]
ARGUMENTS += ["FROM:<a@b.example> SIZE=99999999999", "FROM:<a@b.example> BODY=8BITMIME", "PLAIN " + RIGHT_PLAIN]
verbs = st.sampled_from(VERBS).flatmap(lambda verb: st.sampled_from([verb, verb.lower(), verb.title()]))
arguments = st.one_of(
    st.sampled_from(ARGUMENTS),
    st.text(st.characters(exclude_characters="\n"), max_size=40).map(as_bytes),
    st.binary(max_size=40).map(lambda raw: raw.replace(b"\n", b"")),
    st.integers(500, 600).map(lambda length: "x" * length),  # around the 512-octet command limit
)
command_lines = st.one_of(
    st.builds(
        lambda verb, separator, argument: verb.encode() + separator + as_bytes(argument),
        verbs,
        st.sampled_from([b" ", b"  ", b"\t", b"", b"\0", b" \r"]),
        arguments,
    ),
    st.builds(  # the commands that parse a path get more of the parser's nasty input
        lambda verb, argument: as_bytes(f"{verb} {argument}".replace("\n", "")),
        st.sampled_from(["MAIL", "RCPT", "mail", "rcpt"]),
        path_arguments,
    ),
)


def test_command_dispatch_over_a_socket_answers_every_line_well_formed(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = hostile_server(start_server)

    @settings(max_examples=250, deadline=None)
    @given(lines=st.lists(command_lines, min_size=1, max_size=6), log_in=st.booleans())
    def one_session(lines: list[bytes], log_in: bool) -> None:
        session = RawSession(server.host, server.port)
        try:
            assert read_reply(session)[0] == 220
            if log_in:
                session.login()
            for line in lines:
                session.send(line + b"\r\n")
                code, last = read_reply(session)
                assert code in CODES, last
                if code == 334:  # an AUTH exchange: cancel it
                    session.send(b"*\r\n")
                    assert read_reply(session)[0] == 501
                elif code == 354:
                    session.send(b"hostile test\r\n.\r\n")
                    assert read_reply(session)[0] == 250
                skip_retrieved(session, last)
                if code in CLOSING_CODES:
                    assert session.closed_by_server()
                    return
            session.send(b"NOOP\r\n")  # still in step: the next reply is NOOP's
            assert read_reply(session)[0] == 250
        finally:
            session.close()

    one_session()
    assert not server_errors(caplog)


# ----------------------------------------------------------------------- AUTH decoding

usernames = st.sampled_from([b"alice", b"../alice", b"../../etc/passwd", b"alice/../bob", b".", b"..", b"ALICE"])
usernames |= st.sampled_from([b"alice\0", b"", b"\xff\xfe", b"alice\r\nRSET", "ålice".encode()])
passwords = st.one_of(st.just(USERS["alice"].encode()), st.binary(max_size=80), st.binary(min_size=1000, max_size=1100))
auth_responses = st.one_of(
    st.builds(lambda user, password: b64(b"\0" + user + b"\0" + password), usernames, passwords),
    st.builds(lambda identity, password: b64(identity + b"\0alice\0" + password), usernames, passwords),
    st.binary(max_size=1100).map(b64),
    usernames.map(b64),
    passwords.map(b64),
    st.text("ABCDabcd0123+/=!*-_. \t", max_size=30),  # mostly broken base64
    st.sampled_from(["*", "=", "====", "YWxpY2U", "YWxpY2U=extra", "Y", RIGHT_PLAIN + "=", RIGHT_PLAIN]),
)


def decoded(response: str) -> bytes | None:
    """What the server makes of one AUTH response: bytes, or None when it is cancelled or not base64."""
    response = response.strip()
    if response == "*":
        return None
    if response == "=":
        return b""
    try:
        return base64.b64decode(response, validate=True)
    except ValueError:
        return None


def expected_reply(mechanism: str, responses: list[str]) -> int:
    """The code the contract gives to an AUTH exchange that used these responses (none cancelled midway)."""
    if mechanism.upper() not in ("PLAIN", "LOGIN"):
        return 504
    first = decoded(responses[0])
    if first is None:
        return 501  # "*" or bad base64
    password = USERS["alice"].encode()
    if mechanism.upper() == "PLAIN":
        parts = first.split(b"\0")
        if len(parts) != 3:
            return 501
        authzid, name = (part.decode("utf-8", "replace") for part in parts[:2])
        if not well_formed_name(name):
            return 501  # issue 18: one rule for a name, whitespace around it is malformed
        wanted = authzid == "" or is_alice(authzid)
        return 235 if wanted and is_alice(name) and parts[2] == password else 535
    second = decoded(responses[1])
    if second is None or not well_formed_name(first.decode("utf-8", "replace")):
        return 501
    return 235 if is_alice(first.decode("utf-8", "replace")) and second == password else 535


def is_alice(name: str) -> bool:
    """True if name means the account alice: the name as a login resolves it, case ignored."""
    return find_account(USERS, name) == "alice"


def test_auth_decoding_takes_any_response_and_lets_only_the_right_password_in(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = hostile_server(start_server)

    @settings(max_examples=250, deadline=None)
    @given(
        mechanism=st.sampled_from(["PLAIN", "LOGIN", "plain", "Login", "CRAM-MD5", "XOAUTH2", "PLAIN2", "PL4IN"]),
        initial=st.none() | auth_responses,
        answers=st.lists(auth_responses, max_size=2),
    )
    def one_login(mechanism: str, initial: str | None, answers: list[str]) -> None:
        session = RawSession(server.host, server.port)
        try:
            assert read_reply(session)[0] == 220
            assert session.command("EHLO hostile.test")[0] == 250
            consumed = []
            if initial is not None and initial.strip():
                consumed.append(initial)
            session.send(f"AUTH {mechanism}{'' if initial is None else ' ' + initial}\r\n")
            code, last = read_reply(session)
            pending = list(answers)
            while code == 334:
                answer = pending.pop(0) if pending else "*"
                consumed.append(answer)
                session.send(answer + "\r\n")
                code, last = read_reply(session)
            assert code == expected_reply(mechanism, consumed), (consumed, last)
            if code == 535:
                assert session.closed_by_server(), "535 must end the connection"
                return
            # After 501/504 the session goes on, logged in only after a 235.
            assert session.command("MAIL FROM:<a@b.example>")[0] == (250 if code == 235 else 530)
        finally:
            session.close()

    one_login()
    assert not server_errors(caplog)


# ----------------------------------------------------------------------- the socket fuzzer

FUZZ_SESSIONS = 3000
FUZZ_CONNECTIONS = 8  # sessions in flight at once
FUZZ_SEED = 20241128
SESSION_SECONDS = 15.0  # one fuzz session must be over by then, or the server stalls

ALICE = USERS["alice"].encode()
LOGGED_IN = b"EHLO x\r\nAUTH PLAIN " + RIGHT_PLAIN.encode() + b"\r\n"
TEMPLATES: list[list[bytes]] = [
    [
        b"EHLO fuzz.test",
        b"AUTH PLAIN " + RIGHT_PLAIN.encode(),
        b"MAIL FROM:<a@b.example>",
        b"RCPT TO:<c@d.example>",
        b"DATA",
        b"Subject: fuzz",
        b"",
        b"..dot",
        b"body",
        b".",
        b"RETR",
        b"QUIT",
    ],
    [b"HELO fuzz", b"AUTH LOGIN", b64(b"alice").encode(), b64(ALICE).encode(), b"RETR", b"DELE", b"QUIT"],
    [b"EHLO x", b"AUTH LOGIN " + b64(b"../../etc/passwd").encode(), b64(b"x" * 1024).encode()],
    [b"EHLO x", b"AUTH PLAIN " + b64(b"\0../alice\0" + ALICE).encode(), b"MAIL FROM:<a@b.example>"],
    [b"EHLO x", b"AUTH PLAIN " + b64(b"\0alice\0" + b"p" * 1024).encode()],  # a 1 KiB password
    [b"EHLO x", b"AUTH PLAIN !!!not*base64", b"AUTH PLAIN", b"YWxpY2U", b"AUTH LOGIN", b"====", b"*"],
    [b"EHLO x", b"AUTH PLAIN " + b64(b"alice").encode(), b"AUTH XOAUTH2 abc", b"AUTH"],
    [b"HELP", b"HELP MAIL", b"help data", b"VRFY alice", b"NOOP", b"RSET", b"EXPN x", b"STARTTLS"],
    [b"EHLO x", b"MAIL FROM:<a@b.example> SIZE=1", b"RCPT TO:<postmaster>", b"DATA", b"RETR", b"DELE"],
    [
        b"EHLO x",
        b"AUTH PLAIN " + RIGHT_PLAIN.encode(),
        b"MAIL FROM:<>",
        b"RCPT TO:<x@[127.0.0.1]>",
        b"DATA",
        b"line\n.\nMAIL FROM:<evil@x.example>",
        b"\r.\r",
        b".",
    ],
]
INTERESTING = [b"\0", b"\r", b"\n", b"\r\n", b"\xff", b"\x80", b".", b"\r\n.\r\n", b"\n.\n", b" ", b":", b"<", b">"]
INTERESTING += [b"\\", b'"', b"\x1b[2J", b"AUTH PLAIN ", b"DATA\r\n", b"=", b"*", "é".encode(), b"%s%n", b"A" * 600]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        where = rng.randrange(len(buffer) + 1)
        operation = rng.randrange(7)
        if operation == 0 and buffer:
            buffer[min(where, len(buffer) - 1)] = rng.randrange(256)
        elif operation == 1:
            buffer[where:where] = rng.choice(INTERESTING)
        elif operation == 2:
            del buffer[where : where + rng.randrange(1, 40)]
        elif operation == 3:
            span = bytes(buffer[where : where + rng.randrange(1, 200)])
            buffer[rng.randrange(len(buffer) + 1) : 0] = span * rng.randrange(1, 4)
        elif operation == 4:
            buffer = bytearray(buffer.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]), 1))
        elif operation == 5:
            buffer[where : where + 20] = bytes(buffer[where : where + 20]).swapcase()
        else:
            del buffer[where:]
    return bytes(buffer)


def fuzz_case(index: int) -> bytes:
    """The bytes of fuzz session number index (the same for the same index, run after run)."""
    rng = random.Random(FUZZ_SEED * 100_000 + index)
    kind = rng.random()
    template = b"".join(line + b"\r\n" for line in rng.choice(TEMPLATES))
    if kind < 0.40:
        return mutate(template, rng)
    if kind < 0.60:
        return rng.randbytes(rng.randrange(1, 3000))
    if kind < 0.80:  # pipelined junk: many short lines of anything, with bare CR, LF and NUL
        return b"".join(
            rng.choice([rng.randbytes(rng.randrange(0, 30)), rng.choice(INTERESTING), b"NOOP", b"\0" * 20])
            + rng.choice([b"\r\n", b"\n", b"\r"])
            for _ in range(rng.randrange(1, 200))
        )
    if kind < 0.98:
        return template + mutate(template, rng)
    huge = rng.choice([b"x", b"\0", b"\r", b"."]) * rng.randrange(10_000, 1_000_000)
    where = rng.choice([b"EHLO ", b"AUTH PLAIN ", b"", LOGGED_IN + b"AUTH LOGIN\r\n"])
    if rng.random() < 0.5:  # inside DATA
        where = LOGGED_IN + b"MAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n"
    return where + huge + rng.choice([b"", b"\r\n", b"\r\n.\r\nNOOP\r\n"])


def exchange(host: str, port: int, data: bytes, piece: int) -> tuple[bytes, bool]:
    """Send data pipelined in pieces while reading replies; close our side; read to EOF.

    Return (everything the server sent, whether the connection was reset). select() keeps
    both directions moving, so a server answering a flood of lines cannot deadlock us.
    """
    received, reset, sent = bytearray(), False, 0
    deadline = time.monotonic() + SESSION_SECONDS
    with socket.create_connection((host, port), timeout=SESSION_SECONDS) as sock:
        sock.setblocking(False)
        if not data:
            sock.shutdown(socket.SHUT_WR)  # a session of nothing: connect, then hang up
        try:
            while True:
                assert time.monotonic() < deadline, f"the server stalled; it sent {bytes(received[-200:])!r}"
                writing = [sock] if sent < len(data) else []
                readable, writable, _ = select.select([sock], writing, [], 1.0)
                if readable:
                    chunk = sock.recv(256 * 1024)
                    if not chunk:
                        break
                    received += chunk
                if writable:
                    try:
                        sent += sock.send(data[sent : sent + piece])
                    except (BrokenPipeError, ConnectionResetError):
                        sent = len(data)  # the server hung up early (535, QUIT, error limit): read what it said
                    if sent == len(data):
                        with contextlib.suppress(OSError):  # not if the server has closed already
                            sock.shutdown(socket.SHUT_WR)
        except ConnectionResetError:
            reset = True  # it closed with our pipelined input unread: the last replies may be lost
    return bytes(received), reset


def check_reply_stream(stream: bytes, reset: bool) -> int:
    """Every line the server sent is a well-formed reply (or part of a RETR block); return how many."""
    assert stream.startswith(b"220 ") or (reset and not stream), stream[:100]
    position, replies = 0, 0
    while position < len(stream):
        end = stream.find(b"\r\n", position)
        if end < 0:
            assert reset, f"reply not ended by CRLF: {stream[position:][:100]!r}"
            break
        line = stream[position : end + 2]
        assert REPLY_LINE.fullmatch(line), f"malformed reply line: {line!r}"
        assert int(line[:3]) in CODES | {220, 421}, line
        replies += 1
        position = end + 2
        if match := RETR_REPLY.fullmatch(line):
            for _ in range(int(match[1])):
                end = stream.find(b"\r\n.\r\n", position - 2)
                assert end >= 0 or reset, "RETR block not ended"
                position = len(stream) if end < 0 else end + 5
    return replies


def test_socket_fuzzer_leaves_the_server_up_and_answering_well_formed(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    server = hostile_server(start_server)

    def run(index: int) -> int:
        data = fuzz_case(index)
        piece = random.Random(index).choice([1, 7, 512, 64 * 1024]) if len(data) < 4000 else 64 * 1024
        try:
            stream, reset = exchange(server.host, server.port, data, piece)
            return check_reply_stream(stream, reset)
        except AssertionError as error:
            raise AssertionError(f"fuzz session {index} ({data[:200]!r}…): {error}") from None

    with concurrent.futures.ThreadPoolExecutor(FUZZ_CONNECTIONS) as pool:
        replies = sum(pool.map(run, range(FUZZ_SESSIONS)))
    assert replies > 5 * FUZZ_SESSIONS  # the sessions did talk to the server

    assert not server_errors(caplog), server_errors(caplog)[:5]
    # No client text became a path: only accounts have Maildirs, and nothing escaped the folder.
    assert {path.name for path in server.mailboxes_path.iterdir()} <= set(USERS)
    assert not [path for path in tmp_path.rglob("*") if path.name in ("etc", "passwd", "..")]

    # The server is alive and a normal session works.
    session = RawSession(server.host, server.port)
    try:
        assert read_reply(session)[0] == 220
        session.login()
        session.expect("""
            C: DELE
            S: 250 *
            C: MAIL FROM:<alice@example.org>
            S: 250 *
            C: RCPT TO:<bob@example.org>
            S: 250 *
            C: DATA
            S: 354 *
            C: Subject: after the storm
            C:
            C: still here
            C: .
            S: 250 *
            C: RETR
            S: 250 1 message follows
            S: Subject: after the storm
            S:
            S: still here
            S: .
            C: QUIT
            S: 221 *
        """)
    finally:
        session.close()


# ----------------------------------------------------------------------- SMTP smuggling


@pytest.mark.parametrize("sequence", [b"\n.\n", b"\n.\r\n", b"\r\n.\n"], ids=["LF.LF", "LF.CRLF", "CRLF.LF"])
def test_smuggled_end_of_data_does_not_end_the_message(
    sequence: bytes, smtp_server: RunningServer, logged_in: RawSession
) -> None:
    """A receiver that took `sequence` for the end of the data would run the smuggled transaction."""
    logged_in.start_data()
    smuggled = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled"
    data = b"Subject: honest\r\n\r\nbefore" + sequence + smuggled + sequence + b"after\r\n"
    logged_in.send(data + b".\r\nHELP NOOP\r\n")
    codes = []
    while (code := read_reply(logged_in)[0]) != 214:  # HELP's 214 marks the end of what we sent
        codes.append(code)
    assert codes == [250], "only the one real message may be answered"
    # The smuggling attempt is text of the one stored message, line for line (LF ends on disk).
    assert smtp_server.stored("alice") == [data.replace(b"\r\n", b"\n")]
    assert smtp_server.stored("alice")[0].count(b"\n.\n") == 2
