"""The web view for the projector (--web): every session drawn live, and a page to download the client.

    GET /                 the page (static/index.html, view.js, view.css: files, no build step)
    GET /events           the live events (Server-Sent Events): the history first, then each event
    GET /download         public: client.py, cert.pem when TLS is on, and the line a student types

Built on the standard library: http.server's threading server, one thread per browser,
and `text/event-stream`, which browsers read natively. Each browser's stream is a bounded
queue of the server's one `EventBus`: a browser that falls behind is dropped and
reconnects, and a session never waits on it.

Who may watch: on 127.0.0.1 (the default) anyone on this machine. On any other address
(--web-host) the view wants the random token printed at start-up (`/?token=...`); the page
turns it into a cookie for its script and its stream. Without it, 403 and nothing else.
/download needs no token and serves nothing but those files.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import http.server
import importlib.resources
import json
import re
import secrets
import socket
import string
import sys
import threading
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import client  # client.py, beside server.py: the ports it assumes

from .events import framed
from .logs import log, printable

if TYPE_CHECKING:
    from .events import EventBus
    from .listener import MailServer

STATIC = importlib.resources.files(__package__) / "static"
# The page's files, each with its type; nothing else is served from the package.
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/view.js": ("view.js", "text/javascript; charset=utf-8"),
    "/view.css": ("view.css", "text/css; charset=utf-8"),
    "/icon.svg": ("icon.svg", "image/svg+xml"),
}
# No inline script, nothing from another origin (the page builds its DOM from text nodes).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
LOOPBACK_DEFAULTS = frozenset({"127.0.0.1", "localhost"})  # served without a token
TOKEN_COOKIE = "view_token"
MAX_REQUEST_LINE = 8 * 1024  # octets: a URL of this page is a few dozen
KEEPALIVE = 15.0  # seconds between comments on a quiet stream, so a dead browser is noticed
STREAM_BUFFER = 64 * 1024  # octets of socket send buffer per browser
BATCH_WAIT = 0.1  # seconds between a stream's looks at its queue: well within the half second
STATUS_INTERVAL = 1.0  # seconds between looks at who is here (only while someone watches)
CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


class WebView(http.server.ThreadingHTTPServer):
    """The web view's HTTP server; serve_forever() in a thread of its own, close() to stop."""

    daemon_threads = True  # a browser's stream must not keep the process alive
    block_on_close = False
    # Connections at once, each a thread: a class's browsers and downloads fit; a flood from the LAN does not.
    max_connections = 64

    def __init__(self, address: tuple[str, int], mail: MailServer, events: EventBus, client_file: Path) -> None:
        self.mail = mail
        self.events = events
        self.client_file = client_file
        # A token unless the view stays on this machine's usual loopback address.
        self.token = None if address[0] in LOOPBACK_DEFAULTS else secrets.token_urlsafe(16)
        self.closing = threading.Event()
        self.slots = threading.BoundedSemaphore(self.max_connections)
        self.streams: set[socket.socket] = set()  # the browsers' open streams, cut by close()
        self.streams_lock = threading.Lock()
        super().__init__(address, ViewHandler)
        self._status = threading.Thread(target=self._publish_status, name="web-status", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")

    def serve_in_background(self) -> None:
        """Serve in a thread of its own until close()."""
        threading.Thread(target=self.serve_forever, args=(0.25,), name="web", daemon=True).start()
        self._status.start()

    def close(self) -> None:
        """Stop serving, and end every browser's stream now (each browser says it lost the server)."""
        self.closing.set()
        self.shutdown()
        self.server_close()
        with self.streams_lock:
            streams = list(self.streams)
        for stream in streams:
            with contextlib.suppress(OSError):
                stream.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        if not self.slots.acquire(blocking=False):  # full: closed at once, never queued behind the others
            log.info("web view: %s refused: %d connections already", client_address[0], self.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        # A browser that went away mid-answer is no error of ours: one line. A bug of ours: its traceback.
        if isinstance(sys.exc_info()[1], OSError):
            log.info("web view: %s:%s connection lost", client_address[0], client_address[1])
        else:
            log.exception("web view: %s:%s internal error", client_address[0], client_address[1])

    def status(self) -> dict[str, object]:
        """Who is here: logins per protocol, connections against the caps, the throttle's holds, the mailboxes."""
        mail = self.mail
        _, logged_in = mail.connections.who_is_here()  # the same as --who-interval's line
        total, per_address = mail.connections.in_use()
        names = mail.users.names()
        held = [{"address": a, "name": n, "seconds": s} for a, n, s in mail.login_throttle.held_back(names)]
        boxes = []
        for name in names:
            try:
                inbox, sent = mail.mailboxes.message_counts(name)
            except (OSError, ValueError):
                continue
            boxes.append({"user": name, "inbox": inbox, "sent": sent})
        return {
            "type": "status",
            "logged_in": logged_in,
            "connections": total,
            "max_connections": mail.connections.max_total,
            "per_address": per_address,
            "max_per_address": mail.connections.max_per_address,
            "held_back": held,
            "mailboxes": boxes,
        }

    def _publish_status(self) -> None:
        last: dict[str, object] | None = None
        while not self.closing.wait(STATUS_INTERVAL):
            if not self.events.subscribers:
                last = None  # a browser that comes gets a fresh status
                continue
            try:
                status = self.status()
            except Exception:  # a bug here must not stop the view
                log.exception("web view: could not read the status")
                continue
            if status != last:
                self.events.broadcast(status)
                last = status


class ViewHandler(http.server.BaseHTTPRequestHandler):
    """One request to the web view: GET only, bounded, and never a traceback."""

    server: WebView
    server_version = "classroom-web"
    sys_version = ""
    timeout = 10  # seconds for a request to arrive; a stream's writes have as long to go through
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to hold open but the stream
    _set_token_cookie = False  # the request brought the token in its URL: the page keeps it as a cookie
    _refused_method = False  # a 405 says which method there is (RFC 9110 15.5.6)
    _answered_error = False

    def parse_request(self) -> bool:
        """http.server's parsing, then this view's rules: a bounded request line, and GET only."""
        # No HTTP/0.9 (a bare "GET /"): its answer would have no status line to say 400.
        problem = "Request line too long" if len(self.raw_requestline) > MAX_REQUEST_LINE else None
        if problem is None and len(self.raw_requestline.split()) != 3:
            problem = "Bad request line"
        if problem:
            self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""
            self.send_error(HTTPStatus.BAD_REQUEST, problem)
            return False
        if not super().parse_request():
            return False
        if self.command != "GET":
            self._refused_method = True
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "Only GET")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self._answered_error = True
        # http.server says 414 or 431 for an oversized request line or header; here every such one is a 400.
        if code in (HTTPStatus.REQUEST_URI_TOO_LONG, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE):
            code = HTTPStatus.BAD_REQUEST
        super().send_error(code, message, explain)

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if self._refused_method:
            self.send_header("Allow", "GET")
        if self._set_token_cookie:
            self.send_header("Set-Cookie", f"{TOKEN_COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/")
        super().end_headers()

    def finish(self) -> None:
        super().finish()
        if self._answered_error:
            self.linger()

    def linger(self) -> None:
        """Read (a bounded amount of) what the client still sends, so its error answer is not lost to a reset.

        Closing a socket with unread data sends RST, and a client may then lose the answer (RFC 9112 9.6).
        """
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            for _ in range(16):  # 1 MB at most
                if not self.connection.recv(64 * 1024):
                    return

    def log_message(self, format: str, *args: object) -> None:
        # A request line may hold the token: the log gets the address and the status only (log_request).
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code) >= "400":
            log.info("web view: %s %s", self.client_address[0], code)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/download" or url.path.startswith("/download/"):
            self.download(url.path)
            return
        if not self.may_watch(url.query):
            self.send_error(HTTPStatus.FORBIDDEN, "Forbidden")
            return
        if url.path == "/events":
            self.stream()
        elif url.path == "/message":
            self.message_text(url.query)
        elif url.path in PAGE_FILES:
            name, content_type = PAGE_FILES[url.path]
            self.send_body((STATIC / name).read_bytes(), content_type)
        else:
            self.send_error(HTTPStatus.NOT_FOUND, "Not found")

    def may_watch(self, query: str) -> bool:
        """True if no token is needed, or the request brings it (in the URL, or the page's cookie)."""
        token = self.server.token
        if token is None:
            return True
        given = urllib.parse.parse_qs(query).get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), token.encode()):
            self._set_token_cookie = True
            return True
        cookies = self.headers.get("Cookie", "")
        for cookie in cookies.split(";"):
            name, _, value = cookie.strip().partition("=")
            if name == TOKEN_COOKIE and hmac.compare_digest(value.encode(), token.encode()):
                return True
        return False

    def send_body(self, body: bytes, content_type: str, *, download: str | None = None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if download:
            self.send_header("Content-Disposition", f'attachment; filename="{download}"')
        self.end_headers()
        self.wfile.write(body)

    # -- the live stream ------------------------------------------------------------------

    def stream(self) -> None:
        """Send the history, then each event as it comes, until the browser goes or falls behind."""
        subscriber = self.server.events.subscribe()
        if subscriber is None:
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "Too many browsers watching")
            return
        # A stuck browser holds its queue and this much in the kernel, not the megabytes Linux would let it grow to.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_BUFFER)
        with self.server.streams_lock:
            self.server.streams.add(self.connection)
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")  # reconnect within a second after a restart
            self.wfile.write(framed(self.server.status()))
            quiet = 0.0
            # A busy class makes hundreds of events a second: they go out together, a write per BATCH_WAIT.
            while not subscriber.dropped and not self.server.closing.wait(BATCH_WAIT):
                frames = self.server.events.take(subscriber)
                quiet = 0.0 if frames else quiet + BATCH_WAIT
                if frames:
                    self.wfile.write(b"".join(frames))
                elif quiet >= KEEPALIVE:
                    self.wfile.write(b": still here\n\n")
                    quiet = 0.0
        except OSError:  # the browser went
            pass
        finally:
            self.server.events.unsubscribe(subscriber)
            with self.server.streams_lock:
                self.server.streams.discard(self.connection)

    def message_text(self, query: str) -> None:
        """A message's text as the log shows it (JSON lines), asked for when the teacher opens it."""
        fields = urllib.parse.parse_qs(query)
        try:
            session, number = int(fields["session"][0]), int(fields["n"][0])
        except (KeyError, ValueError):
            self.send_error(HTTPStatus.BAD_REQUEST, "Use /message?session=N&n=N")
            return
        body = self.server.events.body(session, number)
        if body is None:
            self.send_error(HTTPStatus.NOT_FOUND, "No longer kept")
            return
        self.send_body(json.dumps(body).encode(), "application/json")

    # -- /download ------------------------------------------------------------------------

    def download(self, path: str) -> None:
        """The public download page, client.py and the certificate; nothing else."""
        cert = self.certificate()
        if path == "/download":
            self.send_body(self.download_page(cert is not None).encode(), "text/html; charset=utf-8")
        elif path == "/download/client.py":
            self.send_body(self.server.client_file.read_bytes(), "text/x-python; charset=utf-8", download="client.py")
        elif path == "/download/cert.pem" and cert is not None:
            self.send_body(cert.encode(), "application/x-pem-file", download="cert.pem")
        else:
            self.send_error(HTTPStatus.NOT_FOUND, "Not found")

    def certificate(self) -> str | None:
        """The certificates of --tls-cert, and only them: a PEM file may hold the private key too."""
        path = self.server.mail.config.tls_cert
        if not path:
            return None
        try:
            blocks = CERTIFICATE.findall(Path(path).read_text("ascii", "replace"))
        except OSError:
            return None
        return "\n".join(blocks) + "\n" if blocks else None

    def download_page(self, with_cert: bool) -> str:
        """The page, its values escaped: the host a student types is the one this request came to."""
        config = self.server.mail.config
        host = config.host
        if host in ("", "0.0.0.0", "::"):
            host = self.connection.getsockname()[0]
        plain = [listener for listener in self.server.mail.listeners if not listener.implicit_tls]
        ports = {listener.RequestHandlerClass.protocol: listener.server_address[1] for listener in plain}  # type: ignore[attr-defined]
        words = ["python3", "client.py", "--host", host, "--port", str(ports["SMTP"])]
        if ports.get("POP3", client.DEFAULT_POP3_PORT) != client.DEFAULT_POP3_PORT:  # the client's inbox
            words += ["--pop3-port", str(ports["POP3"])]
        if with_cert:
            words += ["--starttls", "--cafile", "cert.pem"]
        template = string.Template((STATIC / "download.html").read_text("utf-8"))
        cert_link = '<li><a href="/download/cert.pem" download>cert.pem</a>: the server\'s certificate</li>'
        return template.substitute(
            command=html.escape(" ".join(words)),
            hostname=html.escape(printable(config.hostname)),
            cert=cert_link if with_cert else "",
        )


def start_web_view(mail: MailServer, events: EventBus, host: str, port: int, client_file: Path) -> WebView:
    """Bind the web view and serve it in the background; raise OSError if the address cannot be had."""
    view = WebView((host, port), mail, events, client_file)
    view.serve_in_background()
    return view
