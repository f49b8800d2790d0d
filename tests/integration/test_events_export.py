"""`ogp events export` against a real broker and database: the Parquet of a time range, read back, sums to the
ledger's own figures for that range and holds exactly the range's records; an export killed (-9) mid-way and
run again ends with every record once; the command line refuses to mix two ranges in one folder."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ogp.messaging import ensure_topics
from projections.export.exporter import ExportRequest, export
from schemas.base import encode
from schemas.commands import RequestPayment, RequestTransfer
from schemas.events import TransactionRecorded
from schemas.topics import LEDGER_EVENTS, TopicSpec
from tests.support.ledger import BackgroundProcessor, caught_up, create_accounts, end_offsets, funding, produce, query
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

D = Decimal
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(ledger_env):
    return ledger_env


def now() -> datetime:
    return datetime.now(UTC)


def spending(accounts: list[tuple[int, str]], rng: random.Random) -> list:
    """Payments and transfers between funded wallets: some succeed, a few fail for want of funds."""
    out: list = []
    for user, account in accounts:
        for _ in range(3):
            out.append(
                RequestPayment(
                    account_id=account,
                    requested_at=now(),
                    transaction_id=str(uuid.uuid4()),
                    user_id=user,
                    amount=D(rng.randint(1, 60_000_00)) / 100,
                    merchant_reference=f"export-{uuid.uuid4().hex[:8]}",
                )
            )
        _, other = rng.choice(accounts)
        if other != account:
            out.append(
                RequestTransfer(
                    account_id=account,
                    requested_at=now(),
                    transaction_id=str(uuid.uuid4()),
                    user_id=user,
                    to_account_id=other,
                    amount=D(rng.randint(1, 20_000_00)) / 100,
                )
            )
    return out


async def offsets_from(bootstrap: str, topic: str, at: datetime) -> dict[int, int]:
    """Each partition's first offset at or after ``at`` (computed here, independently of the exporter)."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        found = await consumer.offsets_for_times({TopicPartition(topic, p): int(at.timestamp() * 1000) for p in ends})
        return {tp.partition: (o.offset if o is not None else ends[tp.partition]) for tp, o in found.items()}
    finally:
        await consumer.stop()


def test_a_time_range_exports_exactly_its_records_and_sums_to_the_ledger(env, tmp_path):
    db, kafka = env.database_url, env.kafka_bootstrap
    rng = random.Random(14)
    accounts = create_accounts(db, 24, prefix="exp")
    with BackgroundProcessor(env):
        # Before the range: the wallets are funded.
        asyncio.run(produce(kafka, [c for u, a in accounts for c in funding(u, a, D("100000.00"))]))
        caught_up(db, kafka)
        since = now()  # every event so far was published before this (the outbox is empty)
        # The range: spending, and more top-ups.
        later = spending(accounts, rng) + [c for u, a in accounts[:8] for c in funding(u, a, D("2500.50"))]
        asyncio.run(produce(kafka, later))
        caught_up(db, kafka)
    asked = [c.transaction_id for c in later if hasattr(c, "transaction_id")]
    # The ledger's transactions for those commands: a transfer's credit leg is "<id>:in" on the receiver.
    in_range = {
        r.transaction_id
        for r in query(
            db,
            "SELECT transaction_id FROM ledger_transactions WHERE split_part(transaction_id, ':', 1) = ANY(:ids)",
            ids=asked,
        )
    }

    result = asyncio.run(export(env, ExportRequest(LEDGER_EVENTS, since=since), tmp_path / "range"))
    table = pq.read_table(tmp_path / "range")  # the folder, as an analyst reads it (the manifest is skipped)

    # Exactly the records of the range: as many as its offsets, each once.
    start, end = asyncio.run(offsets_from(kafka, LEDGER_EVENTS, since)), asyncio.run(end_offsets(kafka, LEDGER_EVENTS))
    expected = {(p, o) for p in end for o in range(start[p], end[p])}
    assert result.records == result.offsets == len(expected) == table.num_rows > 0
    assert set(zip(table["partition"].to_pylist(), table["offset"].to_pylist(), strict=True)) == expected
    events = table.filter(pc.equal(table["type"], "TransactionRecorded")).to_pylist()
    assert {e["transaction_id"] for e in events} == in_range, "no event from before the range, none missing"
    assert all(e["error"] is None for e in table.to_pylist())

    # Each transaction's last state in the file is the ledger's row for it.
    last: dict[str, dict] = {}
    for e in events:
        if e["revision"] > last.get(e["transaction_id"], {"revision": -1})["revision"]:
            last[e["transaction_id"]] = e
    ledger = {
        r.transaction_id: r
        for r in query(
            db,
            "SELECT transaction_id, transaction_type, status, amount, revision FROM ledger_transactions "
            "WHERE transaction_id = ANY(:ids)",
            ids=list(in_range),
        )
    }
    assert {t: (e["status"], e["amount"], e["revision"]) for t, e in last.items()} == {
        t: (r.status, r.amount, r.revision) for t, r in ledger.items()
    }
    # The amounts sum to the ledger's, by type and status, exactly (decimal columns, no float anywhere).
    exported: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for e in last.values():
        exported[e["transaction_type"], e["status"]] += e["amount"]
    summed = query(
        db,
        "SELECT transaction_type, status, sum(amount) AS total FROM ledger_transactions "
        "WHERE transaction_id = ANY(:ids) GROUP BY 1, 2",
        ids=list(in_range),
    )
    assert dict(exported) == {(r.transaction_type, r.status): r.total for r in summed}
    assert pa.types.is_decimal(pc.sum(table["amount"]).type)  # Arrow sums it as a decimal too
    # Each wallet's money moved in the range, from the events' balances, equals its ledger entries.
    moved: dict[str, Decimal] = defaultdict(Decimal)
    for e in last.values():
        if e["status"] == "SUCCESS":
            moved[e["account_id"]] += e["balance_after"] - e["balance_before"]
    entries = query(
        db,
        "SELECT account_id, sum(amount) AS total FROM ledger_entries "
        "WHERE transaction_id = ANY(:ids) AND account_id = ANY(:accounts) GROUP BY 1",
        ids=list(in_range),
        accounts=[a for _, a in accounts],
    )
    assert {a: m for a, m in moved.items() if m} == {r.account_id: r.total for r in entries if r.total}


