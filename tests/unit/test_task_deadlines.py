"""The test harness's way to await and kill asyncio tasks: a deadline that fails with every task's await chain, and a
kill that a task eating one cancel cannot refuse (tests/support/tasks.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import tasks
from tests.support.tasks import kill, within
from tests.support.waiting import WaitTimeout


async def _parked(event: asyncio.Event) -> None:
    await event.wait()


async def _returns(value: str) -> str:
    return value


def test_a_wait_past_its_deadline_names_what_did_not_happen_and_where_each_task_waits():
    async def scenario():
        never = asyncio.Event()
        with pytest.raises(WaitTimeout, match="the parked task returned") as failure:
            await within(_parked(never), "the parked task returned", 0.05)
        assert "in _parked" in str(failure.value) and "locks.py" in str(failure.value)  # down to Event.wait
        assert await within(_returns("done"), "a value", 5) == "done"  # what ends in time is passed back

    asyncio.run(scenario())


def test_a_kill_cancels_again_a_task_that_ate_one_cancel_and_says_so(monkeypatch):
    monkeypatch.setattr(tasks, "RESEND_INTERVAL", 0.05)

    async def eats_one_cancel(started: asyncio.Event) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # as a clean-up that turns the cancel into something else would
        await asyncio.Event().wait()

    async def scenario():
        started = asyncio.Event()
        task = asyncio.create_task(eats_one_cancel(started))
        await within(started.wait(), "the task is inside its try", 5)
        with pytest.warns(UserWarning, match="after 2 cancels"):
            await kill(task, "the task", 5)
        assert task.cancelled()

    asyncio.run(scenario())


def test_a_kill_fails_for_a_task_that_will_not_die_and_for_one_that_returns(monkeypatch):
    monkeypatch.setattr(tasks, "RESEND_INTERVAL", 0.05)

    async def immortal(started: asyncio.Event) -> None:
        while True:
            try:
                started.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if stop.is_set():
                    raise

    async def returns_when_cancelled(started: asyncio.Event) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return

    stop = asyncio.Event()

    async def scenario():
        started = asyncio.Event()
        task = asyncio.create_task(immortal(started))
        await within(started.wait(), "the task is inside its try", 5)
        with pytest.raises(WaitTimeout, match=r"the task ended \(cancelled \d+ times\)"):
            await kill(task, "the task", 0.2)
        stop.set()
        task.cancel()
        await asyncio.wait({task})
        started = asyncio.Event()
        task = asyncio.create_task(returns_when_cancelled(started))
        await within(started.wait(), "the task is inside its try", 5)
        with pytest.raises(AssertionError, match="ended otherwise"):
            await kill(task, "the task", 5)

    asyncio.run(scenario())
