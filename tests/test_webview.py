"""The web view (--web) without a browser: its events, its HTTP rules, the token and /download.

The browser tests, in real Chromium, are in test_webview_browser.py.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import logging
import poplib
import smtplib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, USERS, WebRun, make_certificate, wait_for

import client
import server
from mailserver.events import EventBus
from mailserver.limits import LoginRefused, LoginThrottle

PASSWORD = USERS["alice"]
PLAIN = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()


def get(
    run: WebRun, path: str, *, host: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET path from the view; (status, headers, body)."""
    address, port = run.view.server_address[:2]
    connection = http.client.HTTPConnection(host or str(address), port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw_request(run: WebRun, request: bytes) -> bytes:
    """Send request bytes as they are; return the whole answer."""
    with socket.create_connection(run.view.server_address[:2], timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def collected(events: EventBus) -> tuple[list[dict[str, object]], Callable[[], None]]:
    """Every event the bus sends a subscriber from now on, decoded, and a function that stops collecting."""
    subscriber = events.subscribe()
    assert subscriber is not None
    received: list[dict[str, object]] = []
    stop = threading.Event()

    def drain() -> None:
        while not stop.wait(0.02):
            received.extend(decoded(frame) for frame in events.take(subscriber))

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(5)
        events.unsubscribe(subscriber)

    return received, finish


def decoded(frame: bytes) -> dict[str, object]:
    """The event in one Server-Sent Events frame."""
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n") and frame.count(b"\n") == 2
    return json.loads(frame[len(b"data: ") :])  # type: ignore[no-any-return]


def smtp_session(run: WebRun, *, recipients: tuple[str, ...] = ("bob@mail.test",), subject: str = "hi") -> None:
    """alice logs in with AUTH PLAIN and sends a message, as smtplib does."""
    with smtplib.SMTP(run.mail.host, run.mail.port, timeout=10) as smtp:
        smtp.ehlo("laptop")
        smtp.login("alice", PASSWORD)
        smtp.sendmail("alice@mail.test", list(recipients), f"Subject: {subject}\r\n\r\nhello bob\r\n")


@pytest.fixture
def run(web_server: Callable[..., WebRun]) -> WebRun:
    return web_server()


# -- the events --------------------------------------------------------------------------


def test_a_session_s_events_are_its_masked_lines_state_and_delivery(run: WebRun) -> None:
    received, finish = collected(run.events)
    smtp_session(run, recipients=("bob@mail.test", "someone@example.org"))
    wait_for(lambda: any(event["type"] == "close" for event in received))
    finish()
    lines = [(e["dir"], e["text"]) for e in received if e["type"] == "line"]
    assert ("C", "AUTH PLAIN ********") in lines
    assert ("S", "235 2.7.0 Authentication successful") in lines
    states = [e["state"] for e in received if e["type"] == "state"]
    assert states == ["connected", "greeted", "logged in", "in a transaction", "DATA", "logged in"]
    [message] = [e for e in received if e["type"] == "message"]
    assert (message["dir"], message["lines"]) == ("C", 3)
    assert "hello bob" not in json.dumps(received)  # a message's text is only sent when asked for
    assert run.events.body(message["id"], message["n"]) == ["Subject: hi", "", "hello bob", "."]
    assert get(run, f"/message?session={message['id']}&n=0")[2] == b'["Subject: hi", "", "hello bob", "."]'
    assert get(run, f"/message?session={message['id']}&n=1")[0] == 404
    assert get(run, "/message?session=x&n=0")[0] == 400
    [delivery] = [e for e in received if e["type"] == "delivery"]
    assert delivery["to"] == [
        {"address": "bob@mail.test", "inbox": "bob"},
        {"address": "someone@example.org", "inbox": None},
    ]


def test_each_reply_is_explained_by_the_client_s_own_table(run: WebRun) -> None:
    received, finish = collected(run.events)
    smtp_session(run)
    wait_for(lambda: any(event["type"] == "close" for event in received))
    finish()
    replies = {e["text"]: e.get("explain") for e in received if e["type"] == "line" and e["dir"] == "S"}
    assert replies["235 2.7.0 Authentication successful"] == client.explain(
        "235", "2.7.0 Authentication successful", "AUTH"
    )
    greeting = next(text for text in replies if text.startswith("220 "))
    assert replies[greeting] == client.explain("220", greeting[4:], "CONNECT")
    ended = next(text for text in replies if text.startswith("250 OK: stored as"))
    assert replies[ended] == client.explain("250", ended[4:], ".")
    assert replies["250-mail.test Hello laptop"] is None  # not a reply's last line


def test_no_event_holds_a_password_or_its_base64(run: WebRun) -> None:
    received, finish = collected(run.events)
    smtp_session(run)
    with smtplib.SMTP(run.mail.host, run.mail.port, timeout=10) as smtp:  # AUTH LOGIN: the answers to 334
        smtp.ehlo("laptop")
        smtp.user, smtp.password = "alice", PASSWORD
        smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
    pop = poplib.POP3(run.mail.host, run.mail.pop3_port, timeout=10)
    pop.user("alice")
    pop.pass_(PASSWORD)
    pop.quit()
    wait_for(lambda: sum(event["type"] == "close" for event in received) == 3)
    finish()
    text = json.dumps(received)
    secrets = [PASSWORD, PLAIN, base64.b64encode(PASSWORD.encode()).decode(), PLAIN.rstrip("=")]
    assert not [secret for secret in secrets if secret in text]
    assert "PASS ********" in text


def test_a_pop3_session_reports_its_user_state_and_the_message_folded(run: WebRun) -> None:
    smtp_session(run)
    received, finish = collected(run.events)
    pop = poplib.POP3(run.mail.host, run.mail.pop3_port, timeout=10)
    pop.user("bob")
    pop.pass_(USERS["bob"])
    pop.retr(1)
    pop.quit()
    wait_for(lambda: any(event["type"] == "close" for event in received))
    finish()
    states = [(e["user"], e["state"]) for e in received if e["type"] == "state"]
    assert states == [(None, "before login"), ("bob", "logged in"), ("bob", "signing off")]
    [message] = [e for e in received if e["type"] == "message"]
    assert message["dir"] == "S"
    stored = run.mail.inbox("bob")[0]
    assert (message["lines"], message["octets"]) == (stored.count(b"\n"), len(stored) + stored.count(b"\n"))


def test_a_session_under_starttls_says_so(web_server: Callable[..., WebRun], tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    run = web_server(tls_context=certificate.server_context())
    received, finish = collected(run.events)
    with smtplib.SMTP(run.mail.host, run.mail.port, timeout=10) as smtp:
        smtp.starttls(context=certificate.client_context())
        smtp.ehlo("laptop")
        smtp.login("alice", PASSWORD)
    wait_for(lambda: any(event["type"] == "close" for event in received))
    finish()
    states = [(e["state"], e["tls"]) for e in received if e["type"] == "state"]
    # The state is looked at with each reply: the next after STARTTLS answers the new EHLO.
    assert states == [("connected", False), ("greeted", False), ("greeted", True), ("logged in", True)]


def test_only_the_last_messages_text_of_a_session_is_kept() -> None:
    bus = EventBus()
    watch = bus.watch("SMTP", "10.0.0.1:1", status=lambda: ("alice", "logged in", False))
    for _ in range(8):
        watch.message_line("x" * 5000)
        watch.message_end("C:", 1, 5000)
    kept = [bus.body(watch.id, number) for number in range(8)]
    assert kept[:3] == [None] * 3
    assert kept[3:] == [["x" * 200]] * 5  # each line cut to 200 characters


def test_a_subscriber_that_reads_nothing_is_dropped_and_never_waited_on() -> None:
    bus = EventBus(queue_size=5)
    stuck = bus.subscribe()
    assert stuck is not None
    watch = bus.watch("SMTP", "10.0.0.1:1", status=lambda: (None, "connected", False))
    for number in range(20):  # each would block a blocking put() once the queue is full
        watch.line("C:", f"NOOP {number}")
    assert stuck.dropped
    assert len(stuck.queue) == 5  # it costs its queue and nothing more
    assert (bus.subscribers, bus.dropped) == (0, 1)


def test_the_history_stays_bounded_with_1000_sessions() -> None:
    bus = EventBus(history_size=200, lines_per_session=50)
    for number in range(1000):
        watch = bus.watch("SMTP", f"10.0.0.1:{number}", status=lambda: (None, "connected", False))
        for line in range(100):
            watch.line("C:", f"NOOP {line}")
        watch.close()
    assert bus.sessions_kept() == 200
    subscriber = bus.subscribe()
    assert subscriber is not None
    [history] = [decoded(frame) for frame in bus.take(subscriber)]
    assert [len(session["events"]) for session in history["sessions"]] == [50] * 200
    assert history["sessions"][0]["peer"] == "10.0.0.1:800"  # the last 200 are kept


def test_a_stream_that_stops_reading_does_not_hold_up_smtp(web_server: Callable[..., WebRun]) -> None:
    run = web_server(bus={"queue_size": 20})
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once, and is never read
    stuck.connect(run.view.server_address[:2])
    stuck.sendall(b"GET /events HTTP/1.0\r\n\r\n")
    try:
        wait_for(lambda: run.events.subscribers == 1)
        long_subject = "x" * 900
        sessions = 0
        while run.events.dropped == 0 and sessions < 400:  # bounded: it takes a few dozen
            smtp_session(run, subject=long_subject)
            sessions += 1
        assert run.events.dropped == 1, f"still subscribed after {sessions} sessions"
        assert run.events.subscribers == 0
        smtp_session(run)  # and mail goes on
        assert len(run.mail.inbox("bob")) == sessions + 1
    finally:
        stuck.close()


def test_who_is_here_names_only_accounts_held_back_by_the_throttle() -> None:
    throttle = LoginThrottle(max_per_name=2, max_per_address=10, window=60, clock=lambda: 100.0)
    for name in ("alice", "alice", "hunter2-typed-as-a-name", "hunter2-typed-as-a-name"):
        attempt = throttle.begin("10.0.0.9", name)
        assert not isinstance(attempt, LoginRefused)
        with attempt:
            pass  # a failed login
    assert sorted(throttle.held_back(["alice", "bob"]), key=str) == sorted(
        [("10.0.0.9", "alice", 60), ("10.0.0.9", "", 60)], key=str
    )


def test_the_status_says_who_is_logged_in_against_the_caps(run: WebRun) -> None:
    smtp_session(run)
    with smtplib.SMTP(run.mail.host, run.mail.port, timeout=10) as smtp:
        smtp.ehlo("laptop")
        smtp.login("alice", PASSWORD)
        wait_for(lambda: run.view.status()["logged_in"] == {"SMTP": ["alice"]})
        status = run.view.status()
        assert (status["connections"], status["max_connections"]) == (1, run.mail.config.max_connections)
        assert status["per_address"] == {"127.0.0.1": 1}
    boxes = {box["user"]: (box["inbox"], box["sent"]) for box in status["mailboxes"]}
    assert boxes == {"alice": (0, 1), "bob": (1, 0), "carol": (0, 0)}


# -- HTTP: bad input, the token, /download --------------------------------------------


def test_unknown_paths_are_404_and_methods_other_than_get_405(run: WebRun) -> None:
    assert get(run, "/nothing-here")[0] == 404
    assert get(run, "/../server.py")[0] == 404
    for method in ("POST", "PUT", "DELETE", "HEAD", "OPTIONS", "BREW"):
        answer = raw_request(run, f"{method} / HTTP/1.0\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.0 405 "), (method, answer[:60])
        assert b"\r\nAllow: GET\r\n" in answer


def test_oversized_and_malformed_requests_get_400_and_no_traceback(
    run: WebRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = [
        b"GET /" + b"a" * 9000 + b" HTTP/1.0\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n",
        b"GET / HTTP/1.0\r\n" + b"".join(b"X%d: y\r\n" % n for n in range(200)) + b"\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
    ]
    for request in bad:
        answer = raw_request(run, request)
        assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", (request[:40], answer[:80])
    assert "Traceback" not in caplog.text


def test_on_an_exposed_address_the_view_needs_the_token(web_server: Callable[..., WebRun]) -> None:
    run = web_server(host="127.0.0.2")
    token = run.view.token
    assert token and run.url == f"http://127.0.0.2:{run.view.server_address[1]}/?token={token}"
    smtp_session(run)
    paths = ("/", "/events", "/view.js", "/message?session=1&n=0", "/nothing", f"/?token={token}x")
    refusals = [get(run, path) for path in paths]
    assert {(status, body) for status, _, body in refusals} == {(403, refusals[0][2])}
    assert b"alice" not in refusals[0][2]
    status, headers, _ = get(run, f"/?token={token}")
    assert status == 200
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert get(run, "/view.js", headers={"Cookie": cookie})[0] == 200
    assert get(run, "/view.js", headers={"Cookie": cookie + "x"})[0] == 403
    assert get(run, "/download")[0] == 200  # public


def test_the_default_address_needs_no_token(run: WebRun) -> None:
    assert run.view.token is None
    assert get(run, "/")[0] == 200


def test_a_flood_of_idle_connections_takes_no_more_than_the_cap(web_server: Callable[..., WebRun]) -> None:
    run = web_server()
    run.view.slots = threading.BoundedSemaphore(3)  # the cap of 64, made 3 for a short test
    idle = [socket.create_connection(run.view.server_address[:2], timeout=10) for _ in range(3)]
    try:
        wait_for(lambda: run.view.slots._value == 0)  # type: ignore[attr-defined]
        with socket.create_connection(run.view.server_address[:2], timeout=10) as fourth:
            with contextlib.suppress(OSError):  # closed already: the request may meet a reset
                fourth.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                answer = fourth.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed unanswered
    finally:
        for connection in idle:
            connection.close()
    wait_for(lambda: run.view.slots._value == 3)  # type: ignore[attr-defined]  # the slots come back
    assert get(run, "/")[0] == 200


def test_a_web_port_in_use_is_one_line_naming_the_option(web_server: Callable[..., WebRun]) -> None:
    run = web_server()
    taken = run.view.server_address[1]
    config = dataclasses.replace(run.mail.config, web=True, web_port=taken)
    with pytest.raises(OSError, match=rf"^cannot listen on 127.0.0.1:{taken}: the port is in use .*--web-port\)$"):
        server.start_web(config, run.mail.server)


def test_every_answer_forbids_inline_script_and_other_origins(run: WebRun) -> None:
    for path in ("/", "/view.js", "/download", "/nothing"):
        policy = get(run, path)[1]["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self';" in policy
        assert "unsafe-inline" not in policy


def test_download_serves_client_py_and_the_line_to_type(run: WebRun) -> None:
    status, _, page = get(run, "/download")
    assert status == 200
    line = f"python3 client.py --host 127.0.0.1 --port {run.mail.port} --pop3-port {run.mail.pop3_port}</code>"
    assert line.encode() in page
    assert b"cert.pem" not in page
    status, headers, body = get(run, "/download/client.py")
    assert (status, body) == (200, (ROOT / "client.py").read_bytes())
    assert headers["content-disposition"] == 'attachment; filename="client.py"'
    assert get(run, "/download/cert.pem")[0] == 404
    assert get(run, "/download/server.py")[0] == 404


@pytest.fixture
def certificate_with_key(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    made = make_certificate(tmp_path)
    both = tmp_path / "both.pem"  # a PEM file may hold the key as well: it must never be served
    both.write_text(made.cert.read_text() + made.key.read_text())
    yield both, made.key


def test_download_serves_the_certificate_and_never_the_key(
    web_server: Callable[..., WebRun], certificate_with_key: tuple[Path, Path]
) -> None:
    both, key = certificate_with_key
    run = web_server(tls_cert=str(both), tls_key=str(key))
    status, _, page = get(run, "/download")
    assert f"--pop3-port {run.mail.pop3_port} --starttls --cafile cert.pem</code>".encode() in page
    status, _, cert = get(run, "/download/cert.pem")
    assert status == 200
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" not in cert
