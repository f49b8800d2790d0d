"""ogp.worker.StallWatch: only held partitions behind, continuously, with no records fetched for the bound and no
batch in hand, make a stall. The clock is a stand-in."""

from __future__ import annotations

import pytest

from ogp.worker import ConsumerStalled, StallWatch


def test_a_stall_is_behind_and_quiet_for_the_bound_not_busy_nor_caught_up():
    now = [100.0]
    watch = StallWatch(30, clock=lambda: now[0])

    def observe(lags: dict[int, int], at: float) -> str | None:
        now[0] = at
        watch.observe(lags)
        return watch.stalled

    assert observe({0: 0, 1: 0}, 140) is None, "caught up is never a stall"
    assert observe({0: 5}, 141) is None, "behind from now on"
    assert observe({0: 5}, 170) is None, "behind for 29 s"
    with watch.busy():
        assert observe({0: 5}, 200) is None, "a batch in hand is not a stall, however long it takes"
    assert observe({0: 5}, 201) is None, "quiet again only from the batch's end"
    now[0] = 220
    watch.fetched()
    assert observe({0: 5}, 240) is None, "20 s since the last records"
    watch.check()  # nothing found: nothing raised
    stalled = observe({0: 5, 1: 0}, 250)
    assert stalled is not None and "{0: 5}" in stalled, "behind and quiet for 30 s"
    with pytest.raises(ConsumerStalled, match="no records fetched for 30s"):
        watch.check()
    watch.fetched()
    assert watch.stalled is None, "records came after all: no longer stalled"