# -- resuming -----------------------------------------------------------------------------------------------

RECORDS, PARTITIONS, CHUNK = 24_000, 4, 400


def synthetic(n: int) -> list[tuple[str, bytes]]:
    """``n`` ledger events on 40 wallets, straight onto a copy of the topic (no ledger needed to be read)."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        account = f"acct-{i % 40}"
        event = TransactionRecorded(
            event_id=f"syn-{i}#1",
            transaction_id=f"syn-{i}",
            revision=1,
            account_id=account,
            user_id=i % 40,
            transaction_type="PAYMENT",
            status="SUCCESS",
            amount=D(i % 100_000 + 1) / 100,
            balance_before=D("1000000.00"),
            balance_after=D("1000000.00") - D(i % 100_000 + 1) / 100,
            created_at=t0 + timedelta(seconds=i),
            updated_at=t0 + timedelta(seconds=i),
        )
        out.append((account, encode(event)))
    return out


def run_export(env, out: Path, *args: str, log: Path) -> subprocess.Popen:
    """``ogp events export`` in a process of its own, as an operator runs it."""
    environment = os.environ | {
        "OGP_ENVIRONMENT": "test",
        "OGP_DATABASE_URL": env.database_url,
        "OGP_KAFKA_BOOTSTRAP_SERVERS": env.kafka_bootstrap,
    }
    command = [sys.executable, "-m", "ogp.cli", "events", "export", "--out", str(out), *args]
    with open(log, "wb") as f:
        return subprocess.Popen(command, env=environment, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def test_an_export_killed_mid_way_resumes_and_ends_with_every_record_once(env, tmp_path):
    topic = f"{LEDGER_EVENTS}.export-{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(env.kafka_bootstrap, [TopicSpec(topic, PARTITIONS)]))
    items = synthetic(RECORDS)
    asyncio.run(produce(env.kafka_bootstrap, items, topic=topic))
    out, log = tmp_path / "export", tmp_path / "export.log"
    args = ("--topic", topic, "--chunk-size", str(CHUNK))

    # The first run is killed without warning once it has written its first part.
    first = run_export(env, out, *args, log=log)
    try:
        wait_until(
            lambda: any(out.glob("*.parquet")) or first.poll() is not None,
            what=lambda: f"the export wrote a part file:\n{log.read_text()}",
            interval=0.005,
        )
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(30)
    at_kill = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert 0 < len(at_kill) < RECORDS // CHUNK, f"the kill came too late to test anything ({len(at_kill)} parts)"

    # Another range into the same folder is refused: the folder holds one export.
    other = run_export(env, out, *args, "--from-offset", "5", log=tmp_path / "other.log")
    assert other.wait(60) == 1
    assert "holds an export of another range" in (tmp_path / "other.log").read_text()

    # The same command again finishes the job, keeping what was complete.
    again = run_export(env, out, *args, log=tmp_path / "again.log")
    assert again.wait(300) == 0, (tmp_path / "again.log").read_text()
    said = (tmp_path / "again.log").read_text()
    assert f"exported {RECORDS} records ({RECORDS} offsets in range)" in " ".join(said.split())
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in at_kill.items()), "complete parts kept"
    assert not list(out.glob(".*.tmp")), "a half-written part of the killed run is cleaned up"

    table = pq.read_table(out)
    keys = list(zip(table["partition"].to_pylist(), table["offset"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == RECORDS, "no duplicates, no gaps"
    assert sorted(table["event_id"].to_pylist()) == sorted(f"syn-{i}#1" for i in range(RECORDS))
    assert pc.sum(table["amount"]).as_py() == sum(D(i % 100_000 + 1) / 100 for i in range(RECORDS))
