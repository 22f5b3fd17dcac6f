"""Set-up on a fresh machine: the README's two Quick start lines, the requirements, what runs without bcrypt.

The lines themselves are run, as pasted, by `.ci/run` (the second) and by a fresh clone on a
stock Debian (`quickstart-check`); these tests hold the pieces those runs depend on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, USERS, RunningServer

README = ROOT / "README.md"


def quick_start_lines() -> list[str]:
    """The command lines of the first code block under the Quick start heading, as .ci/run reads them."""
    lines = README.read_text(encoding="utf-8").splitlines()
    heading = next(n for n, line in enumerate(lines) if re.fullmatch(r"#+ *Quick start", line))
    opening = next(n for n in range(heading + 1, len(lines)) if lines[n].startswith("```"))
    closing = next(n for n in range(opening + 1, len(lines)) if lines[n].startswith("```"))
    return [line for line in lines[opening + 1 : closing] if line.strip() and not line.lstrip().startswith("#")]


def pins(path: Path) -> dict[str, str]:
    """{package: version} of a requirements file's `name==version` lines."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r "):
            name, equals, version = line.partition("==")
            assert equals and version, f"{path.name}: {line!r} is not pinned with =="
            found[name.lower()] = version
    return found


def test_quick_start_is_two_lines() -> None:
    assert len(quick_start_lines()) == 2


def test_first_line_makes_the_venv_installs_the_server_and_starts_it() -> None:
    line = quick_start_lines()[0]
    assert line.startswith("python3 -m venv .venv && ")
    assert ".venv/bin/pip install -q -r requirements.txt" in line
    assert line.endswith(" && .venv/bin/python server.py")


def test_second_line_installs_the_dev_requirements_into_the_same_venv_and_runs_the_suite() -> None:
    line = quick_start_lines()[1]
    assert line.startswith("python3 -m venv .venv && ")  # also works alone, on a clean clone (CI)
    assert ".venv/bin/pip install -q -r requirements-dev.txt" in line
    assert line.endswith(" && .venv/bin/python -m pytest")


@pytest.mark.parametrize("index", [0, 1])
def test_no_command_a_stock_debian_lacks(index: int) -> None:
    """Debian has no `python` alias, and PEP 668 refuses a pip outside a virtual environment."""
    words = re.split(r"\s+|&&|;", quick_start_lines()[index])
    assert "python" not in words and "pip" not in words


# A command that starts with the bare word python or pip, wherever it stands on its line.
BARE_PYTHON_OR_PIP = re.compile(r"(?<![\w/\\.-])(python|pip)(?=\s)")
DOCUMENTS = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "users.txt"]


