"""A menu-driven terminal client for the teaching SMTP server.

Run it next to ``python server.py``; with ``--trace`` every line on the
wire is printed, so a class can watch what each menu choice means in SMTP::

    $ python client.py --trace
    S: 220 localhost Service ready
    220 localhost Service ready
    Username: alice
    Password:
    C: EHLO laptop
    S: 250-localhost Hello laptop
    S: 250-AUTH PLAIN LOGIN
    ...
    S: 250 HELP
    C: AUTH PLAIN ********
    S: 235 2.7.0 Authentication successful
    Logged in as alice.

The standard commands come from ``smtplib``: ``MailClient`` only adds the
server's two extra verbs, RETR and DELE, and the ``C:``/``S:`` trace.  The
menu below it prompts, calls one ``MailClient`` method and prints the
result; it never speaks the protocol itself.

Piped input works too: when stdin is not a terminal every answer, the
password included, is read line by line::

    printf 'alice\\nwonderland\\n4\\n' | python client.py
"""

import argparse
import email
import email.policy
import email.utils
import getpass
import io
import re
import smtplib
import socket
import ssl
import sys
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2525
# Seconds to wait for the server on each socket operation, so a server that
# hangs ends the session with a message instead of freezing the terminal.
SOCKET_TIMEOUT = 60
MAX_LOGIN_ATTEMPTS = 3
# The server's lines are at most 1001 octets (1000 + a stuffed dot);
# smtplib allows replies of 8192, and so do we for RETR lines.
MAX_LINE = 8192
# A long message in the trace shows this many lines, then how many were cut.
TRACE_BODY_LINES = 10
TRACE_MASK = "********"
CLOSED_NOTE = "(the server closed the connection)"

# Reply codes the client branches on (RFC 5321 4.2.3, RFC 4954 6).
OK = 250
START_MAIL_INPUT = 354
AUTH_CHALLENGE = 334
AUTH_FAILED = 535
SERVICE_NOT_AVAILABLE = 421

# RFC 5321 4.1.2: Mailbox = Local-part "@" Domain.  We accept the common
# Dot-string form; quoted local parts and address literals are not needed
# in a classroom and would only make the error message harder to write.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, the angle brackets included

# Control characters other than tab and newline could drive the terminal
# (escape sequences hidden in a message), so retrieved text shows them as "?".
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

Trace = Callable[[str], None]


