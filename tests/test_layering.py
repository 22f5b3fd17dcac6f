"""The layers, read from the code: the sessions use only storage's public interface.

`pop3.py` and `smtp.py` speak the protocols; where and how mail is stored is `storage.py`'s
business (with `maildir.py` and `durable.py` below it). These tests read the sessions'
syntax trees, so that a session reaching past the interface fails here, not in review:

- they import from `storage` only what its `__all__` names, and nothing from the modules
  below it, nor `os`, `pathlib`, `shutil`, `mailbox` or `io`;
- they touch no `_private` attribute of anything but themselves;
- they open no file, and ask the MailboxStore only its public methods.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

from mailserver import storage
from mailserver.storage import MailboxStore

SESSIONS = ("pop3.py", "smtp.py")
BELOW_STORAGE = {"maildir", "maildrop", "durable", "migration"}  # storage's own helpers: a session never needs them
FILE_MODULES = {"os", "pathlib", "shutil", "mailbox", "io", "tempfile"}


def tree_of(name: str) -> ast.Module:
    path = ROOT / "mailserver" / name
    return ast.parse(path.read_text(), str(path))


def layering_problems(tree: ast.Module) -> list[str]:
    """What in a session's syntax tree reaches past storage's public interface."""
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[-1]
            if node.level and module == "storage":
                problems += [f"imports {a.name} from storage" for a in node.names if a.name not in storage.__all__]
            elif (node.level and module in BELOW_STORAGE) or (not node.level and module in FILE_MODULES):
                problems.append(f"imports from {node.module}")
        elif isinstance(node, ast.Import):
            problems += [f"imports {a.name}" for a in node.names if a.name.split(".")[0] in FILE_MODULES]
        elif isinstance(node, ast.Attribute):
            problems += attribute_problems(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            problems.append(f"calls open() at line {node.lineno}")
    return problems


def attribute_problems(node: ast.Attribute) -> list[str]:
    """A private attribute of another object, or a MailboxStore attribute that is no public method."""
    name = node.attr
    owner = node.value
    if name.startswith("_") and not name.startswith("__") and not (isinstance(owner, ast.Name) and owner.id == "self"):
        return [f"reaches {ast.unparse(node)} at line {node.lineno}"]
    store_method = callable(getattr(MailboxStore, name, None)) and not name.startswith("_")
    if isinstance(owner, ast.Attribute) and owner.attr == "mailboxes" and not store_method:  # self.mail.mailboxes.x
        return [f"asks the MailboxStore for {name} at line {node.lineno}"]
    return []


@pytest.mark.parametrize("session", SESSIONS)
def test_a_session_uses_only_the_public_interface_of_storage(session: str) -> None:
    assert layering_problems(tree_of(session)) == []


@pytest.mark.parametrize(
    "line, problem",
    [
        ("from .storage import SENT", "imports SENT from storage"),
        ("from .maildir import wire_size", "imports from maildir"),
        ("import os", "imports os"),
        ("from pathlib import Path", "imports from pathlib"),
        ("self.drop._folder.rescan()", "reaches self.drop._folder"),
        ("self.mail.mailboxes._user_path(user)", "reaches self.mail.mailboxes._user_path"),
        ("self.mail.mailboxes.root / user", "asks the MailboxStore for root"),
        ("open(path)", "calls open()"),
    ],
)
def test_the_check_sees_a_session_reach_past_the_interface(line: str, problem: str) -> None:
    """The check itself: each way past the interface, written into a session, is found."""
    problems = layering_problems(ast.parse(line))
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_the_interface_the_sessions_import_exists() -> None:
    assert all(hasattr(storage, name) for name in storage.__all__)
    assert not any(name.startswith("_") for name in storage.__all__)


def test_the_storage_modules_are_where_the_check_looks() -> None:
    for module in BELOW_STORAGE:
        assert (Path(ROOT) / "mailserver" / f"{module}.py").is_file()


MAX_MODULE_LINES = 450  # issue 17: a module a newcomer can read whole; client.py is one file on purpose


def test_no_product_module_but_client_py_is_longer_than_a_newcomer_reads() -> None:
    modules = [*sorted((ROOT / "mailserver").glob("*.py")), ROOT / "server.py"]
    lengths = {path.name: len(path.read_text().splitlines()) for path in modules}
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}, "split it by job (CONTRIBUTING.md)"
