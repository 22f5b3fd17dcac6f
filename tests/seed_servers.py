"""Small receiver-SMTPs of the seed, for the checker's tests: one right, and many with one student bug each.

`SeedHandler` is the seed done right, in as few lines as a student might write it: the
seed's commands, AUTH PLAIN (seed 7: a wrong password ends the connection), RETR and DELE
(seed 5 and 6). Each class below it changes one method or attribute, the way a student's
server goes wrong, and says in its docstring which bug it has.
"""

from __future__ import annotations

import base64
import socketserver
import sys
import threading
from collections.abc import Callable

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4
USERS = {"alice": "alice-password", "bob": "bob-password"}
TOO_LONG = "\0too long"  # what read_command returns for a line over the limit


class Close(Exception):
    """The handler ends the session."""


class SeedServer(socketserver.ThreadingTCPServer):
    """A seed server on 127.0.0.1 (port 0: any free one); sent[user] holds each user's messages (CRLF line ends)."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, handler: type[SeedHandler], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.sent: dict[str, list[bytes]] = {user: [] for user in USERS}
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]


class SeedHandler(socketserver.StreamRequestHandler):
    """The seed, right."""

    server: SeedServer
    greeting = "220 seed.test Service ready"
    line_end = "\r\n"
    data_ends = (b".\r\n",)  # RFC 5321 4.1.1.4: only <CRLF>.<CRLF>
    max_text_line = 998  # RFC 5321 4.5.3.1.6: 1000 octets with the CRLF

    def handle(self) -> None:
        self.user: str | None = None
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.reply(self.greeting)
        try:
            while (line := self.read_command()) is not None:
                self.dispatch(line)
        except (Close, OSError):
            pass

    def read_command(self) -> str | None:
        """The next command line; TOO_LONG for one over the limit (read to its end); None at the end."""
        line = self.rfile.readline(MAX_COMMAND_LINE)
        if not line:
            return None
        if not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = self.rfile.readline(4096)
            return TOO_LONG
        return line.rstrip(b"\r\n").decode("utf-8", "replace")

    def dispatch(self, line: str) -> None:
        if line == TOO_LONG:
            self.reply("500 Line too long")
            return
        verb, _, argument = line.partition(" ")
        method = self.method(verb)
        if method is None:
            self.unknown()
            return
        if verb.upper() in ("MAIL", "RCPT", "DATA", "RETR", "DELE") and not self.user:
            self.reply("530 Authentication required")
            return
        method(argument)

    def method(self, verb: str) -> Callable[[str], None] | None:
        if not (verb.isascii() and verb.isalpha()):
            return None
        return getattr(self, "do_" + verb.upper(), None)

    def unknown(self) -> None:
        self.reply("500 Syntax error, command unrecognized")

    def reply(self, text: str) -> None:
        self.wfile.write((text + self.line_end).encode())

    def do_HELO(self, argument: str) -> None:
        self.reply("250 seed.test")

    def do_EHLO(self, argument: str) -> None:
        self.reply("250-seed.test")
        self.reply("250 AUTH PLAIN")

    def do_AUTH(self, argument: str) -> None:
        try:
            _, user, password = base64.b64decode(argument.split(" ", 1)[1]).decode().split("\0")
        except (ValueError, IndexError):
            self.reply("501 Malformed AUTH")
            return
        if USERS.get(user) != password:
            self.wrong_password()
            return
        self.user = user
        self.reply("235 Authentication successful")

    def wrong_password(self) -> None:
        self.reply("535 Authentication credentials invalid")
        raise Close

    def do_MAIL(self, argument: str) -> None:
        self.sender, self.recipients = argument, []
        self.reply("250 OK")

    def do_RCPT(self, argument: str) -> None:
        if self.sender is None:
            self.reply("503 Need MAIL first")
            return
        self.recipients.append(argument)
        self.reply("250 OK")

    def do_DATA(self, argument: str) -> None:
        if not self.recipients:
            self.reply("503 Need RCPT first")
            return
        self.reply("354 Start mail input; end with <CRLF>.<CRLF>")
        message = self.read_message()
        self.sender, self.recipients = None, []
        if message is None:
            self.reply("500 Line too long")
            return
        assert self.user is not None
        with self.server.lock:
            self.server.sent[self.user].append(message)
        self.reply("250 OK")

    def read_message(self) -> bytes | None:
        """The data up to its end, dot-unstuffed; None if a line was too long; raise Close if the client goes."""
        lines, too_long = [], False
        while (line := self.rfile.readline(100_000)) not in self.data_ends:
            if not line:
                raise Close
            too_long = too_long or len(line.rstrip(b"\r\n")) > self.max_text_line
            lines.append(self.unstuffed(line))
        return None if too_long else b"".join(lines)

    def unstuffed(self, line: bytes) -> bytes:
        # RFC 5321 4.5.2: a leading dot goes "if there are other characters on the line" (a ".\n" keeps it).
        return line[1:] if line.startswith(b".") and line.rstrip(b"\r\n") != b"." else line

    retr_count = "250 {count} messages follow"

    def do_RETR(self, argument: str) -> None:
        messages = self.retrievable()
        self.reply(self.retr_count.format(count=len(messages)))
        for message in messages:
            stuffed = b"".join(b"." + line if line.startswith(b".") else line for line in message.splitlines(True))
            self.wfile.write(stuffed + b".\r\n")

    def retrievable(self) -> list[bytes]:
        assert self.user is not None
        with self.server.lock:
            return list(self.server.sent[self.user])

    def do_DELE(self, argument: str) -> None:
        assert self.user is not None
        with self.server.lock:
            count, self.server.sent[self.user] = len(self.server.sent[self.user]), []
        self.reply(f"250 {count} messages deleted")

    def do_HELP(self, argument: str) -> None:
        if not argument:
            self.reply("214 Commands: HELO EHLO AUTH MAIL RCPT DATA RETR DELE HELP NOOP QUIT")
        elif self.method(argument) is None:
            self.reply("504 Command parameter not implemented")
        else:
            self.reply(f"214 {argument.upper()}: see the seed, section 3")

    def do_NOOP(self, argument: str) -> None:
        self.reply("250 OK")

    def do_QUIT(self, argument: str) -> None:
        self.reply("221 seed.test Service closing transmission channel")
        raise Close


# --- One student bug each -------------------------------------------------------------


class GreetsWith250(SeedHandler):
    """The greeting is 250, not 220."""

    greeting = "250 seed.test Service ready"


class EndsRepliesInLF(SeedHandler):
    """Replies end in LF only."""

    line_end = "\n"


class EndsDataAtBareLF(SeedHandler):
    """The data ends at LF.LF as well as at CRLF.CRLF."""

    data_ends = (b".\r\n", b".\n")


class KeepsDoubledDots(SeedHandler):
    """No dot-unstuffing: a "..line" is stored as sent."""

    def unstuffed(self, line: bytes) -> bytes:
        return line


class Says502ForUnknown(SeedHandler):
    """502 (not implemented) for an unknown command, where the seed says 500."""

    def unknown(self) -> None:
        self.reply("502 Command not implemented")


class HelpsWith250(SeedHandler):
    """HELP answers 250."""

    def do_HELP(self, argument: str) -> None:
        self.reply("250 Commands: HELO MAIL RCPT DATA HELP NOOP QUIT")


class StaysOpenAfterQuit(SeedHandler):
    """QUIT is answered 221, but the connection stays open."""

    def do_QUIT(self, argument: str) -> None:
        self.reply("221 seed.test Service closing transmission channel")


class LosesSplitCommands(SeedHandler):
    """A command is taken from one recv(): one that comes in two TCP segments gets no reply."""

    def read_command(self) -> str | None:
        while True:
            received = self.request.recv(65536)
            if not received:
                return None
            if received.endswith(b"\r\n"):  # else dropped: "it was only half a command"
                return received[:-2].decode("utf-8", "replace")


class CrashesOnLongLines(SeedHandler):
    """A command line over 1000 octets crashes the session (a fixed-size buffer, in Python)."""

    def read_command(self) -> str | None:
        line = self.rfile.readline(100_000)
        if len(line) > 1000:
            raise Close  # the thread dies; the connection closes without a word
        return line.rstrip(b"\r\n").decode("utf-8", "replace") if line else None


class RetrievesEveryonesMail(SeedHandler):
    """RETR returns every user's mail, not just the logged-in user's."""

    def retrievable(self) -> list[bytes]:
        with self.server.lock:
            return [message for messages in self.server.sent.values() for message in messages]


class TakesDataBeforeRcpt(SeedHandler):
    """DATA is accepted before any RCPT."""

    def do_DATA(self, argument: str) -> None:
        self.recipients = self.recipients or ["nobody"]
        super().do_DATA(argument)


class KeepsWrongPasswords(SeedHandler):
    """A wrong password is refused, but the connection stays open."""

    def wrong_password(self) -> None:
        self.reply("535 Authentication credentials invalid")


class RefusesLowerCase(SeedHandler):
    """Verbs are compared as sent: "noop" is unknown."""

    def method(self, verb: str) -> Callable[[str], None] | None:
        return getattr(self, "do_" + verb, None) if verb.isascii() and verb.isalpha() else None


class Helps501ForUnknownTopics(SeedHandler):
    """HELP with an unknown topic answers 501, where the seed's table says 504 (aiosmtpd does this)."""

    def do_HELP(self, argument: str) -> None:
        if argument and self.method(argument) is None:
            self.reply("501 Supported commands: HELO MAIL RCPT DATA HELP NOOP QUIT")
            return
        super().do_HELP(argument)


