"""The test harness's one way to wait: until a condition holds, with a deadline that a busy machine cannot fool."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.waiting import WaitTimeout, eventually, wait_until, wait_until_async


def test_returns_what_the_condition_returned_as_soon_as_it_holds():
    answers = iter([None, 0, {"row": 1}])
    started = time.monotonic()
    assert wait_until(lambda: next(answers), timeout=30, interval=0.01) == {"row": 1}
    assert time.monotonic() - started < 30


def test_after_the_deadline_it_fails_saying_what_did_not_happen():
    with pytest.raises(WaitTimeout, match="gave up after 0.05s waiting until the wallet was credited: 0 of 1"):
        wait_until(lambda: False, 0.05, lambda: "the wallet was credited: 0 of 1", interval=0.01)
    assert issubclass(WaitTimeout, AssertionError)  # pytest reports it as a failed test, not an error


def test_a_look_that_started_before_the_deadline_but_ended_after_it_is_not_the_last():
    looks = []

    def descheduled_then_done() -> bool:
        looks.append(time.monotonic())
        if len(looks) == 1:
            time.sleep(0.2)  # this process stalls past the deadline while the other side finishes its work
            return False
        return True

    assert wait_until(descheduled_then_done, timeout=0.05, interval=0.01) is True
    assert len(looks) == 2


def test_ignored_errors_mean_not_yet_and_the_last_one_is_kept_as_the_cause():
    attempts = []

    def refused():
        attempts.append(1)
        raise ConnectionRefusedError("nothing listens yet")

    with pytest.raises(WaitTimeout) as failure:
        wait_until(refused, 0.05, "the server answered", interval=0.01, ignoring=(ConnectionRefusedError,))
    assert len(attempts) > 1 and isinstance(failure.value.__cause__, ConnectionRefusedError)
    # Errors not named are failures at once, not something to wait out.
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 30, ignoring=(ConnectionRefusedError,))


def test_eventually_retries_an_assertion_and_then_lets_its_last_failure_stand():
    values = iter([1, 2, 3])
    assert eventually(lambda: _at_least(next(values), 3), timeout=30, interval=0.01) == 3
    with pytest.raises(AssertionError, match="2 < 3"):
        eventually(lambda: _at_least(2, 3), timeout=0.05, interval=0.01)


def _at_least(value: int, minimum: int) -> int:
    assert value >= minimum, f"{value} < {minimum}"
    return value


def test_the_async_wait_lets_the_work_it_waits_for_run_on_the_same_loop():
    async def scenario():
        done = asyncio.Event()

        async def work():
            await asyncio.sleep(0.01)
            done.set()

        task = asyncio.create_task(work())

        async def finished() -> bool:
            return done.is_set()

        assert await wait_until_async(finished, 30, "the work finished", interval=0.001) is True
        await task
        with pytest.raises(WaitTimeout, match="never"):
            await wait_until_async(lambda: False, 0.05, "never", interval=0.01)

    asyncio.run(scenario())
