"""Lists the server derives from its code, so that one change is made in one place.

- The SASL mechanisms are the `auth_<NAME>` methods: EHLO's AUTH line, POP3's CAPA and
  AUTH list, the syntax AUTH quotes and the "use PLAIN or LOGIN" refusal all follow them.
- A command's syntax is the first line of its docstring: SMTP's 501 and POP3's -ERR quote it.
- When a command is offered (STARTTLS only with a certificate, before TLS) is declared
  once, beside it, with `offered_when()`; HELP, EHLO and CAPA ask `offers()`.

Each test changes the source of a list (a docstring, a method, a declaration) and
checks that what the client sees changes with it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import POP3Session, RawSession, RunningServer

from mailserver.config import ServerConfig
from mailserver.pop3 import POP3Handler
from mailserver.sasl import Credentials
from mailserver.smtp import SMTPHandler


def test_the_mechanisms_are_the_auth_methods_in_the_order_they_are_defined() -> None:
    assert SMTPHandler.mechanisms() == ["PLAIN", "LOGIN"]
    assert POP3Handler.mechanisms() == ["PLAIN"]


class WithXTest(SMTPHandler):
    """SMTP with one more mechanism, as a contributor would add one: one method."""

    def auth_XTEST(self, initial: str | None) -> Credentials | None:
        """A mechanism for this test only."""
        return None


def idle_session(handler: type[SMTPHandler]) -> SMTPHandler:
    """A session object without a connection: enough for what it would say."""
    session = handler.__new__(handler)
    session.config = ServerConfig(hostname="mail.test")
    session.tls_active = False
    return session


def test_a_new_auth_method_is_offered_everywhere_a_mechanism_is_named() -> None:
    session = idle_session(WithXTest)
    assert "AUTH PLAIN LOGIN XTEST" in session.extensions()  # EHLO
    assert session.syntax("AUTH") == "AUTH PLAIN|LOGIN|XTEST [<initial-response>]"  # HELP and the 501
    replies: list[tuple[int, str]] = []
    session.reply = lambda code, *lines: replies.append((code, *lines))  # type: ignore[method-assign]
    assert session.authenticate("CRAM-MD5 abc") is None
    assert replies == [(504, "Unrecognized authentication type; use PLAIN or LOGIN or XTEST")]


@pytest.mark.parametrize(
    ("verb", "line", "first"),
    [("HELO", "HELO", ""), ("VRFY", "VRFY", ""), ("AUTH", "AUTH", "EHLO"), ("MAIL", "MAIL TO:<a@b>", "login")],
)
def test_smtp_501_quotes_the_docstring(
    connect: Callable[..., RawSession], monkeypatch: pytest.MonkeyPatch, verb: str, line: str, first: str
) -> None:
    method = getattr(SMTPHandler, f"smtp_{verb}")
    monkeypatch.setattr(method, "__doc__", f"{verb} <what a contributor wrote>\n\nWhat it does.")
    session = connect()
    if first == "EHLO":
        session.ehlo()
    elif first == "login":
        session.login()
    assert session.command(line) == (501, [f"Syntax: {verb} <what a contributor wrote>"])
    assert session.command(f"HELP {verb}") == (214, [f"{verb} <what a contributor wrote>", "What it does."])


def test_pop3_err_quotes_the_docstring(
    pop3_connect: Callable[..., POP3Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(POP3Handler.pop3_USER, "__doc__", "USER <a name, as a contributor wrote it>")
    session = pop3_connect()
    session.expect("""
        C: USER
        S: -ERR Syntax: USER <a name, as a contributor wrote it>
    """)


def test_when_a_command_is_offered_is_declared_beside_it(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HELP lists a command only while its offered_when() holds: NOOP, declared never offered, goes."""
    session = connect()
    assert "NOOP" in session.command("HELP")[1][0].split()
    monkeypatch.setattr(SMTPHandler.smtp_NOOP, "offered_when", lambda session: False, raising=False)
    assert "NOOP" not in session.command("HELP")[1][0].split()
    assert session.command("NOOP") == (250, ["OK"])  # not offered is not refused: STARTTLS answers 454 itself
