"""Run a server script with its memory open to view: the benchmark's soak scenario starts server.py this way.

    python tests/memory_probe.py --report memory.jsonl [--tracemalloc 1] server.py --port 0 ...

On SIGUSR1 the process appends one JSON line to --report: how many sessions' threads
still run, and once none does, its RSS, what glibc's
malloc holds (in use, free but kept, the number of arenas), and with --tracemalloc
the memory Python's own allocations hold, and the source lines whose allocations
grew most since the first report. Set against each other they say where RSS growth
comes from: Python objects that live on (tracemalloc grows), or the allocator
keeping freed memory in its per-thread arenas (malloc's free part grows,
tracemalloc does not). The script runs as `__main__`, as it would on its own.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import runpy
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

MIB = 1024 * 1024
TOP_LINES = 8  # source lines reported, largest growth first


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (2.33 and later): sizes in bytes."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def malloc_figures() -> dict[str, Any]:
    """What glibc's malloc holds now: in use, free but kept, mmapped, and its arenas; {} off glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    with tempfile.NamedTemporaryFile(suffix=".xml") as xml:
        stream = libc.fopen(xml.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        arenas = len(re.findall(rb"<heap nr=", Path(xml.name).read_bytes()))
    return {
        "malloc_heap_mib": round(info.arena / MIB, 2),  # sbrk'd and arena memory (not single big mmaps)
        "malloc_in_use_mib": round(info.uordblks / MIB, 2),
        "malloc_free_kept_mib": round(info.fordblks / MIB, 2),  # freed, kept by malloc for reuse
        "malloc_mmapped_mib": round(info.hblkhd / MIB, 2),
        "malloc_arenas": arenas,
    }


def process_figures() -> dict[str, Any]:
    """RSS and its anonymous part, threads and open files, from /proc/self."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {
        "rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 2),
        "rss_anon_mib": round(int(status["RssAnon"].split()[0]) / 1024, 2),
        "threads": int(status["Threads"]),
        "open_files": len(list(Path("/proc/self/fd").iterdir())),
    }


def pymalloc_figures() -> dict[str, Any]:
    """What CPython's own small-object allocator holds (sys._debugmallocstats, which writes to fd 2)."""
    if not hasattr(sys, "_debugmallocstats"):
        return {}
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    figures = {}
    for label, key in (("arenas allocated current", "pymalloc_arenas"), ("Total", "pymalloc_total")):
        if match := re.search(rf"# {label}\s*=\s*([\d,]+)", text):
            figures[key] = int(match[1].replace(",", ""))
    if match := re.search(r"(\d+) arenas \* (\d+) bytes/arena\s*=\s*([\d,]+)", text):
        figures["pymalloc_arenas_mib"] = round(int(match[3].replace(",", "")) / MIB, 2)
    if match := re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text):
        figures["pymalloc_in_use_mib"] = round(int(match[1].replace(",", "")) / MIB, 2)
    figures.pop("pymalloc_total", None)
    return figures


ARENA_HEAP_ALIGN = 64 * MIB  # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena's heap starts at such an address


def rss_of_malloc_arenas() -> dict[str, float]:
    """RSS of malloc's arenas ([heap], and the 64 MiB-aligned heaps of the thread arenas), and of all else anonymous.

    The rest is mostly CPython's pymalloc arenas (1 MiB mmaps, merged by the kernel when
    adjacent), malloc's single big mmaps, tracemalloc's tables and the thread stacks.
    """
    arenas = anonymous = 0
    is_arena = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's first line: range, perms, ..., name
            start = int(fields[0].split("-")[0], 16)
            name = fields[5] if len(fields) > 5 else ""
            is_arena = name == "[heap]" or (not name and start % ARENA_HEAP_ALIGN == 0)
        elif fields[0] == "Anonymous:":
            anonymous += int(fields[1])
            arenas += int(fields[1]) if is_arena else 0
    other = anonymous - arenas
    return {"rss_malloc_arenas_mib": round(arenas / 1024, 2), "rss_other_anon_mib": round(other / 1024, 2)}


class Reporter:
    """The SIGUSR1 handler: one JSON line per report; the first tracemalloc snapshot is the baseline."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.baseline: tracemalloc.Snapshot | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        # socketserver names a session's thread after its target: "Thread-7 (process_request_thread)".
        sessions = sum(thread.name.endswith("(process_request_thread)") for thread in threading.enumerate())
        entry: dict[str, Any] = {"time": time.time(), "session_threads": sessions}
        if not sessions:  # idle: the figures the caller waits for (else it asks again soon)
            entry.update(**process_figures(), **malloc_figures(), **rss_of_malloc_arenas())
            entry.update(pymalloc_figures())  # none while tracemalloc runs: it hides pymalloc behind its hooks
            if tracemalloc.is_tracing():
                entry.update(self.python_figures())
        with self.path.open("a", encoding="utf-8") as report:
            report.write(json.dumps(entry) + "\n")

    def python_figures(self) -> dict[str, Any]:
        current, peak = tracemalloc.get_traced_memory()
        figures: dict[str, Any] = {
            "python_traced_mib": round(current / MIB, 2),
            "python_traced_peak_mib": round(peak / MIB, 2),
            "tracemalloc_overhead_mib": round(tracemalloc.get_tracemalloc_memory() / MIB, 2),
        }
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if self.baseline is None:
            self.baseline = snapshot
        differences = snapshot.compare_to(self.baseline, "lineno")
        growth = sorted(differences, key=lambda stat: stat.size_diff, reverse=True)[:TOP_LINES]
        figures["python_growth_since_first"] = [
            {"where": str(stat.traceback), "kib": round(stat.size_diff / 1024, 1), "count": stat.count_diff}
            for stat in growth
        ]
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True, help="the JSON lines file a SIGUSR1 appends to")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES", help="trace Python allocations")
    parser.add_argument("script", help="the server script, run as __main__")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    signal.signal(signal.SIGUSR1, Reporter(args.report))
    sys.argv = [args.script, *args.arguments]
    sys.path.insert(0, str(Path(args.script).resolve().parent))
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
