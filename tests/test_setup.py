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
    created = [".venv/bin/python", "cert.pem", "key.pem", "msmtprc", "message.txt", "unsent-1.eml", "class.txt"]
    result = subprocess.run([git, "check-ignore", "--no-index", *created], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == created


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
