"""Local delivery: mail to an account here lands in its inbox, and only there; the sender's Sent copy stays as it was.

Issue 11, section 1: the local domains (--hostname, localhost, each --domain), RCPT's
250/550/452 for accounts, unknown users and full inboxes, postmaster, the trace fields
(RFC 5321 4.4) on the inbox copy only, one file linked into every local inbox (a copy
where a link fails), and all copies or none.
"""

from __future__ import annotations

import email.utils
import errno
import os
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import USERS, Certificate, RawSession, RunningServer, deliver, inbox_of, plain_response, write_users_file

from mailserver import durable, maildir
from mailserver.smtp import SMTPHandler

BODY = b"Subject: hello\r\n\r\nHi Bob.\r\n..a dotted line\r\n"
STORED = b"Subject: hello\n\nHi Bob.\n.a dotted line\n"  # on disk: LF ends, the dot unstuffed
SENDER = "alice@mail.test"


def rcpt(session: RawSession, address: str) -> tuple[int, list[str]]:
    return session.command(f"RCPT TO:<{address}>")


def header_and_rest(inbox_copy: bytes) -> tuple[list[bytes], bytes]:
    """Split an inbox copy into its trace fields (Return-Path, and Received folded twice) and the rest.

    Received's lines are joined into one: `from ...`, `(Authenticated sender: ...)`, `by ...`.
    """
    lines = inbox_copy.split(b"\n", 4)
    return [lines[0], lines[1], lines[3]], lines[4]


def inode_of(maildir: Path) -> os.stat_result:
    [path] = [*maildir.glob("new/*"), *maildir.glob("cur/*")]
    return path.stat()


# ---------------------------------------------------------------- which addresses are ours


def test_mail_to_an_account_here_reaches_its_inbox(logged_in: RawSession, smtp_server: RunningServer) -> None:
    code, text = logged_in.send_message(BODY, SENDER, ["bob@localhost"])
    assert code == 250, text
    [copy] = smtp_server.inbox("bob")
    assert header_and_rest(copy)[1] == STORED
    assert smtp_server.stored("alice") == [STORED]  # the sender's Sent, byte for byte as before
    assert smtp_server.inbox("alice") == []


@pytest.mark.parametrize(
    "address",
    ["bob@mail.test", "bob@MAIL.Test", "bob@localhost", "bob@LocalHost", "bob@school.example", "bob@CLASS.example"],
)
def test_local_domains_are_the_hostname_localhost_and_each_domain(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], address: str
) -> None:
    server = start_server(domain=("school.example", "Class.Example"))
    session = connect(server)
    session.login()
    assert session.send_message(BODY, SENDER, [address])[0] == 250
    assert len(server.inbox("bob")) == 1


