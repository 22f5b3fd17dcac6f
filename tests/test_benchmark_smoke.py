"""The benchmark (tests/benchmark.py) still runs: every scenario with tiny numbers, no timing asserted.

The figures themselves live in docs/performance.md; these tests only make sure the
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
TINY += ["--min-seconds", "0"]  # the real runs last 5 s at least; these only check that it works
SCENARIOS = ["small", "large", "login", "burst", "huge", "retr", "pop3", "oneshot"]


def run_benchmark(
    *args: str, tmp_path: Path, env: dict[str, str] | None = None, repeat: str | None = "1"
) -> subprocess.CompletedProcess[str]:
    """The benchmark with TINY numbers; repeat=None leaves --repeat to its default."""
    tiny = [*TINY, "--repeat", repeat] if repeat else TINY
    return subprocess.run(
        [sys.executable, str(BENCHMARK), *tiny, "--workdir", str(tmp_path), *args],
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
    for figure in ("messages_per_second", "mib_per_second", "cpu_ms_per_message"):
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
    assert results["oneshot"]["messages"] == 3 * 2
    for name in ("small", "login", "oneshot"):  # the logins against bcrypt's floor
        notes = results[name]["notes"]
        assert notes["bcrypt_floor_s"] > 0
        assert notes["accounts_logged_in_vs_floor"] > 0
        assert notes["accounts_logged_in_s"] <= notes["all_logged_in_s"]
    assert report["environment"]["server_python"] == report["environment"]["python"]
    assert report["failures"] == []
    assert not list(tmp_path.iterdir()), "temporary mailboxes left behind"


def test_oneshot_reports_the_connections_after_every_account_logged_in(tmp_path: Path) -> None:
    """Two accounts, three connections each, one after another: the later ones find the cache warm."""
    args = ["--scenario", "oneshot", "--connections", "6", "--accounts", "2", "--messages", "1", "--json"]
    finished = run_benchmark(*args, tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    (result,) = json.loads(finished.stdout)["results"]
    assert_well_formed(result)
    assert result["messages"] == 6
    notes = result["notes"]
    assert 1 <= notes["warm_connections"] <= 4  # each account's first connection is never among them
    assert notes["warm_session_ms"]["p50"] <= notes["warm_session_ms"]["p99"]
    assert notes["warm_message_ms"]["p50"] <= notes["warm_message_ms"]["p99"]


@pytest.mark.parametrize("copy", [BENCHMARK.parent.parent / "server.py", BENCHMARK.with_name("floor_baseline.py")])
def test_compare_with_another_server_script(tmp_path: Path, copy: Path) -> None:
    """--compare SERVER.py: today's code against a change (or against the floor), alternating run by run."""
    finished = run_benchmark("--scenario", "small", "--compare", str(copy), "--json", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    ours, theirs = report["results"]
    assert (ours["server"], theirs["server"]) == ("server.py", f"{copy.parent.name}/{copy.name}")
    (comparison,) = report["comparisons"]
    assert comparison["ratio"]["median"] > 0
    # Reported for both (a tiny run may round to 0: /proc counts CPU in 10 ms ticks).
    assert all(cpu is not None and cpu["median"] >= 0 for cpu in comparison["cpu_ms_per_message"])


def test_table_has_a_row_of_figures(tmp_path: Path) -> None:
    finished = run_benchmark("--scenario", "small", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    header, rule, row = finished.stdout.splitlines()[:3]
    assert header.split()[:3] == ["scenario", "server", "cost"]
    assert set(rule) <= {"-", " "}
    cells = row.split()
    assert cells[:2] == ["small", "server.py"]
    assert header.split()[7:10] == ["msgs/s", "CPU", "ms/msg"]  # CPU per message beside the rate
    assert float(cells[7]) > 0  # messages/s
    assert float(cells[8]) >= 0  # CPU ms per message (a number: a tiny run may round to 0)


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
    """aiosmtpd is pinned in requirements-dev.txt: the comparison runs in CI (its figures are not asserted)."""
    finished = run_benchmark("--scenario", "small", "--compare", "aiosmtpd", "--json", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert [result["server"].split()[0] for result in report["results"]] == ["server.py", "aiosmtpd"]
    for result in report["results"]:
        assert_well_formed(result)
    (comparison,) = report["comparisons"]
    assert comparison["scenario"] == "small"
    assert comparison["ratio"]["median"] > 0
    ours, theirs = comparison["cpu_ms_per_message"]
    assert ours is not None and theirs is not None and min(ours["median"], theirs["median"]) >= 0


@pytest.mark.parametrize("scenario", ["small", "oneshot"])
def test_a_run_lasts_min_seconds_whatever_its_message_count(tmp_path: Path, scenario: str) -> None:
    """small sends on over its open connections, oneshot connects again: both past their count, for the time."""
    args = ["--scenario", scenario, "--connections", "2", "--accounts", "2", "--messages", "1", "--min-seconds", "1.5"]
    finished = run_benchmark(*args, "--json", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    (result,) = json.loads(finished.stdout)["results"]
    assert_well_formed(result)
    assert result["seconds"] >= 1.5
    assert result["messages"] > 2


def test_compare_alternates_three_pairs_and_gives_each_figure_its_spread(tmp_path: Path) -> None:
    """Without --repeat, --compare measures server.py, the peer, server.py, ... three times each."""
    server = BENCHMARK.parent.parent / "server.py"
    finished = run_benchmark("--scenario", "small", "--compare", str(server), "--json", tmp_path=tmp_path, repeat=None)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    peer = f"{server.parent.name}/server.py"
    assert [result["server"] for result in report["results"]] == ["server.py", peer] * 3
    (comparison,) = report["comparisons"]
    assert comparison["pairs"] == 3
    for figure in (comparison["ratio"], comparison["cpu_ratio"], *comparison["cpu_ms_per_message"]):
        assert figure["min"] <= figure["median"] <= figure["max"]
    assert comparison["noisy"] == any(result["noisy"] for result in report["results"])


def test_each_run_records_the_machine_load_and_is_marked_noisy_or_quiet(tmp_path: Path) -> None:
    finished = run_benchmark("--scenario", "small", "--json", tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    (result,) = report["results"]
    assert result["load_before"] >= 0 and result["load_after"] >= 0
    assert result["other_cores"] is not None and result["other_cores"] >= 0
    started = report["environment"]["load_average_before"][0]
    assert result["noisy"] == (result["other_cores"] > 0.5 or started > 0.5)
    assert len(report["environment"]["load_average_after"]) == 3
    assert report["environment"]["command"].startswith("tests/benchmark.py ")


def test_the_soak_reports_idle_memory_and_caps_the_arenas_when_asked(tmp_path: Path) -> None:
    """One cycle of the long day: sent, retrieved and deleted over POP3, then the idle figures from inside."""
    args = ["--scenario", "soak", "--minutes", "0", "--interval", "0", "--malloc-arena-max", "1", "--json"]
    finished = run_benchmark(*args, tmp_path=tmp_path)
    assert finished.returncode == 0, finished.stderr
    (result,) = json.loads(finished.stdout)["results"]
    assert result["messages"] == result["notes"]["retrieved"] == 3 * 2
    (report,) = result["notes"]["reports"]
    assert report["malloc_arenas"] == 1  # MALLOC_ARENA_MAX reached the server
    assert report["session_threads"] == 0  # idle: every session's thread is gone
    assert 0 < report["python_traced_mib"] < report["rss_mib"]
    assert report["malloc_in_use_mib"] > 0
    assert report["rss_malloc_arenas_mib"] + report["rss_other_anon_mib"] <= report["rss_anon_mib"] + 0.1
    assert "python_growth_since_first" in report
