"""Issue 13's figures P1–P7 in one table: what the benches last measured, beside each target.

Usage: .venv/bin/python bench/report.py [--dir .ogp/bench]

Each bench ends by writing its figures with :func:`save` to ``.ogp/bench/<bench>.json`` (git-ignored): when it
ran, the machine's load average and cores, its command line, and its measurements (:class:`Measurement`: the
figure, what was measured, the value, the target as an operator and a bound, and the baseline or limit the bench
measured in the same run). A run of part of a bench (``http_load.py --only open``) keeps the figures of an
earlier run it did not measure again, each with its own time and load. This script reads them all and prints
one row per measurement, grouped by figure, with "met" or "NOT met"; a figure no bench has measured says so with
the command that measures it. It measures nothing itself: a figure is as old as the run that measured it (the
"when" column).
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ogp.settings import get_settings

# The figures of issue 13, their targets as the issue states them, and the command that measures each.
FIGURES: dict[str, tuple[str, str, str]] = {
    "P1": (
        "commands applied/s, spread over 10,000 accounts",
        ">= 20,000/s; share of the binding limit",
        "bench/ledger_throughput.py --mixes spread",
    ),
    "P2": (
        "applied/s, half the commands on one hot account",
        ">= 10,000/s and >= 10x the row-lock baseline",
        "bench/ledger_throughput.py --mixes hot",
    ),
    "P3": (
        "command API: accepted/s; latency at 1,000 requests/s (open loop)",
        ">= 2,000/s accepted; p99 < 20 ms at 1,000/s, no errors",
        "bench/http_load.py --only health,pay,open",
    ),
    "P4": (
        "accepted -> posted (visible on the status resource) at 1,000 requests/s",
        "p99 < 100 ms",
        "bench/http_load.py --only open --low-rate 30",
    ),
    "P5": (
        "rebuild of historical_transactions from the ledger events",
        ">= 50,000 events/s and >= 50% of the raw consume rate",
        "bench/rebuild_rate.py",
    ),
    "P6": (
        "balance reads/s; partner history page (100 rows, filters) at 1,000,000 rows",
        ">= 3,000 balance reads/s; partner page p99 < 30 ms",
        "bench/http_load.py --only balance  and  bench/partner_page.py",
    ),
    "P7": ("webhook at concurrency 8", "p99 < 50 ms", "bench/http_load.py --only webhook"),
}

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Measurement:
    """One measured value of a figure, with its target (``op`` and ``bound``; none for a figure shown for
    context) and the baseline or limit measured in the same run, as text."""

    figure: str  # "P1" ... "P7"
    what: str
    value: float | None  # None: the run produced no value (e.g. nothing was accepted)
    unit: str = ""  # "/s", "ms", "%", "x"
    op: str | None = None  # a key of OPERATORS
    bound: float | None = None
    limit: str = ""  # the same run's baseline or limit, and the value's share of it
    load: str = ""  # the load average while this value was measured, when the bench read it per figure
    # Names what a later run that measures only part of a bench's figures replaces: a kept measurement of an
    # earlier run has a key the later one does not measure again; one without a key is always replaced.
    key: str = ""


@dataclass
class Run:
    """What one bench's file holds."""

    bench: str
    measured_at: str  # ISO 8601, UTC
    load: str  # 1, 5 and 15 min load average when the bench finished
    cores: int
    command: str
    measurements: list[Measurement] = field(default_factory=list)


def bench_dir() -> Path:
    """``.ogp/bench`` under the settings' state folder (git-ignored)."""
    return get_settings().state_dir / "bench"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def merged(new: Run, earlier: Iterable[Run]) -> list[Run]:
    """``new``, then the measurements of ``earlier`` runs it does not measure again (by key), each run with its
    own time, load and command."""
    fresh = {m.key for m in new.measurements}
    out = [new]
    for run in earlier:
        kept = [m for m in run.measurements if m.key and m.key not in fresh]
        if kept:
            out.append(replace(run, measurements=kept))
    return out


