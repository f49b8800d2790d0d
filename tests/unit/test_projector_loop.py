"""The consumer loop every projector runs (projections/loop.py, projections/positions.py): a cancel ends it, wherever
it lands, without a broker or a database (the consumer, the positions and the batches are stand-ins)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import ConsumerRecord, TopicPartition

import projections.facts
import projections.positions
from ogp.clients import async_engine
from ogp.settings import Settings
from projections.access_logs.projector import AccessLogProjector
from projections.loop import ProjectorLoop
from projections.positions import PositionedProjector
from projections.velocity.monitor import VelocityMonitor
from tests.support.tasks import cancel_turned_into_an_error, ends_cancelled

TP = TopicPartition("t", 0)


class _Consumer:
    """What the lag watcher asks of a consumer: the partitions it holds and their end offsets."""

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def end_offsets(self, held: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(held, 10)


class _CancelledAsPositionsArrive(ProjectorLoop):
    """Whoever holds the watcher cancels it in the very turn of the loop its positions come back in: the moment
    a projector killed mid-stream (or a consumer that failed) may cancel it, once in a while."""

    lag_interval_seconds = 0.001
    watcher: asyncio.Task | None = None

    async def _positions(self, held: list[TopicPartition]) -> dict[int, int]:
        if self.watcher is not None:
            asyncio.get_running_loop().call_soon(self.watcher.cancel)
            self.watcher = None  # once
        return {0: 4}


def test_the_lag_watcher_ends_when_cancelled_even_as_its_positions_arrive():
    """Python 3.11's asyncio.wait_for returns the inner result when the cancel and that result meet in one turn
    of the loop, eating the cancel: a watcher refreshing the lag through it kept running, and _consume() waited
    for it forever (a history projector killed mid-stream hung its test)."""

    async def scenario() -> None:
        loop = _CancelledAsPositionsArrive(Settings(environment="test"), group_id="g", topic="t")
        loop._consumer = _Consumer()  # type: ignore[assignment]  # a stand-in: the two calls the watcher makes
        watcher = asyncio.create_task(loop._watch_lag())
        loop.watcher = watcher
        try:
            await asyncio.wait({watcher}, timeout=5)
            assert watcher.cancelled(), "the lag watcher ate its cancel and kept refreshing the lag"
        finally:
            loop.stop()  # ends a watcher that survived (the test has failed by then)
            await asyncio.wait({watcher}, timeout=5)

    asyncio.run(scenario())


class _Projector(PositionedProjector):
    projector = "test"
    entered = asyncio.Event()

    @classmethod
    async def apply_batch(cls, engine, topic, partition, records, stats) -> int:  # type: ignore[override]  # a stand-in
        await cancel_turned_into_an_error(cls.entered)
        return records[-1].offset + 1


def test_a_cancel_that_the_rollback_turns_into_an_error_still_ends_the_batch():
    """A batch that fails is fetched again after a backoff; a batch that "fails" because it was cancelled ends."""

    async def scenario() -> None:
        settings = Settings(environment="test")
        # An engine that never connects (the stand-in batch does not use it): apply_batch is called with one.
        projector = _Projector(settings, "g", topic="t", engine=async_engine(settings.sqlalchemy_url))
        projector._consumer = _Consumer()  # type: ignore[assignment]  # a stand-in: seek() on a failed batch
        record = ConsumerRecord("t", 0, 7, 0, 0, None, b"{}", None, 0, 2, [])
        await ends_cancelled(asyncio.create_task(projector._apply_locked({TP: [record]})), projector.entered)

    asyncio.run(scenario())


class _ConsumerCancelledOnItsWayOut(ProjectorLoop):
    entered = asyncio.Event()

    async def _consume(self) -> None:
        await cancel_turned_into_an_error(self.entered)


def test_a_cancel_that_the_clean_up_turns_into_an_error_still_ends_the_loop():
    """run() retries a consumer that failed with a new one; a consumer that "failed" because it was cancelled ends
    the loop."""

    async def scenario() -> None:
        loop = _ConsumerCancelledOnItsWayOut(Settings(environment="test"), group_id="g", topic="t")
        loop.stats = "-"
        await ends_cancelled(asyncio.create_task(loop.run()), loop.entered)

    asyncio.run(scenario())


def _parked_then_refused(entered: asyncio.Event):
    """A stand-in for a database call (any arguments) that waits, and fails as above once cancelled."""

    async def call(*args, **kwargs):
        await cancel_turned_into_an_error(entered)

    return call


def test_the_other_retrying_waits_end_on_a_cancel_that_the_clean_up_turns_into_an_error(monkeypatch):
    """The same for each other wait that retries what failed: the seek to the stored positions on assignment,
    the facts' write, the velocity monitor's record."""
    settings = Settings(environment="test")

    async def seek_to_stored(entered: asyncio.Event) -> None:
        monkeypatch.setattr(projections.positions, "stored_positions", _parked_then_refused(entered))
        projector = _Projector(settings, "g", topic="t", engine=async_engine(settings.sqlalchemy_url))
        projector._consumer = _Consumer()  # type: ignore[assignment]  # a stand-in: seek()
        await projector._seek_to_stored([TP])

    async def write_facts(entered: asyncio.Event) -> None:
        monkeypatch.setattr(projections.facts, "write_rows", _parked_then_refused(entered))
        projector = AccessLogProjector(settings, group_id="g", topic="t", engine=async_engine(settings.sqlalchemy_url))
        await projector._write_until_done([{"id": "a"}])

    async def handle_a_record(entered: asyncio.Event) -> None:
        record = SimpleNamespace(message=SimpleNamespace(partition=0, offset=7))  # what a failure's log reads
        await VelocityMonitor(settings)._until_done(_parked_then_refused(entered), record)  # type: ignore[arg-type]  # a stand-in event

    async def scenario() -> None:
        for waiting in (seek_to_stored, write_facts, handle_a_record):
            entered = asyncio.Event()
            await ends_cancelled(asyncio.create_task(waiting(entered)), entered)

    asyncio.run(scenario())