def test_account_names_ignore_case(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(BODY, SENDER, ["BoB@localhost"])[0] == 250
    assert len(smtp_server.inbox("bob")) == 1
    assert sorted(path.name for path in smtp_server.mailboxes_path.iterdir()) == ["alice", "bob"]


def test_an_unknown_local_user_is_refused_with_550(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.expect("""
        C: MAIL FROM:<alice@mail.test>
        S: 250 OK
        C: RCPT TO:<nobody@localhost>
        S: 550 5.1.1 <nobody@localhost>: no such user here
        C: RCPT TO:<Nobody@MAIL.TEST>
        S: 550 5.1.1 <Nobody@MAIL.TEST>: no such user here
        C: RCPT TO:<bob@localhost>
        S: 250 OK
        C: DATA
        S: 354 *
        C: just bob
        C: .
        S: 250 OK: stored as *
    """)
    assert [header_and_rest(copy)[1] for copy in smtp_server.inbox("bob")] == [b"just bob\n"]
    assert not (smtp_server.mailboxes_path / "nobody").exists()


def test_other_domains_are_kept_only_in_the_senders_sent(logged_in: RawSession, smtp_server: RunningServer) -> None:
    # bob@example.org is not bob here: the server does not relay, and no inbox gets it.
    assert logged_in.send_message(BODY, SENDER, ["bob@example.org", "someone@mail.test.example"])[0] == 250
    assert smtp_server.stored("alice") == [STORED]
    assert sorted(path.name for path in smtp_server.mailboxes_path.iterdir()) == ["alice"]
    assert smtp_server.inbox("alice") == []


def test_rcpt_to_another_domain_says_the_mail_stays_in_sent(logged_in: RawSession) -> None:
    """Issue 21, item 1: the 250 is all a student's screen shows, so it says the mail goes nowhere else."""
    logged_in.expect("""
        C: MAIL FROM:<alice@mail.test>
        S: 250 OK
        C: RCPT TO:<ben@example.org>
        S: 250 2.1.5 <ben@example.org>: not a domain of this server, kept in your Sent folder only (no relay)
        C: RCPT TO:<bob@localhost>
        S: 250 OK
    """)


@pytest.mark.parametrize("typed", ["dora", "Bob", "x.y"])
def test_rcpt_of_a_bare_name_says_which_address_to_type(logged_in: RawSession, typed: str) -> None:
    """Issue 21, item 11: a bare name gets a 501 that shows the address it needs, not the syntax line."""
    logged_in.expect(f"""
        C: MAIL FROM:<alice@mail.test>
        S: 250 OK
        C: RCPT TO:<{typed}>
        S: 501 5.1.3 <{typed}> has no domain: a user of this server is <{typed}@mail.test>
        C: RCPT TO:dora@mail.test
        S: 501 Syntax: RCPT TO:<address>
    """)


def test_help_rcpt_says_the_server_does_not_relay(session: RawSession) -> None:
    code, lines = session.command("HELP RCPT")
    assert code == 214
    assert lines[0] == "RCPT TO:<address>"
    assert "does not relay" in " ".join(lines)


def test_one_message_to_the_same_inbox_twice_is_delivered_once(
    logged_in: RawSession, smtp_server: RunningServer
) -> None:
    assert logged_in.send_message(BODY, SENDER, ["bob@localhost", "BOB@mail.test", "bob@localhost"])[0] == 250
    assert len(smtp_server.inbox("bob")) == 1


def test_mail_to_yourself_is_in_your_inbox_and_your_sent(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(BODY, SENDER, ["alice@localhost"])[0] == 250
    assert smtp_server.stored("alice") == [STORED]
    assert header_and_rest(smtp_server.inbox("alice")[0])[1] == STORED
    assert logged_in.retr() == [BODY.replace(b"\r\n..", b"\r\n.")]  # RETR: the Sent copy, no trace fields


# ---------------------------------------------------------------------------- postmaster


@pytest.fixture
def users_with_postmaster(tmp_path: Path) -> Path:
    return write_users_file(tmp_path / "users-pm.txt", {**USERS, "postmaster": "postmaster-password"})


@pytest.mark.parametrize("address", ["postmaster", "PostMaster", "postmaster@localhost", "POSTMASTER@mail.test"])
def test_postmaster_is_accepted_without_such_an_account(
    logged_in: RawSession, smtp_server: RunningServer, address: str
) -> None:
    """RFC 5321 4.5.1: accepted always; with no postmaster account, only the sender's Sent keeps it; the 250 says so."""
    assert logged_in.command(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert rcpt(logged_in, address) == (
        250,
        [f"2.1.5 <{address}>: no postmaster account here, kept in your Sent folder only"],
    )
    assert logged_in.command("RSET")[0] == 250
    assert logged_in.send_message(BODY, SENDER, [address])[0] == 250
    assert smtp_server.stored("alice") == [STORED]
    assert sorted(path.name for path in smtp_server.mailboxes_path.iterdir()) == ["alice"]


@pytest.mark.parametrize("address", ["postmaster", "Postmaster@localhost"])
def test_postmaster_reaches_the_postmaster_account(
    start_server: Callable[..., RunningServer],
    connect: Callable[..., RawSession],
    users_with_postmaster: Path,
    address: str,
) -> None:
    server = start_server(users_path=users_with_postmaster)
    session = connect(server)
    session.login()
    assert session.send_message(BODY, SENDER, [address])[0] == 250
    assert len(server.inbox("postmaster")) == 1


# ---------------------------------------------------------------------------- trace fields


def test_the_inbox_copy_starts_with_return_path_and_received(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(BODY, SENDER, ["bob@localhost"])[0] == 250
    [copy] = smtp_server.inbox("bob")
    (return_path, received, by), rest = header_and_rest(copy)
    assert return_path == b"Return-Path: <alice@mail.test>"
    assert received == b"Received: from client.test ([127.0.0.1])"  # the EHLO name and the peer's address
    assert by.startswith(b"\tby mail.test with ESMTPA; ")
    date = email.utils.parsedate_to_datetime(by.split(b"; ", 1)[1].decode())
    assert date.tzinfo is not None
    assert rest == STORED
    assert smtp_server.stored("alice") == [STORED]  # and none on the Sent copy


def test_the_null_sender_gets_an_empty_return_path(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(BODY, "", ["bob@localhost"])[0] == 250
    assert smtp_server.inbox("bob")[0].startswith(b"Return-Path: <>\nReceived: ")


def test_received_says_esmtpsa_under_tls(start_server: Callable[..., RunningServer], certificate: Certificate) -> None:
    server = start_server(tls_context=certificate.server_context())
    with smtplib.SMTP(server.host, server.port, local_hostname="laptop.test", timeout=10) as client:
        client.starttls(context=certificate.client_context())
        client.login("alice", USERS["alice"])
        client.sendmail("alice@mail.test", ["bob@localhost"], BODY)
    (_, received, by), _ = header_and_rest(server.inbox("bob")[0])
    assert received == b"Received: from laptop.test ([127.0.0.1])"
    assert b" with ESMTPSA; " in by


def test_a_hostile_helo_name_cannot_add_header_lines(
    connect: Callable[..., RawSession], smtp_server: RunningServer
) -> None:
    session = connect()
    assert session.command("EHLO evil\x1b[2J\x00Bcc: everyone")[0] == 250
    code, text = session.command(f"AUTH PLAIN {plain_response('alice', USERS['alice'])}")
    assert code == 235, text
    assert session.send_message(BODY, SENDER, ["bob@localhost"])[0] == 250
    (_, received, _), rest = header_and_rest(smtp_server.inbox("bob")[0])
    assert received.isascii() and b"\x1b" not in received and b"\x00" not in received
    assert rest == STORED


# ------------------------------------------------------------------- one write, all or none


def test_one_file_is_linked_into_every_local_inbox(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(BODY, SENDER, ["bob@localhost", "carol@localhost", "alice@localhost"])[0] == 250
    inboxes = [smtp_server.mailboxes_path / user for user in ("bob", "carol", "alice")]
    stats = [inode_of(inbox) for inbox in inboxes]
    assert len({stat.st_ino for stat in stats}) == 1  # one file written for the inboxes ...
    assert stats[0].st_nlink == 3  # ... and nothing left in a tmp/
    sent = inode_of(smtp_server.mailboxes_path / "alice" / ".Sent")
    assert sent.st_ino != stats[0].st_ino and sent.st_nlink == 1  # the Sent copy is a file of its own
    assert {inbox_of(inbox)[0] for inbox in inboxes} == {smtp_server.inbox("bob")[0]}


def test_where_a_link_fails_the_inbox_gets_a_copy(
    logged_in: RawSession, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))  # as across filesystems

    monkeypatch.setattr(os, "link", no_links)
    assert logged_in.send_message(BODY, SENDER, ["bob@localhost", "carol@localhost"])[0] == 250
    bob, carol = (smtp_server.mailboxes_path / user for user in ("bob", "carol"))
    assert inode_of(bob).st_ino != inode_of(carol).st_ino
    assert inbox_of(bob) == inbox_of(carol) and header_and_rest(inbox_of(bob)[0])[1] == STORED
    assert not [*smtp_server.mailboxes_path.glob("*/tmp/*"), *smtp_server.mailboxes_path.glob("*/.Sent/tmp/*")]


@pytest.mark.parametrize("failure", ["link", "copy", "directory-fsync"])
def test_if_any_copy_fails_none_stays_visible_and_a_retry_duplicates_nothing(
    logged_in: RawSession, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    carol = (smtp_server.mailboxes_path / "carol").resolve()
    real_link, real_fsync_directory = os.link, maildir.fsync_directory

    def link(source: str | Path, target: str | Path) -> None:
        if Path(target).parent.parent.resolve() == carol:
            raise OSError(errno.EIO if failure == "link" else errno.EXDEV, "refused for carol")
        real_link(source, target)

    def copy(source: object, target: object, length: int = 0) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fsync_directory(path: Path) -> None:
        if Path(path).resolve() == carol / "new":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync_directory(path)

    with monkeypatch.context() as patch:
        if failure == "directory-fsync":
            patch.setattr(maildir, "fsync_directory", fsync_directory)  # where Delivery.commit finds it
        else:
            patch.setattr(os, "link", link)
            patch.setattr(durable.shutil, "copyfileobj", copy)
        code, _ = logged_in.send_message(BODY, SENDER, ["bob@localhost", "carol@localhost"])
    assert code == (452 if failure == "copy" else 451)
    for user in ("alice", "bob", "carol"):
        assert smtp_server.inbox(user) == []
    assert smtp_server.stored("alice") == []
    assert not [*smtp_server.mailboxes_path.glob("*/tmp/*"), *smtp_server.mailboxes_path.glob("*/.Sent/tmp/*")]

    assert logged_in.send_message(BODY, SENDER, ["bob@localhost", "carol@localhost"])[0] == 250  # the client's retry
    assert len(smtp_server.inbox("bob")) == len(smtp_server.inbox("carol")) == len(smtp_server.stored("alice")) == 1


# ------------------------------------------------------------------------------ the quota


@pytest.fixture
def small_quota(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(max_mailbox_size=1000)


def test_a_full_inbox_is_refused_452_at_rcpt_and_the_others_still_get_theirs(
    small_quota: RunningServer, connect: Callable[..., RawSession]
) -> None:
    deliver(small_quota.server.mailboxes, "bob", b"x" * 1000 + b"\n")
    session = connect(small_quota)
    session.login()
    session.expect("""
        C: MAIL FROM:<alice@mail.test>
        S: 250 OK
        C: RCPT TO:<bob@localhost>
        S: 452 4.2.2 <bob@localhost>: mailbox full
        C: RCPT TO:<carol@localhost>
        S: 250 OK
        C: DATA
        S: 354 *
        C: for carol
        C: .
        S: 250 *
    """)
    assert len(small_quota.inbox("bob")) == 1
    assert header_and_rest(small_quota.inbox("carol")[0])[1] == b"for carol\n"


def test_the_quota_counts_a_declared_size(small_quota: RunningServer, connect: Callable[..., RawSession]) -> None:
    deliver(small_quota.server.mailboxes, "bob", b"x" * 500 + b"\n")  # 501 octets of 1000
    session = connect(small_quota)
    session.login()
    session.expect("""
        C: MAIL FROM:<alice@mail.test> SIZE=600
        S: 250 OK
        C: RCPT TO:<bob@localhost>
        S: 452 4.2.2 <bob@localhost>: mailbox full
        C: RSET
        S: 250 OK
        C: MAIL FROM:<alice@mail.test> SIZE=400
        S: 250 OK
        C: RCPT TO:<bob@localhost>
        S: 250 OK
    """)


def test_below_the_quota_mail_is_accepted(small_quota: RunningServer, connect: Callable[..., RawSession]) -> None:
    deliver(small_quota.server.mailboxes, "bob", b"x" * 900 + b"\n")
    session = connect(small_quota)
    session.login()
    assert (
        session.send_message(BODY, SENDER, ["bob@localhost"])[0] == 250
    )  # the check is at RCPT: this one may pass the quota


def test_the_senders_sent_folder_has_no_quota(small_quota: RunningServer, connect: Callable[..., RawSession]) -> None:
    session = connect(small_quota)
    session.login()
    for _ in range(3):
        assert session.send_message(b"y" * 900 + b"\r\n", SENDER, ["someone@example.org"])[0] == 250
    assert len(small_quota.stored("alice")) == 3


def test_the_quota_counts_messages_other_programs_put_in_the_inbox(
    small_quota: RunningServer, connect: Callable[..., RawSession]
) -> None:
    """A file without Maildir++'s S= size in its name (not the server's) is counted by its size on disk."""
    deliver(small_quota.server.mailboxes, "bob", b"small\n", sender="alice")
    (small_quota.mailboxes_path / "bob" / "cur" / "1700000000.M1P1.elsewhere:2,S").write_bytes(b"z" * 1000)
    session = connect(small_quota)
    session.login()
    assert session.command("MAIL FROM:<alice@mail.test>")[0] == 250
    assert rcpt(session, "bob@localhost") == (452, ["4.2.2 <bob@localhost>: mailbox full"])


def test_250_comes_only_when_every_copy_is_durable(
    logged_in: RawSession, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file fsynced, then renamed or linked into new/, each new/ fsynced, and only then the 250."""
    events: list[tuple[str, ...]] = []
    root = smtp_server.mailboxes_path.resolve()

    def spy(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def recorded(*args: object) -> object:
            result = real(*args)
            paths = [os.readlink(f"/proc/self/fd/{a}") if isinstance(a, int) else str(a) for a in args]
            events.append((name, *(str(Path(path).resolve().relative_to(root)) for path in paths)))
            return result

        return recorded

    monkeypatch.setattr(os, "fsync", spy("fsync", os.fsync))
    monkeypatch.setattr(os, "rename", spy("rename", os.rename))
    monkeypatch.setattr(os, "link", spy("link", os.link))
    real_reply = SMTPHandler.reply
    monkeypatch.setattr(SMTPHandler, "reply", lambda handler, code, *lines: (
        events.append(("reply", str(code))), real_reply(handler, code, *lines)))  # fmt: skip
    logged_in.start_data(SENDER, ["bob@localhost", "carol@localhost"])
    events.clear()
    logged_in.send(BODY + b".\r\n")
    assert logged_in.read_reply()[0] == 250
    [sent] = (root / "alice" / ".Sent" / "new").iterdir()
    [inbox] = (root / "bob" / "new").iterdir()
    name, inbox_name = sent.name, inbox.name
    assert events == [
        ("fsync", f"alice/.Sent/tmp/{name}"),
        ("fsync", f"bob/tmp/{name}"),
        ("rename", f"alice/.Sent/tmp/{name}", f"alice/.Sent/new/{name}"),
        ("link", f"bob/tmp/{name}", f"bob/new/{inbox_name}"),
        ("link", f"bob/tmp/{name}", f"carol/new/{inbox_name}"),
        ("fsync", "alice/.Sent/new"),
        ("fsync", "bob/new"),
        ("fsync", "carol/new"),
        ("reply", "250"),
    ]


# Every errno durable.LINK_REFUSED documents as a link refused where a copy works, listed here by hand:
# a test that derived the list from the code could not notice one dropped from it.
LINK_REFUSALS = [errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP]


@pytest.mark.parametrize("refusal", LINK_REFUSALS, ids=[errno.errorcode[code] for code in LINK_REFUSALS])
def test_a_refused_link_makes_a_copy_that_is_fsynced_before_its_rename(
    logged_in: RawSession, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    """Issue 18: the copy's fsync before its rename into new/, and EPERM (not only EXDEV), had no test."""
    events: list[tuple[str, ...]] = []
    root = smtp_server.mailboxes_path.resolve()
    real_fsync, real_rename = os.fsync, os.rename

    def refused(source: object, target: object) -> None:
        raise OSError(refusal, os.strerror(refusal))

    def fsync(descriptor: int) -> None:
        real_fsync(descriptor)
        events.append(("fsync", str(Path(os.readlink(f"/proc/self/fd/{descriptor}")).relative_to(root))))

    def rename(source: object, target: object) -> None:
        real_rename(source, target)  # type: ignore[arg-type]
        events.append(("rename", *(str(Path(str(path)).resolve().relative_to(root)) for path in (source, target))))

    monkeypatch.setattr(os, "link", refused)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    assert logged_in.send_message(BODY, SENDER, ["bob@localhost"])[0] == 250
    [copy] = (root / "bob" / "new").iterdir()
    copied = events.index(("rename", f"bob/tmp/{copy.name}", f"bob/new/{copy.name}"))
    assert ("fsync", f"bob/tmp/{copy.name}") in events[:copied]  # whole on disk before it is visible
    assert header_and_rest(copy.read_bytes())[1] == STORED


def test_a_link_failing_for_another_reason_is_no_copy_but_a_451(
    logged_in: RawSession, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(source: object, target: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "link", broken)
    code, _ = logged_in.send_message(BODY, SENDER, ["bob@localhost"], data_may_be_refused=True)
    assert code == 451
    assert smtp_server.inbox("bob") == [] and smtp_server.stored("alice") == []
