"""The benchmark (tests/benchmark.py) still runs: every scenario with tiny numbers, no timing asserted.

The figures themselves live in notes/performance.md; these tests only make sure the
command printed there keeps working and prints well-formed figures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARK = Path(__file__).resolve().with_name("benchmark.py")
TINY = ["--connections", "3", "--messages", "2", "--size", "700", "--rounds", "4", "--hold", "0.1", "--processes", "2"]
SCENARIOS = ["small", "large", "login", "burst", "huge", "retr", "pop3"]


def run_benchmark(*args: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), *TINY, "--workdir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def assert_well_formed(result: dict[str, Any]) -> None:
    """Figures are numbers where they apply, percentiles ordered, server usage read from /proc."""
    assert result["errors"] == 0, result["error_samples"]
    assert result["seconds"] > 0
    for figure in ("messages_per_second", "mib_per_second", "cpu_seconds_per_1000"):
        value = result[figure]
        assert value is None or (math.isfinite(value) and value >= 0), (figure, value)
    latency = result["latency_ms"]
    assert latency["p50"] <= latency["p90"] <= latency["p99"]
    assert result["server_cpu_seconds"] >= 0
    assert result["peak_rss_mib"] > 1


def test_every_scenario_runs_and_reports_json(tmp_path: Path) -> None:
    finished = run_benchmark("--json", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    results = {result["scenario"]: result for result in report["results"]}
    assert sorted(results) == sorted(SCENARIOS)
    for result in results.values():
        assert_well_formed(result)
    assert results["small"]["messages"] == 3 * 2
    assert results["small"]["login_ms"]["p50"] <= results["small"]["login_ms"]["p99"]
    assert results["burst"]["notes"]["greeted"] == 3
    assert results["burst"]["notes"]["noop_ok"] == 3
    assert results["huge"]["messages"] == 1
    assert results["retr"]["notes"]["retrieved"] == 2
    assert results["pop3"]["notes"]["retrieved"] == results["pop3"]["messages"] == 2
    assert report["failures"] == []
    assert not list(tmp_path.iterdir()), "temporary mailboxes left behind"


def test_table_has_a_row_of_figures(tmp_path: Path) -> None:
    finished = run_benchmark("--scenario", "small", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    header, rule, row = finished.stdout.splitlines()[:3]
    assert header.split()[:3] == ["scenario", "server", "cost"]
    assert set(rule) <= {"-", " "}
    cells = row.split()
    assert cells[:2] == ["small", "server.py"]
    assert float(cells[7]) > 0  # messages/s


def test_compare_without_aiosmtpd_says_so_and_exits_3(tmp_path: Path) -> None:
    # A package named aiosmtpd that fails to import stands in for a machine without it.
    fake = tmp_path / "fake" / "aiosmtpd"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    work = tmp_path / "work"
    work.mkdir()
    finished = run_benchmark("--scenario", "small", "--compare", "aiosmtpd", "--json", tmp_path=work, env=env)
    assert finished.returncode == 3
    assert "aiosmtpd is not installed" in finished.stderr
    report = json.loads(finished.stdout)
    assert [result["server"] for result in report["results"]] == ["server.py"]  # measured all the same


def test_compare_with_aiosmtpd_prints_a_ratio(tmp_path: Path) -> None:
    pytest.importorskip("aiosmtpd", reason="aiosmtpd is only installed for benchmark runs")
    finished = run_benchmark("--scenario", "small", "--compare", "aiosmtpd", "--json", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert [result["server"].split()[0] for result in report["results"]] == ["server.py", "aiosmtpd"]
    for result in report["results"]:
        assert_well_formed(result)
    (comparison,) = report["comparisons"]
    assert comparison["scenario"] == "small"
    assert comparison["median_ratio"] > 0
