"""The history rebuild's fold of one chunk: the rows ``projections.history.rows.replay`` gives for its events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from projections.history.projector import _fold_chunk
from projections.history.rows import replay
from projections.positions import ProjectionStats
from schemas.base import decode, encode
from schemas.events import AccountStatusChanged, TransactionRecorded

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Record:  # the fields of aiokafka's ConsumerRecord the fold reads
    offset: int
    value: bytes
    headers: tuple = ()


def recorded(tx: str, revision: int, account: str = "acc-1", status: str = "PENDING") -> TransactionRecorded:
    return TransactionRecorded(
        event_id=f"{tx}#{revision}#{account}",
        transaction_id=tx,
        revision=revision,
        account_id=account,
        user_id=7,
        transaction_type="PAYMENT",
        status=status,
        amount=Decimal("10.00"),
        balance_before=Decimal("100.00"),
        balance_after=Decimal("90.00"),
        created_at=T0,
        updated_at=T0 + timedelta(seconds=revision),
    )


def test_a_chunk_folds_to_the_replay_of_its_events_in_transaction_id_order():
    messages = [
        recorded("tx-b", 1),
        recorded("tx-a", 1),
        recorded("tx-b", 2, status="SUCCESS"),
        recorded("tx-b", 1),  # a late older state
        AccountStatusChanged(
            event_id="s1", account_id="acc-1", status="SUSPENDED", previous_status="ACTIVE", occurred_at=T0
        ),
        recorded("tx-a", 2, account="acc-2", status="SUCCESS"),  # another account: refused
        recorded("tx-c", 3, status="FAILED"),
    ]
    records = [Record(i, encode(m)) for i, m in enumerate(messages)] + [Record(len(messages), b"not json")]
    stats = ProjectionStats()

    rows = _fold_chunk(0, records, stats)

    expected = replay([decode(encode(m)) for m in messages])
    assert rows == [expected[tx] for tx in sorted(expected)]
    assert [r["transaction_id"] for r in rows] == ["tx-a", "tx-b", "tx-c"]
    assert (stats.rejected, stats.ignored, stats.other_types, stats.undecodable) == (1, 1, 1, 1)
