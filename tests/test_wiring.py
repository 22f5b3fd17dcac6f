"""The server as a test or a tool builds it: the settings check themselves, and nothing runs until it serves.

`ServerConfig` refuses a combination that cannot work when it is made, with the words the
command line uses, so a test that builds one directly meets the same checks. `MailServer`
starts no thread in `__init__` (socketserver's habit): its watchdog and its users.txt
poller start with the first serve, as two duties, and `close()` stops them.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
import threading
from pathlib import Path

import pytest

from mailserver.config import ConfigError, ServerConfig
from mailserver.listener import MailServer
from mailserver.smtp import SMTPHandler
from mailserver.storage import MailboxStore
from mailserver.users import UserStore


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "cert.pem"}, "--tls-cert and --tls-key go together"),
        ({"tls_key": "key.pem"}, "--tls-cert and --tls-key go together"),
        ({"require_tls": True}, "--require-tls, --tls-port and --pop3s-port need --tls-cert and --tls-key"),
        ({"tls_port": 0}, "--require-tls, --tls-port and --pop3s-port need --tls-cert and --tls-key"),
        ({"pop3s_port": 0}, "--require-tls, --tls-port and --pop3s-port need --tls-cert and --tls-key"),
        ({"no_pop3": True, "pop3s_port": 0, "tls_cert": "c", "tls_key": "k"}, "contradict each other"),
        ({"auth_cache_ttl": -1.0}, "--auth-cache-ttl must be 0 (off) or more seconds"),
    ],
)
def test_a_config_built_directly_meets_the_command_lines_checks(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ServerConfig(**settings)  # type: ignore[arg-type]


def test_a_tls_context_handed_in_stands_for_the_certificate() -> None:
    """Tests hand in an SSLContext instead of files: --require-tls with one is a working combination."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert ServerConfig(require_tls=True, tls_context=context).require_tls


def test_the_config_is_frozen_and_its_local_domains_are_worked_out_once() -> None:
    config = ServerConfig(hostname="Mail.Example.", domain=("School.Example",))
    assert config.local_domains == frozenset({"mail.example", "localhost", "school.example"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hostname = "elsewhere"  # type: ignore[misc]
    assert dataclasses.replace(config, domain=()).local_domains == frozenset({"mail.example", "localhost"})


def duty_threads() -> set[str]:
    return {thread.name for thread in threading.enumerate() if thread.name in ("watchdog", "users poller")}


def test_nothing_runs_until_the_server_serves(tmp_path: Path, shared_users_file: Path) -> None:
    before = set(threading.enumerate())
    server = MailServer(ServerConfig(hostname="mail.test"), UserStore(shared_users_file), MailboxStore(tmp_path / "mb"))
    listener = server.listen(("127.0.0.1", 0), SMTPHandler)
    try:
        assert set(threading.enumerate()) - before == set()  # built and bound, but no thread of its own yet
        server.serve_in_background(listener, poll_interval=0.01)
        assert duty_threads() == {"watchdog", "users poller"}  # two duties, each in a thread of its own
    finally:
        server.shutdown()
        server.close()
    assert duty_threads() == set()  # close() stopped them
