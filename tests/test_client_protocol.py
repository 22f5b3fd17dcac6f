"""What client.py knows of the protocols, checked against what the server implements (issue 17).

client.py is one file that students copy, so it cannot import the server: it keeps its own short
lists. These tests hold them to the server's code and to a live server's replies: the raw console's
POP3 command help against POP3Handler's commands and their syntax lines, which POP3 commands answer
with a block of lines against what the server sends, and SMTP's RETR block count against what
SMTPHandler sends. (tests/test_console.py does the same for the replies the console explains.)
"""

from __future__ import annotations

import inspect
import re
import smtplib
from collections.abc import Callable

import pytest
from conftest import USERS, POP3Session, RawSession, RunningServer

import client as client_module
from mailserver.pop3 import POP3Handler
from mailserver.smtp import SMTPHandler

POP3Dialect, SMTPDialect = client_module.POP3Dialect, client_module.SMTPDialect
Sent = client_module.Sent

# The commands the probes leave out, and why: each changes the session for good (a login, TLS, the end),
# so a probe could not go on after it; each is answered in one line (RFC 1939, RFC 2595).
POP3_NOT_PROBED = {"USER", "PASS", "STLS", "QUIT"}
# SMTP: DATA starts a message, AUTH a login, STARTTLS the handshake, QUIT the end.
SMTP_NOT_PROBED = {"DATA", "AUTH", "STARTTLS", "QUIT"}
ARGUMENTS = ["", "1", "1 1"]  # none, a message number, a number and a count of lines (TOP)


def syntax_of(handler: type[POP3Handler] | type[SMTPHandler], verb: str) -> str:
    """The first line of the command's docstring, {mechanisms} filled in: what the server's syntax errors quote."""
    method = getattr(handler, handler.command_prefix + verb)
    syntax = inspect.cleandoc(method.__doc__ or "").splitlines()[0]
    return syntax.replace("{mechanisms}", "|".join(handler.mechanisms()))


def shape(syntax: str) -> list[str]:
    """The words of a syntax line with each placeholder made alike: `<...>` or a lower-case word is `<>`."""
    words = []
    for word in syntax.split():
        optional = word.startswith("[") and word.endswith("]")
        core = word[1:-1] if optional else word
        placeholder = core.startswith("<") or core.islower()
        words.append(("[<>]" if optional else "<>") if placeholder else word)
    return words


def client_pop3_help() -> dict[str, str]:
    """The raw console's POP3 command help, as {verb: syntax}."""
    listed = POP3Dialect.commands_help.split(": ", 1)[1]
    return {entry.split()[0]: entry for entry in listed.split(", ")}


def test_the_pop3_help_lists_every_command_the_server_has_and_no_other() -> None:
    assert set(client_pop3_help()) == set(POP3Handler.commands())


def test_the_pop3_help_writes_each_command_as_the_server_takes_it() -> None:
    """The same words and arguments; the help may leave out optional arguments at the end (AUTH's initial response)."""
    differ = {}
    for verb, written in client_pop3_help().items():
        server = shape(syntax_of(POP3Handler, verb))
        allowed = [server[:end] for end in range(len(server), 0, -1) if all(w == "[<>]" for w in server[end:])]
        if shape(written) not in allowed:
            differ[verb] = (written, syntax_of(POP3Handler, verb))
    assert differ == {}


def test_the_consoles_block_commands_are_the_servers() -> None:
    assert set(POP3Handler.commands()) >= POP3Dialect.MULTI_LINE | POP3Dialect.LISTS


def answer_and_block(session: RawSession, command: str, sentinel: str) -> tuple[str, int]:
    """Send command, then NOOP; return the command's first line and how many dot-ended blocks came before
    NOOP's reply (sentinel, its exact line), so that no block can be missed or made up."""
    session.send(f"{command}\r\nNOOP\r\n")
    first = session.read_line()
    blocks = 0
    while (line := session.read_line()) != sentinel:
        blocks += line == "."
    return first, blocks


