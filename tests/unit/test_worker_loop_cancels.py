"""The ledger processor's and the status sync's retrying loops end on a cancel, even one that clean-up turns into an
error on its way out (as the projectors' do: tests/unit/test_projector_loop.py). Without a broker or a database:
the turn, the partition's claim and the round are stand-ins."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from command_api.midtrans.status_sync.worker import StatusSync
from ledger_processor.runner import LedgerProcessor
from ogp.settings import Settings
from schemas.topics import COMMANDS
from tests.support.tasks import cancel_turned_into_an_error, ends_cancelled


def _processor(entered: asyncio.Event) -> LedgerProcessor:
    processor = LedgerProcessor(Settings(environment="test"))
    # Started, as far as the loop can tell: the turn and the claim are what is tested.
    processor.consumer = SimpleNamespace(partitions_for_topic=lambda topic: {0})  # type: ignore[assignment]  # a stand-in
    processor.producer = SimpleNamespace(broken=False)  # type: ignore[assignment]  # a stand-in
    processor.pools = {"stand-in": None}  # type: ignore[dict-item]  # a stand-in: never used

    async def stand_in(*args) -> None:
        await cancel_turned_into_an_error(entered)

    processor._turn = stand_in  # type: ignore[method-assign]  # the stand-in under test
    processor._take = stand_in  # type: ignore[method-assign]  # the stand-in under test
    return processor


def test_the_ledger_processors_loop_ends_on_a_cancel_that_clean_up_turns_into_an_error():
    async def scenario() -> None:
        entered = asyncio.Event()
        processor = _processor(entered)
        await ends_cancelled(asyncio.create_task(processor._consume()), entered)

    asyncio.run(scenario())


def test_the_ledger_processors_claim_at_assignment_ends_on_such_a_cancel_too():
    async def scenario() -> None:
        entered = asyncio.Event()
        processor = _processor(entered)
        await ends_cancelled(asyncio.create_task(processor.assigned({TopicPartition(COMMANDS, 0)})), entered)

    asyncio.run(scenario())


def test_the_status_syncs_rounds_end_on_a_cancel_that_clean_up_turns_into_an_error():
    async def scenario() -> None:
        entered = asyncio.Event()
        sync = StatusSync(Settings(environment="test"))

        async def round_() -> int:
            await cancel_turned_into_an_error(entered)
            return 0

        sync.round = round_  # type: ignore[method-assign]  # the stand-in under test
        await ends_cancelled(asyncio.create_task(sync._rounds()), entered)

    asyncio.run(scenario())