class MailClient(smtplib.SMTP):
    """smtplib.SMTP plus the server's RETR and DELE verbs and a C:/S: trace.

    Pass ``trace`` (e.g. ``print``) to see every line exchanged.  Every
    line sent goes through ``send`` and every reply through ``getreply``
    (RETR's messages through ``_read_block``), so only those trace.
    ``last_reply`` keeps the latest (code, text), so callers can report what
    the server said and the trace knows what a line sent is answering.
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        *,
        trace: Trace | None = None,
        timeout: float = SOCKET_TIMEOUT,
        **options: Any,
    ) -> None:
        """Connect to host:port if host is given, as smtplib.SMTP does; options go to smtplib."""
        # Set before connecting: smtplib reads the greeting through getreply.
        self.trace = trace
        self.last_reply: tuple[int, bytes] = (0, b"")
        # socket.getfqdn(), smtplib's default EHLO name, can stall on DNS.
        super().__init__(host, port, local_hostname=socket.gethostname(), timeout=timeout, **options)

    def send(self, s: str | bytes) -> None:
        """Send ``s`` to the server, tracing it first."""
        if self.trace is not None:
            wire = s.encode(self.command_encoding) if isinstance(s, str) else s
            for line in self._client_lines(wire):
                self.trace(line)
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        """Read one reply; raise SMTPServerDisconnected if the server is gone.

        RFC 5321 3.8: a 421 means the server is closing the channel,
        whatever command it answers, so it is treated as a disconnect here
        rather than in each caller.
        """
        try:
            code, text = super().getreply()
        except smtplib.SMTPServerDisconnected:
            self._trace_note(CLOSED_NOTE)
            raise
        self.last_reply = (code, text)
        if self.trace is not None:
            for line in reply_lines(code, text):
                self.trace(f"S: {line}".rstrip())
        if code == SERVICE_NOT_AVAILABLE:
            self.close()
            raise smtplib.SMTPServerDisconnected(format_reply(code, text))
        return code, text

    def retr(self) -> list[bytes]:
        """Return every message the logged-in user sent, oldest first.

        The server answers ``250 N messages follow`` and then sends N
        blocks like DATA: CRLF lines, dot-stuffed, each ended by ``.``.
        Raise SMTPResponseException if the server refuses.
        """
        count = self._count_reply("RETR")
        return [self._read_block() for _ in range(count)]

    def dele(self) -> int:
        """Delete all the logged-in user's messages; return how many went."""
        return self._count_reply("DELE")

    def _count_reply(self, verb: str) -> int:
        """Send ``verb``; return the count that starts its 250 reply."""
        code, text = self.docmd(verb)
        words = text.split()
        if code != OK or not words or not words[0].isdigit():
            raise smtplib.SMTPResponseException(code, text)
        return int(words[0])

    def _read_block(self) -> bytes:
        """Read one dot-terminated message from the socket, unstuffed."""
        wire_lines: list[bytes] = []
        while (line := self._read_line()) != b".\r\n":
            wire_lines.append(line)
        if self.trace is not None:
            shown = [decode(line.rstrip(b"\r\n")) for line in wire_lines]
            for line in shorten("S:", [*shown, "."]):
                self.trace(line)
        # RFC 5321 4.5.2: the sender doubled a leading dot; undo it.
        return b"".join(line[1:] if line.startswith(b".") else line for line in wire_lines)

    def _read_line(self) -> bytes:
        """Read one line of a RETR block; raise if the server is gone."""
        try:
            line = self.file.readline(MAX_LINE + 1)
        except OSError as error:
            raise self._gone(f"Connection unexpectedly closed: {error}") from error
        if not line:
            raise self._gone("Connection unexpectedly closed")
        if len(line) > MAX_LINE:
            self.close()
            raise smtplib.SMTPResponseException(500, b"Line too long.")
        return line

    def _client_lines(self, wire: bytes) -> list[str]:
        """Return the trace lines for bytes about to be sent."""
        code = self.last_reply[0]
        if code == START_MAIL_INPUT:
            # smtplib sends the whole dot-stuffed message in one go.
            return shorten("C:", decode(wire).removesuffix("\r\n").split("\r\n"))
        if code == AUTH_CHALLENGE:
            return [f"C: {TRACE_MASK}"]  # the answer to a 334 is a credential
        command = decode(wire).removesuffix("\r\n")
        return [f"C: {command_for_trace(command)}"]

    def _gone(self, reason: str) -> smtplib.SMTPServerDisconnected:
        """Close our end, as smtplib's getreply does; return what to raise."""
        self.close()
        self._trace_note(CLOSED_NOTE)
        return smtplib.SMTPServerDisconnected(reason)

    def _trace_note(self, note: str) -> None:
        """Trace something that is not a line on the wire, indented."""
        if self.trace is not None:
            self.trace(f"   {note}")


class MailClientTLS(MailClient, smtplib.SMTP_SSL):
    """MailClient speaking TLS from the first byte (SMTPS, RFC 8314); pass context=."""


def command_for_trace(command: str) -> str:
    """Return ``command`` with its verb in capitals and any AUTH payload masked.

    smtplib sends verbs in lower case (``mail FROM:<...>``); the seed and
    RFC 5321 write them in capitals, and SMTP verbs are case-insensitive.
    """
    verb, space, argument = command.partition(" ")
    verb = verb.upper()
    if verb == "AUTH":
        mechanism, space2, payload = argument.partition(" ")
        if payload:
            argument = f"{mechanism}{space2}{TRACE_MASK}"
    return f"{verb}{space}{argument}"


def reply_lines(code: int, text: bytes) -> list[str]:
    """Rebuild the wire lines of a reply smtplib has joined with newlines."""
    lines = decode(text).split("\n")
    last = len(lines) - 1
    return [f"{code}{'-' if i < last else ' '}{line}" for i, line in enumerate(lines)]


def shorten(direction: str, lines: list[str]) -> list[str]:
    """Return trace lines for a message: its header, TRACE_BODY_LINES of
    its body, a note of how many lines were left out, and the final "."."""
    message, final = lines[:-1], lines[-1:]
    # The header teaches the format, so all of it is kept; RFC 5322 2.1: an
    # empty line ends it.  Without one, the whole message counts as body.
    header_end = message.index("") + 1 if "" in message else 0
    keep = header_end + TRACE_BODY_LINES
    traced = [f"{direction} {line}".rstrip() for line in message[:keep]]
    if len(message) > keep:
        traced.append(f"   ({plural(len(message) - keep, 'more line')} not shown)")
    return [*traced, *(f"{direction} {line}" for line in final)]


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def format_reply(code: int, text: bytes) -> str:
    return f"{code} {decode(text)}".replace("\n", " / ")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- The terminal side: prompts, the session, the menu ---------------------