@pytest.fixture
def probe_pop3(
    pop3_server: RunningServer, pop3_connect: Callable[..., POP3Session]
) -> Callable[[str, bool], tuple[str, int]]:
    """probe(command, logged_in): a new session (alice's inbox holds one message), then answer_and_block."""
    with smtplib.SMTP(pop3_server.host, pop3_server.port, local_hostname="test.local") as smtp:
        smtp.login("bob", USERS["bob"])
        smtp.sendmail("bob@mail.test", ["alice@mail.test"], "Subject: probe\r\n\r\none line\r\n")

    def probe(command: str, logged_in: bool) -> tuple[str, int]:
        session = pop3_connect()
        if logged_in:
            session.login()
        sentinel = session.status("NOOP")  # its exact reply in this state, so that it can end the probe
        try:
            return answer_and_block(session, command, sentinel)
        finally:
            session.send("RSET\r\nQUIT\r\n")  # nothing a probe marked is deleted; QUIT frees the inbox at once
            session.closed_by_server()

    return probe


def test_the_console_expects_a_block_exactly_where_the_pop3_server_sends_one(
    probe_pop3: Callable[[str, bool], tuple[str, int]],
) -> None:
    """Every command the server has, with no argument, a number and two numbers, before and after a login."""
    differ = {}
    blocks_seen = set()
    for verb in sorted(set(POP3Handler.commands()) - POP3_NOT_PROBED):
        for argument in ARGUMENTS:
            for logged_in in (False, True):
                first, blocks = probe_pop3(f"{verb} {argument}".strip(), logged_in)
                reply = POP3Dialect.parse(first)
                assert reply is not None, first
                expected = POP3Dialect.blocks_after(Sent(verb, argument), reply)
                if blocks != expected:
                    differ[(verb, argument, logged_in)] = (first, blocks, expected)
                if blocks:
                    blocks_seen.add(verb)
    assert differ == {}, "(verb, argument, logged in): (reply, blocks the server sent, blocks the console expects)"
    assert blocks_seen == POP3Dialect.MULTI_LINE | POP3Dialect.LISTS  # the probes reached every block there is


def alice_sends(server: RunningServer, count: int) -> None:
    """alice sends count messages (what her RETR gives back), each with lines a reader must unstuff."""
    with smtplib.SMTP(server.host, server.port, local_hostname="test.local") as smtp:
        smtp.login("alice", USERS["alice"])
        for number in range(count):
            smtp.sendmail("alice@mail.test", ["bob@mail.test"], f"Subject: {number}\r\n\r\n.\r\n..\r\n")


def probe_smtp(server: RunningServer, command: str) -> tuple[str, int]:
    """A new session logged in as alice, then answer_and_block."""
    session = RawSession(server.host, server.port)
    try:
        session.read_reply()
        session.login()
        _, (noop,) = session.command("NOOP")
        return answer_and_block(session, command, f"250 {noop}")
    finally:
        session.close()


@pytest.mark.parametrize("sent", [0, 1, 2])
def test_smtp_retr_is_followed_by_as_many_blocks_as_the_console_and_the_menu_read(
    smtp_server: RunningServer, sent: int
) -> None:
    alice_sends(smtp_server, sent)
    first, blocks = probe_smtp(smtp_server, "RETR")
    reply = SMTPDialect.parse(first)
    assert reply is not None and reply.final, first
    assert blocks == SMTPDialect.blocks_after(Sent("RETR"), reply) == sent
    with client_module.MailClient(smtp_server.host, smtp_server.port) as client:
        client.login("alice", USERS["alice"])
        assert len(client.retr()) == sent
        assert client.count() == sent


def test_no_other_smtp_command_is_followed_by_a_block(smtp_server: RunningServer) -> None:
    """What the console reads after a reply: nothing but the next reply, for every other command the server has
    (with two sent messages there, so that a count in a reply, as DELE's, is not 0)."""
    differ = {}
    for verb in sorted(set(SMTPHandler.commands()) - SMTP_NOT_PROBED - {"RETR"}):
        alice_sends(smtp_server, 2)
        first, blocks = probe_smtp(smtp_server, verb)
        reply = SMTPDialect.parse(first)
        assert reply is not None, first
        if blocks != SMTPDialect.blocks_after(Sent(verb), reply):
            differ[verb] = (first, blocks)
    assert differ == {}


def test_the_shapes_compare_what_they_should() -> None:
    """The comparison itself: a missing argument is caught, an optional one left out at the end is not."""
    assert shape("TOP <message-number> <lines>") == shape("TOP n lines") == ["TOP", "<>", "<>"]
    assert shape("LIST [<message-number>]") == shape("LIST [n]") == ["LIST", "[<>]"]
    assert shape("RETR") != shape("RETR <message-number>")
    assert re.fullmatch(r"POP3 commands \(RFC 1939\): .+", POP3Dialect.commands_help)
