"""Awaiting and killing asyncio tasks in a test with a deadline that fails loudly, naming every task's stack.

A test that awaits a task (or cancels it and awaits the cancel) with no deadline hangs for as long as the task does
not end, and says nothing about why; pytest's own timeout, much later, shows only the event loop's select. These
helpers give up after a deadline (tests/support/waiting.py's, by default) with a WaitTimeout that names what did
not happen, followed by the stacks of all the loop's tasks: where each one was, which says who was waiting on whom.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable
from typing import Any, TypeVar

import psycopg
from sqlalchemy.exc import OperationalError

from ogp.worker import Worker
from tests.support.waiting import DEFAULT_TIMEOUT, WaitTimeout

T = TypeVar("T")

RESEND_INTERVAL = 5.0
"""Seconds between two cancels of a task being killed: long enough for a close in a finally block to finish on
a busy machine, so a kill that works at the first cancel is never cut short by a second."""


def _awaiting(task: asyncio.Task) -> list[str]:
    """Where a suspended task is: its coroutine and each one it awaits, down to the innermost (Task.get_stack
    stops at the outermost frame of a suspended coroutine, which says little)."""
    lines = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return lines


def task_stacks() -> str:
    """Every task of the running loop, each with where it waits (outermost call first), for a failure message."""
    return "".join(
        f"\n{task!r}\n" + "\n".join(_awaiting(task)) + "\n"
        for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    )


def _gave_up(timeout: float, what: str) -> WaitTimeout:
    return WaitTimeout(f"gave up after {timeout:g}s waiting until {what}; the tasks:{task_stacks()}")


async def within(awaitable: Awaitable[T], what: str, timeout: float = DEFAULT_TIMEOUT) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds and return its result; past the deadline raise
    WaitTimeout naming ``what`` (what its end means: "the producer published everything") with the stacks,
    and cancel it. A cancel sent to the caller meanwhile reaches the caller (asyncio.wait eats none)."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        error = _gave_up(timeout, what)
        task.cancel()
        raise error
    return task.result()


async def kill(task: asyncio.Task, what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """End ``task`` without warning, as a killed process ends: cancel it, and cancel it again every
    RESEND_INTERVAL seconds until it has ended (some library may eat one cancel; a kill is not to be refused).
    Raises WaitTimeout (with the stacks) if it still runs after ``timeout``, and AssertionError if it ended
    otherwise than cancelled (it returned, or failed: then its error is the cause). Warns when one cancel was
    not enough, so that an eaten cancel shows in the test report instead of passing unseen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sent = 0
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            raise _gave_up(timeout, f"{what} ended (cancelled {sent} times)")
        task.cancel()
        sent += 1
        await asyncio.wait({task}, timeout=min(RESEND_INTERVAL, left))
    if not task.cancelled():
        raise AssertionError(f"{what} was to be killed, and ended otherwise") from task.exception()
    if sent > 1:
        warnings.warn(f"{what} ended only after {sent} cancels: something ate a cancel", stacklevel=2)


async def stop(worker: Worker, task: asyncio.Task, what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Ask ``worker`` to stop (``request_stop()``, ogp/worker.py's protocol) and await ``task`` (its ``run()``)
    within ``timeout``; WaitTimeout with the stacks if it does not return."""
    worker.request_stop()
    await within(task, f"{what} stopped", timeout)


# -- a cancel that clean-up turns into an error (the retrying loops must still end) ---------------------------


async def cancel_turned_into_an_error(entered: asyncio.Event) -> None:
    """Waits for ever; cancelled, fails as SQLAlchemy does when it rolls back a psycopg connection whose COPY the
    cancel cut short (seen in the history projector's kill test): an error in place of the CancelledError. Only
    the first time: a retry's cancel ends the retry, so that a test that failed still ends."""
    first = not entered.is_set()
    entered.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if not first:
            raise
        busy = psycopg.OperationalError("sending query failed: another command is already in progress")
        raise OperationalError("ROLLBACK", {}, busy) from None


async def ends_cancelled(task: asyncio.Task, entered: asyncio.Event) -> None:
    """Cancel ``task`` once it is inside the stand-in; it must end cancelled."""
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    try:
        assert task.cancelled(), "the cancel was taken for a failure and retried: the loop did not end"
    finally:
        task.cancel()  # a task that survived (the test has failed by then) is not left to asyncio.run
        await asyncio.wait({task}, timeout=5)