class RefusesFullLines(SeedHandler):
    """A text line is held to the command line's 512 octets: a 998-octet line is refused."""

    max_text_line = 510


class CountsAfterAStatusCode(SeedHandler):
    """RETR's count comes after an enhanced status code, where the seed's client reads it first."""

    retr_count = "250 2.0.0 {count} messages follow"


class EchoesAuth(SeedHandler):
    """The AUTH line comes back before its reply (a debugging print left in): the password, in base64."""

    def do_AUTH(self, argument: str) -> None:
        self.wfile.write(f"AUTH {argument}\r\n".encode())
        super().do_AUTH(argument)


class NeverGreets(SeedHandler):
    """Accepts the connection and never says a word."""

    def handle(self) -> None:
        self.rfile.read()  # until the client goes


def main() -> None:
    """python tests/seed_servers.py NAME [PORT]: serve one of these servers (a broken one for a class to find)."""
    handlers = {cls.__name__: cls for cls in (SeedHandler, *SeedHandler.__subclasses__())}
    if len(sys.argv) < 2 or sys.argv[1] not in handlers:
        sys.exit(f"usage: python tests/seed_servers.py NAME [PORT], NAME one of: {', '.join(handlers)}")
    server = SeedServer(handlers[sys.argv[1]], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print(f"{sys.argv[1]} on 127.0.0.1:{server.port} (users: {', '.join(f'{u}/{p}' for u, p in USERS.items())})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