class CannotConnectError(Exception):
    """Nobody answered at HOST:PORT."""


class LoginFailedError(Exception):
    """The login cannot go on (too many attempts, or refused outright)."""


def ask(prompt: str) -> str:
    """Return one answer; raise EOFError on Ctrl-D or end of input."""
    return input(prompt)


def ask_secret(prompt: str) -> str:
    """Return a password, without echo when a person is typing it.

    getpass would open /dev/tty even when stdin is a pipe (and warn when
    there is no terminal), so scripts get plain line reading instead.
    """
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return input(prompt)


def is_address(address: str) -> bool:
    """Return True if ``address`` is a plain name@domain SMTP mailbox."""
    local_part = address.rpartition("@")[0]
    return ADDRESS.fullmatch(address) is not None and len(local_part) <= MAX_LOCAL_PART and len(address) + 2 <= MAX_PATH


class Account:
    """The user's account at one server: how to reach it, the connection, and how to end it politely."""

    def __init__(
        self,
        host: str,
        port: int,
        trace: Trace | None,
        tls: ssl.SSLContext | None = None,
        *,
        implicit_tls: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.trace = trace
        self.tls = tls  # None: plain text; else STARTTLS, or TLS from the start with implicit_tls
        self.implicit_tls = implicit_tls
        self.client: MailClient | None = None
        self.user = ""
        self.server_name = host

    def connect(self) -> MailClient:
        """Open a fresh connection, read the greeting, and return the client."""
        try:
            if self.implicit_tls:
                client = MailClientTLS(self.host, self.port, trace=self.trace, context=self.tls)
            else:
                client = MailClient(self.host, self.port, trace=self.trace)
        except (smtplib.SMTPException, ssl.SSLError):
            raise
        except OSError as error:
            message = f"Cannot connect to {self.host}:{self.port} — is the server running? (python server.py)"
            raise CannotConnectError(message) from error
        self.client = client
        # RFC 5321 4.3.1: the greeting starts with the server's name.
        self.server_name = decode(client.last_reply[1]).split(" ", 1)[0] or self.host
        if self.tls is not None and not self.implicit_tls:
            client.starttls(context=self.tls)  # raises SMTPNotSupportedError if not offered
        return client

    def log_in(self, user: str | None) -> None:
        """Ask for credentials until the server accepts them.

        The server closes the connection after a 535, so every retry opens
        a new one.  Raise LoginFailedError after MAX_LOGIN_ATTEMPTS.
        """
        client = self.connect()
        print(format_reply(*client.last_reply))  # the greeting
        for attempt in range(MAX_LOGIN_ATTEMPTS):
            if attempt > 0 and client.sock is None:  # hung up after the 535
                client = self.connect()
            name = user or ask("Username: ")
            password = ask_secret("Password: ")
            if self._try_login(client, name, password):
                self.user = name
                print(f"Logged in as {name}.")
                return
        raise LoginFailedError(f"Login failed {MAX_LOGIN_ATTEMPTS} times; giving up.")

    def _try_login(self, client: MailClient, name: str, password: str) -> bool:
        """Return True if the server accepts ``name`` and ``password``."""
        try:
            client.login(name, password)
            return True
        except UnicodeEncodeError:
            # smtplib encodes AUTH responses as ASCII before sending anything.
            print("Login failed: smtplib can only send ASCII usernames and passwords.")
        except smtplib.SMTPNotSupportedError as error:
            raise LoginFailedError(f"The server does not offer login: {error}") from error
        except smtplib.SMTPServerDisconnected:
            # After our 535 the server hangs up, and smtplib.login, trying the
            # next mechanism, meets a closed socket: a disconnect, not an
            # SMTPAuthenticationError.  Only the 535 tells the two apart.
            if client.last_reply[0] != AUTH_FAILED:
                raise
            print("Login failed: wrong username or password.")
        except smtplib.SMTPResponseException as error:
            if error.smtp_code != AUTH_FAILED:  # e.g. 454, too many failures
                raise LoginFailedError(f"Login refused: {format_reply(error.smtp_code, error.smtp_error)}") from error
            print("Login failed: wrong username or password.")
        return False

    def close(self) -> None:
        """Send QUIT if still connected; a server already gone is fine."""
        client, self.client = self.client, None
        if client is None or client.sock is None:
            return
        try:
            code, text = client.quit()
            print(format_reply(code, text))
        except (smtplib.SMTPException, OSError):
            client.close()


# --- Menu actions: each prompts, calls one MailClient method, prints. -------
# Each returns True to show the menu again, False to end the session.


def send_mail(account: Account) -> bool:
    """Menu 1: build a message from the answers and send it."""
    default_sender = f"{account.user}@{account.server_name}"
    sender = ask_address(f"From [{default_sender}]: ", default_sender)
    recipients = ask_recipients()
    subject = ask("Subject: ")
    print("Type the message; end it with a line holding only '.' (or Ctrl-D).")
    message = build_message(sender, recipients, subject, read_body())
    # RFC 6152: 8-bit text (UTF-8 written as is) must be declared in MAIL.
    options = ["BODY=8BITMIME"] if message["Content-Transfer-Encoding"] == "8bit" else []
    client = active_client(account)
    try:
        refused = client.send_message(message, sender, recipients, mail_options=options)
    except smtplib.SMTPRecipientsRefused as error:
        print("Not sent: the server refused every recipient.")
        print_refused(error.recipients)
        return True
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
        print(f"Not sent: {format_reply(error.smtp_code, error.smtp_error)}")
        return True
    print(f"Sent: {format_reply(*client.last_reply)}")
    if refused:
        print("These recipients were refused:")
        print_refused(refused)
    return True


def ask_address(prompt: str, default: str) -> str:
    """Ask until the answer (or the default, for an empty one) is an address."""
    while True:
        address = ask(prompt).strip() or default
        if is_address(address):
            return address
        print(not_an_address([address]))


def ask_recipients() -> list[str]:
    """Ask until every comma-separated recipient is an address."""
    while True:
        recipients = [part.strip() for part in ask("To (comma-separated): ").split(",") if part.strip()]
        invalid = [address for address in recipients if not is_address(address)]
        if recipients and not invalid:
            return recipients
        if not recipients:
            print("At least one recipient is needed.")
        else:
            print(not_an_address(invalid))


def not_an_address(answers: list[str]) -> str:
    return f"Not an email address: {', '.join(map(repr, answers))}. Write it as name@domain, e.g. bob@example.org."


def read_body() -> str:
    """Read body lines up to a lone "." or the end of input (Ctrl-D)."""
    lines: list[str] = []
    while True:
        try:
            line = ask("")
        except EOFError:
            print()
            break
        if line == ".":
            break
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def build_message(sender: str, recipients: list[str], subject: str, body: str) -> EmailMessage:
    """Return the message, headers encoded as RFC 2047 needs for UTF-8."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=True)
    # make_msgid's default domain is socket.getfqdn(), which can stall.
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(body)
    return message


def print_refused(refused: dict[str, tuple[int, bytes]]) -> None:
    for address, (code, text) in refused.items():
        print(f"  {address}: {format_reply(code, text)}")


def retrieve_mail(account: Account) -> bool:
    """Menu 2: show every message this user sent, decoded."""
    messages = active_client(account).retr()
    if not messages:
        print("No messages.")
        return True
    print(f"You have {plural(len(messages), 'message')}.")
    for number, raw in enumerate(messages, start=1):
        print()
        print(f"--- Message {number} ---")
        print(describe_message(raw))
    return True


def describe_message(raw: bytes) -> str:
    """Return the headers a reader wants and the decoded text body."""
    # RETR sends CRLF lines; the parser would keep the CR in the body text.
    unix_text = raw.replace(b"\r\n", b"\n")
    try:
        shown = describe_parsed(email.message_from_bytes(unix_text, policy=email.policy.default))
    except Exception:
        # The email package can trip over an odd message in many ways; a
        # message shown raw is better than a session ended by a traceback.
        shown = decode(unix_text)
    return _CONTROL.sub("?", shown)


def describe_parsed(message: EmailMessage) -> str:
    """Return the Date, From, To and Subject, the text, and the other parts' names."""
    headers = [f"{name + ':':<9}{message.get(name, '')}" for name in ("Date", "From", "To", "Subject")]
    body_part = message.get_body(preferencelist=("plain",))
    body = text_of(body_part) if body_part is not None else "(no text part)\n"
    others = [describe_part(part) for part in message.walk() if is_other_part(part, body_part)]
    return "\n".join([*headers, "", body.rstrip("\n"), *others])


def text_of(part: EmailMessage) -> str:
    """Return the decoded text (quoted-printable, base64, any charset)."""
    try:
        return part.get_content()
    except (LookupError, UnicodeError):
        # An unknown or wrong charset: show the bytes as best we can.
        return decode(part.get_payload(decode=True) or b"")


def is_other_part(part: EmailMessage, body_part: EmailMessage | None) -> bool:
    """Return True for a leaf part that is not the body shown."""
    return not part.is_multipart() and part is not body_part


def describe_part(part: EmailMessage) -> str:
    """Name a MIME part that is not shown, instead of dumping it."""
    name = part.get_filename()
    return f"[{part.get_content_type()} part{f' {name!r}' if name else ''} not shown]"


def delete_mail(account: Account) -> bool:
    """Menu 3: after a yes, delete all this user's messages."""
    client = active_client(account)
    count = len(client.retr())  # the protocol has no other way to count
    if count == 0:
        print("No messages.")
        return True
    if ask(f"Delete all {plural(count, 'message')}? [y/N] ").strip().lower() not in ("y", "yes"):
        print("Nothing deleted.")
        return True
    print(f"Deleted {plural(client.dele(), 'message')}.")
    return True


def quit_session(account: Account) -> bool:
    """Menu 4: QUIT and show the server's goodbye."""
    account.close()
    return False


def active_client(account: Account) -> MailClient:
    if account.client is None:
        raise smtplib.SMTPServerDisconnected("not connected")
    return account.client


MENU: dict[str, tuple[str, Callable[[Account], bool]]] = {
    "1": ("Send a message", send_mail),
    "2": ("Retrieve my messages", retrieve_mail),
    "3": ("Delete my messages", delete_mail),
    "4": ("Quit", quit_session),
}


def run_menu(account: Account) -> None:
    """Show the menu and run choices until Quit."""
    keep_going = True
    while keep_going:
        print()
        for key, (label, _) in MENU.items():
            print(f"  {key}. {label}")
        action = choose_action()
        try:
            keep_going = action(account)
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPResponseException as error:
            print(f"The server answered: {format_reply(error.smtp_code, error.smtp_error)}")
        except smtplib.SMTPException as error:
            print(f"Error: {error}")


def choose_action() -> Callable[[Account], bool]:
    """Ask until the answer is one of the MENU keys."""
    while True:
        choice = ask("Choose: ").strip()
        if choice in MENU:
            return MENU[choice][1]
        keys = list(MENU)
        print(f"Please choose {', '.join(keys[:-1])} or {keys[-1]}.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Menu client for the teaching SMTP server.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server address (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--user", help="log in as USER instead of asking")
    parser.add_argument("--trace", action="store_true", help="print every protocol line as C:/S:")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="switch to TLS with STARTTLS before logging in")
    tls.add_argument("--tls", action="store_true", help="TLS from the start (the server's --tls-port)")
    parser.add_argument("--cafile", help="trust this certificate (PEM), e.g. the server's self-signed one")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the client; return the exit status."""
    args = build_parser().parse_args(argv)
    # A terminal that cannot show a character, or input that is not UTF-8,
    # must not end the session in a traceback.
    for stream in (sys.stdin, sys.stdout):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    try:
        tls = ssl.create_default_context(cafile=args.cafile) if args.starttls or args.tls else None
    except (OSError, ssl.SSLError) as error:
        print(f"Cannot use --cafile {args.cafile}: {error}", file=sys.stderr)
        return 2
    account = Account(args.host, args.port, print if args.trace else None, tls, implicit_tls=args.tls)
    try:
        account.log_in(args.user)
        run_menu(account)
    except EOFError:  # Ctrl-D, or the end of a script
        print()
    except KeyboardInterrupt:  # Ctrl-C
        print()
        return 130
    except (CannotConnectError, LoginFailedError, smtplib.SMTPException, ssl.SSLError) as error:
        print(error_message(error), file=sys.stderr)
        return 1
    finally:
        account.close()  # QUIT if still connected
    return 0


def error_message(error: Exception) -> str:
    """One line that says what went wrong, for the errors that end the client."""
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return f"Connection closed by server: {error}"
    if isinstance(error, smtplib.SMTPConnectError):
        return f"The server refused the connection: {format_reply(error.smtp_code, error.smtp_error)}"
    if isinstance(error, smtplib.SMTPException):  # anything else smtplib can raise
        return f"SMTP error: {error}"
    if isinstance(error, ssl.SSLError):  # e.g. a certificate we were not told to trust (--cafile)
        return f"TLS failed: {error}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
