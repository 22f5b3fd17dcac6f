"""Who a message says it is from (issue 18, item 1): no student sends as a classmate.

A sender address in a local domain must be the logged-in user's own (553 5.7.1 otherwise,
as Postfix's reject_sender_login_mismatch); other domains stay allowed. The inbox copy's
Received: names the logged-in user, and a Return-Path: the client wrote is dropped from
the inbox copy only (RFC 5321 4.4); the Sent copy is kept byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import RawSession, RunningServer

from mailserver.maildir import FieldRemover

BODY = b"From: bob@localhost\r\nSubject: from the teacher\r\n\r\nHand in your password.\r\n"


@pytest.mark.parametrize("sender", ["bob@localhost", "BOB@mail.test", "carol@LOCALHOST", "nobody@localhost"])
def test_a_local_sender_that_is_not_the_users_own_is_refused(
    logged_in: RawSession, smtp_server: RunningServer, sender: str
) -> None:
    assert logged_in.command(f"MAIL FROM:<{sender}>") == (553, [f"5.7.1 <{sender}>: not owned by user alice"])
    assert logged_in.command("RCPT TO:<carol@localhost>")[0] == 503  # no transaction was started
    assert smtp_server.inbox("carol") == []


@pytest.mark.parametrize("sender", ["alice@localhost", "ALICE@mail.test", "Alice@LocalHost", "mytest@mail.gr", ""])
def test_the_users_own_address_other_domains_and_the_null_sender_are_allowed(
    logged_in: RawSession, smtp_server: RunningServer, sender: str
) -> None:
    assert logged_in.send_message(BODY, sender, ["carol@localhost"])[0] == 250
    assert len(smtp_server.inbox("carol")) == 1


def test_the_inbox_copy_names_the_authenticated_sender(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(BODY, "mytest@mail.gr", ["carol@localhost"])[0] == 250
    [copy] = smtp_server.inbox("carol")
    lines = copy.split(b"\n")
    assert lines[0] == b"Return-Path: <mytest@mail.gr>"
    assert lines[1] == b"Received: from client.test ([127.0.0.1])"
    assert lines[2] == b"\t(Authenticated sender: alice)"
    assert lines[3].startswith(b"\tby mail.test with ESMTPA; ")


SPOOFED = (
    b"Return-Path: <teacher@localhost>\r\n"
    b"Subject: hi\r\n"
    b"return-path :\r\n"
    b"\t<folded@localhost>\r\n"
    b"X-Kept: yes\r\n"
    b"\r\n"
    b"Return-Path: <in-the-body@localhost> stays\r\n"
)


def test_a_return_path_the_client_wrote_is_dropped_from_the_inbox_copy_only(
    logged_in: RawSession, smtp_server: RunningServer
) -> None:
    assert logged_in.send_message(SPOOFED, "alice@mail.test", ["carol@localhost", "bob@localhost"])[0] == 250
    for user in ("carol", "bob"):
        [copy] = smtp_server.inbox(user)
        header, body = copy.split(b"\n\n", 1)
        assert [line for line in header.split(b"\n") if line.lower().startswith(b"return-path")] == [
            b"Return-Path: <alice@mail.test>"
        ]
        assert b"folded@localhost" not in header
        assert header.endswith(b"\nSubject: hi\nX-Kept: yes")
        assert body == b"Return-Path: <in-the-body@localhost> stays\n"
    assert smtp_server.stored("alice") == [SPOOFED.replace(b"\r\n", b"\n")]  # the Sent copy: byte for byte


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_the_remover_gives_the_same_copy_whatever_the_pieces(size: int) -> None:
    message = SPOOFED.replace(b"\r\n", b"\n")
    remover = FieldRemover(b"Return-Path")
    out = b"".join(remover(message[i : i + size]) for i in range(0, len(message), size)) + remover.rest()
    assert out == b"Subject: hi\nX-Kept: yes\n\nReturn-Path: <in-the-body@localhost> stays\n"


def test_a_message_of_a_return_path_line_alone_keeps_nothing_of_it() -> None:
    remover = FieldRemover(b"Return-Path")
    assert remover(b"Return-Path: <x@localhost>") + remover.rest() == b""


def test_the_sender_rule_holds_for_every_local_domain(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession]
) -> None:
    # An extra --domain is as local as localhost: the rule follows local_domains, not a list of its own.
    server = start_server(domain=("school.example",))
    session = connect(server)
    session.login("bob")
    assert session.command("MAIL FROM:<alice@school.example>")[0] == 553
    assert session.command("MAIL FROM:<bob@School.Example>")[0] == 250
