"""Waiting for a condition with a deadline: the one way tests synchronise with work that happens elsewhere.

A fixed sleep guesses how fast the machine is; on a busy one the guess is wrong and the test fails although
the code is right. A wait names what it waits for, returns as soon as it holds, and fails saying what did
not happen once the deadline has passed. The condition is always tried once more after the deadline, so a
wait never fails merely because this process was descheduled while the other side did its work.

The poll interval is only how often we look, never a guess about the other side's speed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
"""Generous on purpose: a deadline only bounds how long a broken test hangs, it is never a performance claim."""

LATENCY_MARGIN = 5.0
"""Seconds a latency assertion allows for a busy machine (two cores, other suites beside it). Such an assertion
may claim "answers at its own timeout, not after the slow dependency", never "answers within N ms"."""


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline (an AssertionError: pytest reports it as a failure)."""


def _gave_up(timeout: float, what: str | Callable[[], str], predicate: Callable) -> WaitTimeout:
    described = what() if callable(what) else what
    return WaitTimeout(f"gave up after {timeout:g}s waiting until {described or repr(predicate)}")


def eventually(assertion: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.2) -> T:
    """Retry ``assertion`` (a callable that asserts) until it passes; after the deadline its error stands."""
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        try:
            return assertion()
        except AssertionError:
            if last_try:
                raise
        time.sleep(interval)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    what: str | Callable[[], str] = "",
    interval: float = 0.1,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); exceptions in ``ignoring`` mean "not
    yet". Raises WaitTimeout naming ``what`` (a text, or a callable giving one, e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        error = None
        try:
            value = predicate()
        except ignoring as exc:
            value, error = None, exc
        if value:
            return value
        if last_try:
            raise _gave_up(timeout, what, predicate) from error
        time.sleep(interval)


# Overloads say which T a coroutine function's result is (a bare ``T | Awaitable[T]`` leaves mypy unable to tell).
@overload
async def wait_until_async(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = ...,
    what: str | Callable[[], str] = ...,
    interval: float = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
) -> T: ...
@overload
async def wait_until_async(
    predicate: Callable[[], T],
    timeout: float = ...,
    what: str | Callable[[], str] = ...,
    interval: float = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
) -> T: ...
async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT,
    what: str | Callable[[], str] = "",
    interval: float = 0.1,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``wait_until`` for a running event loop: the predicate may be a coroutine function; polls without
    blocking the loop (other tasks, e.g. a projector under test, keep running)."""
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        error = None
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            value, error = None, exc
        if value:
            return value
        if last_try:
            raise _gave_up(timeout, what, predicate) from error
        await asyncio.sleep(interval)
