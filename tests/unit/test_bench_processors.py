"""bench/ledger_throughput.py: how many ledger processors P1 and P2 run when not told."""

from __future__ import annotations

import pytest

from bench import ledger_throughput
from bench.ledger_throughput import default_processors


@pytest.mark.parametrize(("cores", "partitions", "expected"), [(2, 12, 2), (1, 12, 1), (32, 12, 12), (None, 12, 1)])
def test_the_benchmark_runs_one_processor_a_core_and_no_more_than_the_partitions(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, partitions: int, expected: int
) -> None:
    monkeypatch.setattr(ledger_throughput.os, "cpu_count", lambda: cores)

    assert default_processors(partitions) == expected


def test_the_figures_say_how_many_processors_ran() -> None:
    [rate] = ledger_throughput.measurements(
        [("spread over accounts", 3_000.0, 1_000.0)], {}, 40_000, 10_000, processors=2
    )

    assert "2 processor(s)" in rate.what