def command_texts(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of what a reader may paste: fenced code lines and inline code of a
    Markdown file, every comment line of users.txt."""
    found, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if path.suffix != ".md":
            found += [(number, line)] if line.startswith("#") else []
        elif line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            found.append((number, line))
        else:
            found += [(number, span) for span in re.findall(r"`([^`]+)`", line)]
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_no_command_in_the_docs_starts_with_bare_python_or_pip(path: Path) -> None:
    """Issue 21, item 7: stock Debian has python3 and no python; pip belongs in .venv (PEP 668)."""
    stale = [f"{path.name}:{number}: {text}" for number, text in command_texts(path) if BARE_PYTHON_OR_PIP.search(text)]
    assert not stale, "write python3 (a student), or .venv/bin/python and .venv/bin/pip:\n" + "\n".join(stale)


def test_ci_runs_the_readmes_second_line() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--print-test-line"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == quick_start_lines()[1] + "\n"


def test_the_server_needs_only_bcrypt() -> None:
    assert list(pins(ROOT / "requirements.txt")) == ["bcrypt"]


def test_dev_requirements_add_the_tests_the_linter_and_the_peers_to_the_servers() -> None:
    path = ROOT / "requirements-dev.txt"
    assert "-r requirements.txt" in path.read_text().splitlines()
    assert set(pins(path)) == {"pytest", "pytest-timeout", "hypothesis", "ruff", "aiosmtpd", "selenium"}


def test_ruff_pin_is_the_version_pyproject_requires() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["ruff"]["required-version"] == "==" + pins(ROOT / "requirements-dev.txt")["ruff"]


def test_what_the_recipes_create_is_ignored_by_git() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    created = [".venv/bin/python", "cert.pem", "key.pem", "localhost-cert.pem", "localhost-key.pem", "msmtprc"]
    created += ["mpoprc", "fetchmailrc", "muttrc", "message.txt", "unsent-1.eml", "first.eml", "class.txt"]
    created += ["inbox-copy/new/1.x", "dovecot.conf", "dovecot.log", "dovecot-run/login", "dovecot-state/x"]
    result = subprocess.run([git, "check-ignore", "--no-index", *created], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == created


def files_the_recipes_write(path: Path) -> set[str]:
    """The files and folders a recipe of the Markdown file path makes in the project folder: what
    it says to write as a file, openssl's -keyout and -out, a redirection, mkdir -p, Dovecot's paths."""
    text = path.read_text(encoding="utf-8")
    names = set(re.findall(r"[Ww]rite (?:this|it|this one)(?: file)? as `([^`/]+)`", text))
    names |= set(re.findall(r"-(?:keyout|out) (\S+\.pem)", text))
    names |= set(re.findall(r"> ([\w.-]+\.(?:txt|eml))\b", text))
    folders = re.findall(r"mkdir -p ([\w.-]+)/new", text)
    folders += re.findall(r"(?:base_dir|state_dir) = /home/teacher/classroom/([\w.-]+)", text)
    names |= set(re.findall(r"log_path = /home/teacher/classroom/([\w.-]+)", text))
    return names | {folder + "/a-file-inside" for folder in folders}  # git tells a folder by a path inside it


@pytest.mark.parametrize(
    "path", [README, ROOT / "docs" / "clients.md", ROOT / "docs" / "classroom.md"], ids=lambda path: path.name
)
def test_what_each_recipe_writes_is_ignored_by_git(path: Path) -> None:
    """Issue 21, item 10: a recipe tried in the project folder leaves nothing for git status to show."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    written = sorted(files_the_recipes_write(path))
    assert written, f"{path.name}: no recipe found (has the wording changed?)"
    result = subprocess.run([git, "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == written


def test_clients_md_and_classroom_md_write_different_certificate_files() -> None:
    """Issue 21, item 10: trying clients.md's localhost certificate must not overwrite the class's."""
    clients = {name for name in files_the_recipes_write(ROOT / "docs" / "clients.md") if name.endswith(".pem")}
    classroom = {name for name in files_the_recipes_write(ROOT / "docs" / "classroom.md") if name.endswith(".pem")}
    assert len(clients) == len(classroom) == 2
    assert not clients & classroom


# Where a recipe of the docs names a recipient: swaks, curl, msmtp, smtplib, the menu's To:, a typed RCPT.
RECIPIENT_IN_A_RECIPE = re.compile(
    r"--to (\S+)|--mail-rcpt (\S+)|msmtprc (\S+) <|\.sendmail\([^,]+, \[\"([^\"]+)\""
    r"|To \(comma-separated\): (\S+)|RCPT TO:<([^>]+)>"
)


@pytest.mark.parametrize("name", ["clients.md", "classroom.md"])
def test_the_docs_send_to_addresses_that_arrive(name: str) -> None:
    """Issue 21, item 1: an example's mail reaches an inbox here (a bare name, localhost or vm, the docs' server).

    console.md and the README type the seed's own example, whose addresses are elsewhere on purpose.
    """
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    recipients = ["".join(match) for match in RECIPIENT_IN_A_RECIPE.findall(text)]
    assert recipients
    elsewhere = [address for address in recipients if address.partition("@")[2] not in ("", "localhost", "vm")]
    assert not elsewhere, f"{name}: mail to {elsewhere} would stay in the sender's Sent folder only"


def python_without_site_packages(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a script with the standard library only: -S leaves out site-packages (and so bcrypt)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-S", *args], cwd=cwd, capture_output=True, text=True, timeout=30, env=env, input=""
    )


def test_server_without_bcrypt_says_how_to_install_it_in_one_line(tmp_path: Path) -> None:
    result = python_without_site_packages(str(ROOT / "server.py"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"server.py needs the bcrypt package, which {sys.executable} does not have: ")
    assert "pip install -r requirements.txt" in result.stderr


def test_students_need_only_python_and_client_py(tmp_path: Path, smtp_server: RunningServer) -> None:
    """client.py alone in an empty folder, standard library only: it logs in and quits."""
    folder = tmp_path / "student"
    folder.mkdir()
    shutil.copy(ROOT / "client.py", folder / "client.py")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "client.py", "--port", str(smtp_server.port)],
        cwd=folder,
        input=f"alice\n{USERS['alice']}\n5\n",  # 5: Quit
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Logged in as alice." in result.stdout
    assert [path.name for path in folder.iterdir()] == ["client.py"]


@pytest.mark.parametrize("script", ["server.py", "client.py"])
def test_an_older_python_is_told_what_is_needed(script: str, tmp_path: Path) -> None:
    """macOS's own python3 is 3.9: the scripts say so in one line before anything newer runs."""
    older = (
        "import runpy, sys; sys.version_info = (3, 9, 6, 'final', 0); sys.version = '3.9.6 (default)'; "
        f"sys.argv = [{script!r}]; runpy.run_path({str(ROOT / script)!r}, run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", older], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == f"{script} needs Python 3.11 or newer; this is Python 3.9.6 (python.org has it)\n"
