"""Samples in the docs that cannot drift: each lives in one place, and a test holds it to the code.

- The module map is CONTRIBUTING.md's table ("Where things live"): it names every module of
  `mailserver/` and no other, in an order in which each imports only modules above it.
- The EHLO sample is docs/protocol.md's session: it is what a real server answers, line for
  line, and no other doc or docstring carries a second copy of the extension lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from conftest import ROOT, RawSession, RunningServer

CONTRIBUTING = ROOT / "CONTRIBUTING.md"
PROTOCOL = ROOT / "docs" / "protocol.md"
PACKAGE = ROOT / "mailserver"
MAP_ROW = re.compile(r"^\| `(\w+)\.py` \|", re.MULTILINE)


def module_map() -> list[str]:
    """The modules CONTRIBUTING.md's table names, in its order."""
    return MAP_ROW.findall(CONTRIBUTING.read_text())


def package_modules() -> set[str]:
    return {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def runtime_imports(module: str) -> set[str]:
    """The package's modules that module imports when it runs (not those under `if TYPE_CHECKING:`)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for node in ast.walk(tree):  # drop the TYPE_CHECKING blocks: they run only in a type checker
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    return {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }


def test_the_module_map_names_every_module_once() -> None:
    listed = module_map()
    assert len(listed) == len(set(listed))
    assert set(listed) == package_modules()


def test_in_the_module_map_each_module_imports_only_those_above_it() -> None:
    listed = module_map()
    above = {module: set(listed[:number]) for number, module in enumerate(listed)}
    backwards = {module: runtime_imports(module) - above[module] for module in listed}
    assert {module: found for module, found in backwards.items() if found} == {}


def test_no_other_doc_keeps_a_module_map() -> None:
    """A file naming most modules is a second map: it should point to CONTRIBUTING.md instead."""
    modules = package_modules()
    for path in [ROOT / "README.md", ROOT / "server.py", PACKAGE / "__init__.py", *ROOT.glob("docs/*.md")]:
        named = {module for module in modules if f"{module}.py" in path.read_text()}
        assert len(named) <= len(modules) // 2, f"{path.name} lists {sorted(named)}: link to CONTRIBUTING.md"


def ehlo_sample() -> tuple[str, list[str]]:
    """The EHLO sample of docs/protocol.md: the hostname it shows, and the reply's lines without `250-`."""
    text = PROTOCOL.read_text()
    sample = re.search(r"^C: EHLO laptop\n((?:S: 250-.*\n)*S: 250 .*)$", text, re.MULTILINE)
    assert sample is not None, "docs/protocol.md has no EHLO sample"
    lines = [line[len("S: 250-") :] for line in sample[1].splitlines()]
    hostname = lines[0].split(" ")[0]
    return hostname, lines


def test_the_ehlo_sample_in_the_docs_is_what_the_server_answers(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession]
) -> None:
    hostname, documented = ehlo_sample()
    server = start_server(hostname=hostname)  # the defaults otherwise, as `python server.py` runs
    session = connect(server)
    assert session.command("EHLO laptop") == (250, documented)


def test_no_other_doc_keeps_a_copy_of_the_ehlo_sample() -> None:
    """The others show the first and last lines around "..." and link to docs/protocol.md."""
    places = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "server.py", ROOT / "client.py"]
    places += [*ROOT.glob("docs/*.md"), *PACKAGE.glob("*.py")]
    copies = [path.relative_to(ROOT).as_posix() for path in places if re.search(r"S: 250-SIZE \d+", path.read_text())]
    assert copies == ["docs/protocol.md"]


def test_the_docs_point_to_where_the_samples_live() -> None:
    assert "CONTRIBUTING.md" in (ROOT / "server.py").read_text()
    assert "CONTRIBUTING.md" in (PACKAGE / "__init__.py").read_text()
    for doc in ("console.md", "classroom.md"):
        assert "](protocol.md)" in (ROOT / "docs" / doc).read_text()
    assert "docs/protocol.md" in (ROOT / "server.py").read_text()
