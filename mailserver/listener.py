"""Listening: the server, one per process, and its ports.

- `MailServer` is the whole server: the settings, the accounts, the mailboxes, the
  connection caps, the login throttle and the deadline watchdog. Every listener hands its
  sessions these same objects, so no limit is per port.
- `Listener` is one listening port (socketserver's thread per connection); it checks the
  caps before a thread is started. The sessions themselves are `session.LineHandler`s.

Methods for the caller: `MailServer.listen()`, `serve_forever()`, `close()`, and the
context manager.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
import time
from typing import TYPE_CHECKING

from .chaos import Chaos
from .config import ServerConfig
from .limits import ConnectionTable, LoginThrottle
from .logs import log, plural
from .session import LineHandler

if TYPE_CHECKING:
    from .events import EventBus
    from .storage import MailboxStore
    from .users import UserStore


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The TLS settings of the server, from --tls-cert and --tls-key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class Listener(socketserver.ThreadingTCPServer):
    """One listening port of the server: a thread per connection, the caps checked before it starts."""

    # Restarting the server must not wait out TIME_WAIT sockets of the last run.
    allow_reuse_address = True
    # Handler threads must not keep the process alive: MailServer.close() interrupts them itself.
    daemon_threads = True
    block_on_close = False
    # The listen backlog: a whole class connecting at once must not be dropped (default is 5).
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], handler_class: type[LineHandler], mail: MailServer, *, implicit_tls: bool
    ) -> None:
        self.mail = mail
        self.implicit_tls = implicit_tls  # TLS from the first byte (SMTPS, RFC 8314)
        super().__init__(address, handler_class)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        refusal = self.mail.connections.admit(client_address[0])
        if refusal is not None:
            log.warning("%s:%s refused: %s", client_address[0], client_address[1], refusal)
            if not self.implicit_tls:  # a TLS client would not understand plaintext
                with contextlib.suppress(OSError):
                    request.sendall(self.RequestHandlerClass.refusal(self.mail.config.hostname, refusal))  # type: ignore[attr-defined]
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # e.g. no more threads: free the slot, drop the connection
            self.mail.connections.release(client_address[0])
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.mail.connections.release(client_address[0])

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        log.exception("%s:%s unexpected error", client_address[0], client_address[1])


class MailServer:
    """The whole server: one per process, its state shared by every listener.

    Methods for the caller: listen() binds a port, serve_forever() serves them all
    until shutdown(), close() stops listening and gives open sessions a moment to
    finish. It is also a context manager.

    Nothing runs until it serves, as with socketserver: the first serve_forever() or
    serve_in_background() starts its two duties, each in a thread of its own, and close()
    stops them: the watchdog cuts off sessions past their deadline, the poller reloads
    users.txt when it changes.
    """

    shutdown_grace = 2.0  # seconds close() waits for sessions to finish
    watchdog_interval = 0.25  # seconds between looks for sessions past their deadline
    users_poll_interval = 0.25  # seconds between looks at users.txt (UserStore stats it at most once a second)

    def __init__(
        self,
        config: ServerConfig,
        users: UserStore,
        mailboxes: MailboxStore,
        chaos: Chaos | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.config = config
        self.users = users
        self.mailboxes = mailboxes
        self.chaos = chaos if chaos is not None else Chaos()  # --chaos's drills; none by default
        self.events = events  # with --web: what the sessions report to the web view
        self.connections = ConnectionTable(config.max_connections, config.max_connections_per_ip)
        self.login_throttle = LoginThrottle(
            config.max_login_failures, config.max_login_failures_per_ip, config.login_failure_window
        )
        self.listeners: list[Listener] = []
        # shutdown() waits for these listeners' loops to end: a listener is added only by the thread
        # that enters its serve_forever() next, so none is waited for that will never serve.
        self._serving: list[Listener] = []
        self._serving_lock = threading.Lock()
        self._shut_down = threading.Event()  # shutdown() has begun: no listener starts serving after it
        self._closing = threading.Event()
        self._duties: list[threading.Thread] = []  # started by the first serve, stopped by close()
        self._duties_lock = threading.Lock()

    def listen(
        self, address: tuple[str, int], handler_class: type[LineHandler], *, implicit_tls: bool = False
    ) -> Listener:
        """Bind one more port, whose sessions share this server's caps, throttle and deadlines."""
        listener = Listener(address, handler_class, self, implicit_tls=implicit_tls)
        self.listeners.append(listener)
        return listener

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve every listener, each in a thread of its own, until shutdown(); this thread waits for it.

        A KeyboardInterrupt (Ctrl-C, or SIGTERM as server.py sets it) may stop the wait at any
        moment: the listeners serve in other threads, so shutdown() then finds each one either
        serving or never to serve, and cannot wait for a loop that will not run.
        """
        for listener in self.listeners:
            self.serve_in_background(listener, poll_interval)  # the first starts the duties
        self._shut_down.wait()

    def serve_in_background(self, listener: Listener, poll_interval: float = 0.5) -> None:
        """Serve listener in a thread of its own until shutdown()."""
        self._start_duties()
        name = f"listener {listener.server_address[1]}"
        threading.Thread(target=self._serve, args=(listener, poll_interval), name=name, daemon=True).start()

    def _serve(self, listener: Listener, poll_interval: float) -> None:
        with self._serving_lock:
            if self._shut_down.is_set():
                return
            self._serving.append(listener)
        # No signal reaches this thread (Python runs handlers in the main one): serve_forever runs now.
        listener.serve_forever(poll_interval)

    def shutdown(self) -> None:
        """Make every serve_forever() return; call it from another thread than a listener's."""
        with self._serving_lock:
            self._shut_down.set()
            serving, self._serving = self._serving, []
        for listener in serving:
            listener.shutdown()

    def close(self) -> None:
        """Stop listening, tell open sessions we are going, and wait a moment for them."""
        for listener in self.listeners:
            listener.server_close()
        self._closing.set()
        self.connections.interrupt_all("Service shutting down")
        self.connections.wait_until_idle(self.shutdown_grace)
        for duty in self._duties:  # each ends within its interval of _closing
            if duty.is_alive():  # a Ctrl-C or SIGTERM may have cut _start_duties() short before start()
                duty.join(self.shutdown_grace)

    def __enter__(self) -> MailServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_duties(self) -> None:
        """Start the watchdog and the users.txt poller, once."""
        with self._duties_lock:
            if self._duties or self._closing.is_set():
                return
            for name, duty in (("watchdog", self._watch_deadlines), ("users poller", self._poll_users)):
                self._duties.append(threading.Thread(target=duty, name=name, daemon=True))
                self._duties[-1].start()

    def log_who_is_here(self) -> None:
        """Log one line: who is logged in now, per protocol, and the sessions open (--who-interval)."""
        sessions, users = self.connections.who_is_here()
        here = ", ".join(f"{protocol} {len(names)} ({', '.join(names)})" for protocol, names in users.items())
        log.info("logged in now: %s; %s open", here or "nobody", plural(sessions, "session"))

    def _watch_deadlines(self) -> None:
        """Until close(): cut off the sessions past their deadline (a byte a second is no way around it), and
        log who is logged in every --who-interval seconds."""
        next_summary = time.monotonic() + self.config.who_interval
        while not self._closing.wait(self.watchdog_interval):
            if self.config.who_interval and time.monotonic() >= next_summary:
                next_summary += self.config.who_interval
                self.log_who_is_here()
            self.connections.expire_overdue()

    def _poll_users(self) -> None:
        """Until close(): an edit of users.txt takes effect, and is logged, within about a second, login or not."""
        while not self._closing.wait(self.users_poll_interval):
            try:
                self.users.refresh()
            except Exception:  # a bug there must not end the polling
                log.exception("could not reload %s", self.users.path)