def save(bench: str, measurements: Iterable[Measurement], directory: Path | None = None) -> Path:
    """Write a bench's measurements to ``<directory>/<bench>.json`` with when, the load and the command line,
    keeping what an earlier run measured and this one did not (:func:`merged`)."""
    run = Run(
        bench=bench,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        load=load_average(),
        cores=os.cpu_count() or 1,
        command=" ".join(["bench/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        measurements=list(measurements),
    )
    directory = directory or bench_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bench}.json"
    earlier = read_file(path) if path.exists() else []
    path.write_text(json.dumps({"runs": [asdict(r) for r in merged(run, earlier)]}, indent=1) + "\n")
    print(f"figures written to {path} (bench/report.py prints them all)")
    return path


def read_run(data: dict[str, Any]) -> Run:
    measurements = [Measurement(**m) for m in data.get("measurements", [])]
    return Run(**{**data, "measurements": measurements})


def read_file(path: Path) -> list[Run]:
    return [read_run(r) for r in json.loads(path.read_text())["runs"]]


def read_runs(directory: Path) -> list[Run]:
    return [run for path in sorted(directory.glob("*.json")) for run in read_file(path)]


def verdict(m: Measurement) -> str:
    """ "met", "NOT met", or "" when the measurement has no target (or no value)."""
    if m.op is None or m.bound is None:
        return ""
    if m.value is None:
        return "NOT met"
    return "met" if OPERATORS[m.op](m.value, m.bound) else "NOT met"


def number(value: float | None, unit: str = "") -> str:
    """``value`` as the table shows it: thousands separated, decimals only where they carry information."""
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.0f}x" if value == int(value) else f"{value:.1f}x"
    if unit == "/s" or (value == int(value) and abs(value) < 100):  # a rate, a count or a round bound
        return f"{value:,.0f}{' ms' if unit == 'ms' else unit}"
    if unit == "%":
        return f"{value:.0f}%"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    return f"{text} ms" if unit == "ms" else f"{text}{unit}"


def target(m: Measurement) -> str:
    return "" if m.op is None or m.bound is None else f"{m.op} {number(m.bound, m.unit)}"


def rows(runs: Iterable[Run]) -> list[list[str]]:
    """The table's rows: each figure's measurements (newest run first), or one "not measured" row."""
    by_figure: dict[str, list[tuple[Run, Measurement]]] = {f: [] for f in FIGURES}
    for run in sorted(runs, key=lambda r: r.measured_at, reverse=True):
        for m in run.measurements:
            by_figure.setdefault(m.figure, []).append((run, m))
    out = []
    for figure, found in by_figure.items():
        if not found:
            out.append([figure, "not measured", "", "", "", f"run {FIGURES[figure][2]}", "", ""])
        for run, m in found:
            when = run.measured_at.replace("T", " ").removesuffix("+00:00")
            out.append(
                [
                    figure,
                    m.what,
                    number(m.value, m.unit),
                    target(m),
                    verdict(m),
                    m.limit,
                    f"{when} ({run.bench})",
                    m.load or run.load.split()[0],
                ]
            )
    return out


HEADER = ["fig", "measured", "value", "target", "", "baseline / limit (same run)", "when (UTC, bench)", "load 1m"]


def table(body: list[list[str]]) -> str:
    """Columns padded to their widest cell."""
    all_rows = [HEADER, *body]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(HEADER))]
    right = {2}  # the values
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in all_rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the benches wrote (default .ogp/bench)")
    args = parser.parse_args()
    directory = args.dir or bench_dir()
    runs = read_runs(directory) if directory.is_dir() else []
    print(f"issue 13 figures from {directory} ({len(runs)} bench run(s)); {os.cpu_count()} cores here\n")
    for figure, (what, goal, _) in FIGURES.items():
        print(f"  {figure}  {what}: {goal}")
    print()
    print(table(rows(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
