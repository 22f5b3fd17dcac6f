"""What 100 RCPTs cost the server for an inbox of many files without `,S=` in their names (issue 18, item 10).

    .venv/bin/python tests/rcpt_cost.py                  # this checkout's server.py
    .venv/bin/python tests/rcpt_cost.py ../main-copy     # another checkout's, to compare

A script, not a test (no timing assertion in the suite). It writes a users file and an inbox
of --files messages named as another program names them (so their size must be read from the
file, not the name), starts server.py on a free port, logs in, sends MAIL and 100 RCPTs to
that inbox, and prints the server's CPU (from /proc, Linux) and the wall time they took.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt


def other_programs_messages(inbox: Path, count: int) -> None:
    """count messages of 16 octets in inbox/cur, named as another program names them (no ,S=),
    the inbox's folders made if need be and dated a minute back."""
    for part in ("tmp", "new", "cur"):
        (inbox / part).mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (inbox / "cur" / f"{number}.M{number}P1.other:2,S").write_bytes(b"Subject: old\n\nx\n")
    past = time.time() - 60
    for part in ("new", "cur"):
        os.utime(inbox / part, (past, past))


def make_inbox(work: Path, files: int) -> Path:
    """users.txt for alice and bob, and bob's mailbox with files messages of another program's; return users.txt."""
    users = work / "users.txt"
    hashes = {name: bcrypt.hashpw(f"{name}-password".encode(), bcrypt.gensalt(4)).decode() for name in ("alice", "bob")}
    users.write_text("".join(f"{name}:{hashed}\n" for name, hashed in hashes.items()))
    bob = work / "mailboxes" / "bob"
    for part in ("tmp", "new", "cur"):  # .Sent too: else the start-up would take it for the old layout
        (bob / ".Sent" / part).mkdir(parents=True, exist_ok=True)
    other_programs_messages(bob, files)
    return users


def cpu_seconds(pid: int) -> float:
    """User and system CPU of process pid, all its threads (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--files", type=int, default=30_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rcpt-cost-"))
    users = make_inbox(work, args.files)
    options = ["--host", "127.0.0.1", "--port", "0", "--no-pop3", "--hostname", "mail.test", "--users", str(users)]
    command = [sys.executable, str(Path(args.checkout) / "server.py"), *options, "--mailboxes", str(work / "mailboxes")]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    while not (serving := re.search(r"serving on [\d.]+:(\d+)", server.stderr.readline())):
        pass
    with socket.create_connection(("127.0.0.1", int(serving[1])), timeout=600) as connection:
        replies = connection.makefile("rb")

        def command_reply(line: str) -> bytes:
            connection.sendall(line.encode() + b"\r\n")
            while (reply := replies.readline())[3:4] != b" ":
                pass
            return reply

        replies.readline()
        command_reply("EHLO cost.test")
        assert command_reply("AUTH PLAIN " + base64.b64encode(b"\0alice\0alice-password").decode())[:3] == b"235"
        command_reply("MAIL FROM:<alice@mail.test>")
        cpu, wall = cpu_seconds(server.pid), time.monotonic()
        for _ in range(100):
            assert command_reply("RCPT TO:<bob@localhost>")[:3] == b"250"
        cpu, wall = cpu_seconds(server.pid) - cpu, time.monotonic() - wall
        command_reply("QUIT")
    server.send_signal(signal.SIGTERM)
    server.wait(10)
    shutil.rmtree(work)
    print(f"{args.checkout}: 100 RCPTs to an inbox of {args.files} files: server CPU {cpu:.2f} s, wall {wall:.2f} s")


if __name__ == "__main__":
    main()
