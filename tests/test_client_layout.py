"""client.py's shape (issue 17): one file of the standard library only, for students to copy, in numbered
sections that its docstring lists; each section keeps its own constants and uses only what the sections
above it define, so a reader can stop at any section and know everything it stands on.
"""

from __future__ import annotations

import ast
import re
import sys

from conftest import ROOT

SOURCE = (ROOT / "client.py").read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)
HEADER = re.compile(r"^# --- (\d+)\. (.+?) -+$", re.MULTILINE)
CONTENTS_LINE = re.compile(r"^ {4}(\d+)\. (.+)$", re.MULTILINE)
CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*")


def headers() -> list[tuple[int, str, int]]:
    """The section headers in the code: (number, title, line)."""
    return [(int(match[1]), match[2], SOURCE.count("\n", 0, match.start()) + 1) for match in HEADER.finditer(SOURCE)]


def section_of(line: int) -> int:
    """The number of the section a line is in; 0 before the first header (the imports)."""
    return max((number for number, _, start in headers() if start <= line), default=0)


def defined_names(node: ast.stmt) -> list[str]:
    """The module-level names one top-level statement defines."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [target.id for target in targets if isinstance(target, ast.Name)]


def bound_inside(node: ast.AST) -> set[str]:
    """The names bound in the functions inside node (parameters, assignments): there they are not the module's."""
    bound: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.arg):
            bound.add(inner.arg)
        elif isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store) and inner is not node:
            bound.add(inner.id)
    return bound - set(defined_names(node)) if isinstance(node, ast.stmt) else bound


def module_names_used(node: ast.stmt, module_level: set[str]) -> set[str]:
    """The module-level names of client.py that one top-level statement reads."""
    local = bound_inside(node) if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else set()
    loaded = {inner.id for inner in ast.walk(node) if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Load)}
    return (loaded - local) & module_level


def where_defined() -> dict[str, int]:
    """Each module-level name of client.py and the section that defines it."""
    return {name: section_of(node.lineno) for node in TREE.body for name in defined_names(node)}


def test_client_is_one_file_of_the_standard_library_only() -> None:
    imported = {alias.name for node in ast.walk(TREE) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(TREE) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names) == set()
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(TREE))  # nothing relative


def test_the_docstring_lists_the_sections_in_their_order() -> None:
    in_code = [(number, title) for number, title, _ in headers()]
    assert [number for number, _ in in_code] == list(range(1, len(in_code) + 1))
    docstring = ast.get_docstring(TREE) or ""
    listed = [(int(number), title) for number, title in CONTENTS_LINE.findall(docstring)]
    assert listed == in_code


def test_each_section_uses_only_what_the_sections_above_it_define() -> None:
    defined = where_defined()
    later = {
        (node.lineno, name, defined[name])
        for node in TREE.body
        for name in module_names_used(node, set(defined))
        if defined[name] > section_of(node.lineno)
    }
    assert later == set(), "(line, name, the later section that defines it)"


def test_each_section_keeps_its_own_constants() -> None:
    defined = where_defined()
    used_in: dict[str, set[int]] = {}
    for node in TREE.body:
        for name in module_names_used(node, set(defined)):
            used_in.setdefault(name, set()).add(section_of(node.lineno))
    constants = {name: section for name, section in defined.items() if CONSTANT.fullmatch(name) and section > 0}
    assert len(constants) > 30  # the walk itself works
    elsewhere = {name: section for name, section in constants.items() if section not in used_in.get(name, set())}
    assert elsewhere == {}, "each of these is not used in the section that defines it: move it to its first user"
