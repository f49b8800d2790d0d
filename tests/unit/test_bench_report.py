"""bench/report.py: the benches' figures read back and judged against issue 13's targets."""

from __future__ import annotations

from pathlib import Path

from bench.report import FIGURES, Measurement, Run, merged, number, read_runs, rows, save, verdict


def test_a_value_on_the_right_side_of_its_bound_meets_the_target() -> None:
    assert verdict(Measurement("P4", "p99", 99.0, "ms", "<", 100)) == "met"
    assert verdict(Measurement("P4", "p99", 100.0, "ms", "<", 100)) == "NOT met"
    assert verdict(Measurement("P1", "rate", 20_000.0, "/s", ">=", 20_000)) == "met"
    assert verdict(Measurement("P3", "errors", 1, "", "==", 0)) == "NOT met"


def test_a_missing_value_misses_its_target_and_a_context_row_has_no_verdict() -> None:
    assert verdict(Measurement("P4", "p99", None, "ms", "<", 100)) == "NOT met"
    assert verdict(Measurement("P3", "transfer rate", 40.0, "/s")) == ""


def test_numbers_are_shown_with_their_unit_and_only_useful_decimals() -> None:
    assert number(21_345.6, "/s") == "21,346/s"
    assert number(58.8, "/s") == "59/s"
    assert number(12.34, "ms") == "12.3 ms"
    assert number(0, "") == "0"
    assert number(3.25, "x") == "3.2x"
    assert number(10, "x") == "10x"
    assert number(61.4, "%") == "61%"
    assert number(None) == "-"


def test_saved_figures_read_back_and_every_unmeasured_figure_names_its_command(tmp_path: Path) -> None:
    p4 = Measurement("P4", "accepted -> visible p99 at 30/s", 42.0, "ms", "<", 100, "ledger p99 20 ms", "1.0")
    save("http_load", [p4], tmp_path)

    runs = read_runs(tmp_path)

    assert [r.measurements for r in runs] == [[p4]]
    table = {row[0]: row for row in rows(runs)}
    assert table["P4"][1:5] == ["accepted -> visible p99 at 30/s", "42 ms", "< 100 ms", "met"]
    for figure in set(FIGURES) - {"P4"}:
        assert table[figure][1] == "not measured"
        assert table[figure][5] == f"run {FIGURES[figure][2]}"


def test_a_partial_run_keeps_what_an_earlier_run_measured_and_it_did_not() -> None:
    pay = Measurement("P3", "accepted/s", 40.0, "/s", ">=", 2000, key="pay")
    old_p4 = Measurement("P4", "p99 at 30/s", 300.0, "ms", "<", 100, key="posted@30")
    unkeyed = Measurement("P7", "webhook p99", 60.0, "ms", "<", 50)
    earlier = Run(
        "http_load", "2026-11-30T08:00:00+00:00", "9.0 8.0 7.0", 2, "bench/http_load.py", [pay, old_p4, unkeyed]
    )
    new_p4 = Measurement("P4", "p99 at 30/s", 80.0, "ms", "<", 100, key="posted@30")
    later = Run("http_load", "2026-11-30T09:00:00+00:00", "2.0 2.0 2.0", 2, "bench/http_load.py --only open", [new_p4])

    runs = merged(later, [earlier])

    assert [r.measurements for r in runs] == [[new_p4], [pay]]
    assert runs[1].measured_at == earlier.measured_at  # the kept figure keeps its own time and load
