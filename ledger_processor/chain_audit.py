"""`ogp audit --chain`: verify every partition's tamper-evident chain, the rows against it, and its checkpoints.

Three checks, in one snapshot of PostgreSQL taken after the checkpoints were read from Kafka (so every
checkpoint read names a link already committed):

1. **The chains.** Each partition's links, in order: numbered 1, 2, 3 ... without a gap (a deleted link), each
   carrying the previous link's hash (a link replaced), each hash the hash of its own fields (a link changed).
   The first broken link of each partition is named.
2. **The rows against the chain.** Each transaction's row must be its latest link's version (a changed or moved
   row), and its entries, in id order, the entries its links added (an entry changed, deleted or inserted); a
   row or entry no link accounts for was inserted behind the processor's back, a link without its row had it
   deleted. Each is named with its transaction, entry ids and link.
3. **The checkpoints.** Each head published to the events topic (the copy outside the database) must be the
   hash of that link now: a chain rewritten consistently in PostgreSQL, links and rows and checkpoint table
   alike, still disagrees with what Kafka holds. The database's own checkpoint table is compared too. And the
   copy outside must be there: every checkpoint the database had published (recorded, and no longer waiting in
   the outbox) before Kafka was read (:func:`published_checkpoints`) must be among those read, or the audit
   fails naming it. Deleting Kafka's copy does not make a rewritten chain pass.

Read-only, streaming (the rows are never all in memory), in the ``audit``'s REPEATABLE READ transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ledger_processor.domain import chain
from ledger_processor.domain.book import Transaction
from ogp.db.shards import LedgerShard, LedgerShards
from ogp.errors import OperatorError
from ogp.messaging import describe_partitions
from schemas.base import UnknownMessage, decode
from schemas.events import ChainCheckpoint
from schemas.topics import COMMANDS, LEDGER_EVENTS

_SHOWN = 20  # problems listed per kind (all are counted)


@dataclass
class ChainReport:
    partitions: int = 0
    links: int = 0
    transactions: int = 0
    entries: int = 0
    kafka_checkpoints: int = 0
    database_checkpoints: int = 0
    # One line per problem, each naming the link, transaction or entry ids, or checkpoint.
    broken_links: list[str] = field(default_factory=list)  # the first broken link of a partition
    rows: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.broken_links or self.rows or self.checkpoints)

    def lines(self) -> list[str]:
        out = [
            f"chain links: {self.links} on {self.partitions} partition(s)",
            f"transactions and entries checked against the chain: {self.transactions}, {self.entries}",
            f"checkpoints compared: {self.kafka_checkpoints} from Kafka, {self.database_checkpoints} from the database",
            f"broken chains: {len(self.broken_links)}",
            f"rows that differ from the chain or have no link: {len(self.rows)}",
            f"checkpoints that differ from the chain: {len(self.checkpoints)}",
        ]
        for problems in (self.broken_links, self.rows, self.checkpoints):
            out += [f"  {p}" for p in problems[:_SHOWN]]
            if len(problems) > _SHOWN:
                out.append(f"  ... and {len(problems) - _SHOWN} more")
        return out


@dataclass(frozen=True)
class Checkpoint:
    """A chain head as published: from the events topic (``where`` its partition/offset) or the database."""

    partition: int
    seq: int
    hash: str  # hex
    at: datetime
    where: str


async def read_checkpoints(bootstrap: str, topic: str = LEDGER_EVENTS, timeout: float = 600) -> list[Checkpoint]:
    """Every ChainCheckpoint on ``topic``, from its start to its end as of now (records of other keys are
    skipped undecoded). A record keyed as a checkpoint that does not decode as one is an OperatorError:
    the copy outside the database must be readable."""
    parts = [TopicPartition(topic, p) for p in range(await describe_partitions(bootstrap, topic))]
    # "earliest" for the reset that assign() starts by itself too: with "latest", one still in flight lands after a
    # seek_to_beginning and the read starts at the end, finding nothing (tests/integration/test_checkpoint_read.py).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=30000, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        for tp in parts:
            consumer.seek(tp, starts[tp])  # a seek to a known offset: no reset left to race with
        remaining = {tp for tp in parts if ends[tp] > starts[tp]}
        found: list[Checkpoint] = []
        deadline = time.monotonic() + timeout
        prefix = chain.CHECKPOINT_KEY_PREFIX.encode()
        while remaining:
            if time.monotonic() > deadline:
                raise OperatorError(f"reading the checkpoints from {topic} took longer than {timeout:.0f}s")
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for r in records:
                    if r.offset < ends[tp] and r.key is not None and r.key.startswith(prefix):
                        found.append(_checkpoint(r.value or b"", f"{topic} {tp.partition}/{r.offset}"))
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return found
    finally:
        await asyncio.wait_for(consumer.stop(), 10)


def _checkpoint(value: bytes, where: str) -> Checkpoint:
    try:
        message = decode(value)
    except UnknownMessage as exc:
        raise OperatorError(f"the checkpoint at {where} does not decode: {exc}") from None
    if not isinstance(message, ChainCheckpoint):
        raise OperatorError(f"the record at {where} is keyed as a checkpoint but is a {message.TYPE}")
    return Checkpoint(message.partition, message.seq, message.hash, message.occurred_at, where)


def audit_chain(
    conn: Connection, published: Iterable[Checkpoint], expected: set[tuple[int, int]] | None = None
) -> ChainReport:
    """Verify the chains, the rows against them, and ``published`` (the checkpoints read from Kafka); every link
    of ``expected`` (:func:`published_checkpoints` before the read) must be among them."""
    if not conn.in_transaction():
        conn.execution_options(isolation_level="REPEATABLE READ")
    report = ChainReport()
    kafka = _by_link(published, report, "Kafka")
    report.kafka_checkpoints = len(kafka)
    stored = [
        Checkpoint(p, seq, bytes(h).hex(), at, "the database")
        for p, seq, h, at in conn.execute(
            text("SELECT partition, seq, hash, created_at FROM ledger_chain_checkpoints ORDER BY partition, seq")
        )
    ]
    database = _by_link(stored, report, "the database")
    report.database_checkpoints = len(database)
    report.checkpoints += _missing_from_kafka(database, kafka, expected or set())
    _verify_links(conn, report, kafka, database)
    for source in (kafka, database):
        for (partition, seq), cp in sorted(source.items()):
            report.checkpoints.append(
                f"checkpoint {partition}/{seq} in {cp.where} (at {cp.at:%Y-%m-%d %H:%M:%S}): the chain has no such "
                "link (links deleted?)"
            )
    _verify_rows(conn, report)
    return report


def published_checkpoints(conn: Connection) -> set[tuple[int, int]]:
    """The checkpoints (partition, seq) the database holds as published: recorded, and no longer waiting in the
    outbox. Read before Kafka is, each of them must be in what is read (the end offsets are taken after)."""
    waiting: set[tuple[int, int]] = set()
    for (payload,) in conn.execute(
        text(
            "SELECT o.payload FROM ledger_outbox o JOIN ledger_partitions p ON p.topic = :topic "
            "AND p.partition = o.partition WHERE o.key LIKE :key AND o.id > p.published_outbox_id"
        ),
        {"topic": COMMANDS, "key": f"{chain.CHECKPOINT_KEY_PREFIX}%"},
    ):
        try:
            message = decode(payload.encode())
        except UnknownMessage:
            continue
        if isinstance(message, ChainCheckpoint):
            waiting.add((message.partition, message.seq))
    stored = conn.execute(text("SELECT partition, seq FROM ledger_chain_checkpoints"))
    return {(p, seq) for p, seq in stored} - waiting


def missing(expected: set[tuple[int, int]], published: Iterable[Checkpoint]) -> set[tuple[int, int]]:
    """The links of ``expected`` that no checkpoint of ``published`` names."""
    return expected - {(cp.partition, cp.seq) for cp in published}


def _missing_from_kafka(database: dict, kafka: dict, expected: set[tuple[int, int]]) -> list[str]:
    problems = []
    for partition, seq in sorted(expected - set(kafka)):
        cp = database.get((partition, seq))
        at = f" (at {cp.at:%Y-%m-%d %H:%M:%S})" if cp is not None else ""
        problems.append(
            f"checkpoint {partition}/{seq} in the database{at} was published before Kafka was read but is not in "
            f"{LEDGER_EVENTS} (Kafka's copy deleted, or not the ledger's broker?)"
        )
    return problems


def _by_link(checkpoints: Iterable[Checkpoint], report: ChainReport, source: str) -> dict[tuple[int, int], Checkpoint]:
    """The checkpoints by link; two that name one link with different hashes are a problem of their own."""
    out: dict[tuple[int, int], Checkpoint] = {}
    for cp in checkpoints:
        seen = out.setdefault((cp.partition, cp.seq), cp)
        if seen.hash != cp.hash:
            report.checkpoints.append(
                f"checkpoint {cp.partition}/{cp.seq}: {source} holds two hashes for it ({seen.where}, {cp.where})"
            )
    return out


def _verify_links(conn: Connection, report: ChainReport, kafka: dict, database: dict) -> None:
    """Walk every partition's chain in order; compare each checkpointed link (and remove it from the dicts)."""
    broken: set[int] = set()
    partition, expected, prev = None, 1, chain.GENESIS
    rows = conn.execute(
        text(
            "SELECT partition, seq, transaction_id, revision, row_digest, entries_digest, entries, created_at, "
            "prev_hash, hash FROM ledger_chain ORDER BY partition, seq"
        ).execution_options(stream_results=True, yield_per=5000)
    )
    for p, seq, tid, revision, row, posted, count, at, prev_hash, hash_ in rows:
        link = chain.Link(p, seq, tid, revision, bytes(row), bytes(posted), count, at, bytes(prev_hash), bytes(hash_))
        report.links += 1
        if p != partition:
            partition, expected, prev = p, 1, chain.GENESIS
            report.partitions += 1
        for source in (kafka, database):
            cp = source.pop((p, seq), None)
            if cp is not None and cp.hash != link.hash.hex():
                report.checkpoints.append(
                    f"checkpoint {p}/{seq} in {cp.where} (at {cp.at:%Y-%m-%d %H:%M:%S}): hash {cp.hash[:16]}…, the "
                    f"chain's link {p}/{seq} now has {link.hash.hex()[:16]}… (the chain was rewritten)"
                )
        if p in broken:
            continue
        problem = None
        if seq != expected:
            gone = f"link {p}/{expected} is" if seq == expected + 1 else f"links {p}/{expected}..{seq - 1} are"
            problem = f"{gone} missing (deleted?)"
        elif link.prev_hash != prev:
            problem = f"its previous hash is not link {seq - 1}'s hash (a link replaced?)"
        elif not chain.verify(link):
            problem = "its hash is not the hash of its contents (the link was changed)"
        if problem:
            broken.add(p)
            report.broken_links.append(f"chain of partition {p} broken at link {p}/{seq} ({tid}): {problem}")
        expected, prev = seq + 1, link.hash


_ROWS = """
WITH l AS (
    SELECT transaction_id,
           array_agg(partition ORDER BY partition, seq) AS partitions, array_agg(seq ORDER BY partition, seq) AS seqs,
           array_agg(revision ORDER BY partition, seq) AS revisions,
           array_agg(row_digest ORDER BY partition, seq) AS row_digests,
           array_agg(entries_digest ORDER BY partition, seq) AS entries_digests,
           array_agg(entries ORDER BY partition, seq) AS counts
    FROM ledger_chain GROUP BY transaction_id),
e AS (
    SELECT transaction_id, array_agg(id ORDER BY id) AS ids, array_agg(partition ORDER BY id) AS partitions,
           array_agg(account_id ORDER BY id) AS accounts, array_agg(amount ORDER BY id) AS amounts,
           array_agg(balance_after ORDER BY id) AS balances, array_agg(created_at ORDER BY id) AS moments
    FROM ledger_entries GROUP BY transaction_id)
SELECT coalesce(t.transaction_id, l.transaction_id, e.transaction_id) AS id, t.transaction_id IS NOT NULL AS has_row,
       t.partition, t.transaction_type, t.account_id, t.user_id, t.status, t.amount, t.created_at, t.updated_at,
       t.currency, t.failure_reason, t.balance_before, t.balance_after, t.description, t.external_reference,
       t.payment_method, t.revision, t.details,
       l.partitions AS l_partitions, l.seqs, l.revisions, l.row_digests, l.entries_digests, l.counts,
       e.ids, e.partitions AS e_partitions, e.accounts, e.amounts, e.balances, e.moments
FROM ledger_transactions t
FULL JOIN l ON l.transaction_id = t.transaction_id
FULL JOIN e ON e.transaction_id = coalesce(t.transaction_id, l.transaction_id)
"""


def _verify_rows(conn: Connection, report: ChainReport) -> None:
    """Each transaction's row and entries against its links."""
    for r in conn.execute(text(_ROWS).execution_options(stream_results=True, yield_per=2000)).mappings():
        tid = r["id"]
        links = _columns(r, "l_partitions", "seqs", "revisions", "row_digests", "entries_digests", "counts")
        entries = _columns(r, "ids", "e_partitions", "accounts", "amounts", "balances", "moments")
        report.entries += len(entries)
        if r["has_row"]:
            report.transactions += 1
            _verify_row(report, tid, r, links)
        elif links:
            lp, lseq = links[-1][:2]
            report.rows.append(f"transaction {tid}: chained at link {lp}/{lseq} but its row is gone (deleted?)")
        _verify_entries(report, tid, links, entries)


def _columns(r, *names: str) -> list[tuple]:
    """Parallel arrays of one result row (NULL when nothing was aggregated) as tuples."""
    return list(zip(*(r[name] or () for name in names), strict=True))


def _verify_row(report: ChainReport, tid: str, r, links: list[tuple]) -> None:
    """The row must be the version its latest link chained."""
    if not links:
        report.rows.append(f"transaction {tid}: its row has no chain link (inserted behind the processor?)")
        return
    row = Transaction(
        tid,
        r["transaction_type"],
        r["account_id"],
        r["user_id"],
        r["status"],
        r["amount"],
        r["created_at"],
        r["updated_at"],
        currency=r["currency"],
        failure_reason=r["failure_reason"],
        balance_before=r["balance_before"],
        balance_after=r["balance_after"],
        description=r["description"],
        external_reference=r["external_reference"],
        payment_method=r["payment_method"],
        revision=r["revision"],
        details=r["details"] or {},
    )
    # The latest version written: the highest revision, the later link of equal ones.
    lp, lseq, lrev, digest = max(enumerate(links), key=lambda il: (il[1][2], il[0]))[1][:4]
    if bytes(digest) != chain.row_digest(row, r["partition"]):
        report.rows.append(
            f"transaction {tid}: its row (revision {row.revision}, {row.status}) is not the version chained at "
            f"link {lp}/{lseq} (revision {lrev}): changed behind the processor?"
        )


def _verify_entries(report: ChainReport, tid: str, links: list[tuple], entries: list[tuple]) -> None:
    """The transaction's entries on each partition, cut into what its links there say they added."""
    for p in sorted({link[0] for link in links} | {entry[1] for entry in entries}):
        here = [e for e in entries if e[1] == p]
        ids = [e[0] for e in here]
        rows = [chain.EntryRow(account, amount, balance, at) for _, _, account, amount, balance, at in here]
        mine = [link for link in links if link[0] == p]
        slices, extra = chain.split(rows, [link[5] for link in mine])
        at = 0
        for (_, seq, _, _, digest, count), got in zip(mine, slices, strict=True):
            span = ids[at : at + len(got)]
            at += len(got)
            if len(got) < count:
                report.rows.append(
                    f"transaction {tid}: chain link {p}/{seq} added {count} entries, {len(got)} remain "
                    f"(entries {_ids(span)}; deleted?)"
                )
            elif bytes(digest) != chain.entries_digest(got):
                report.rows.append(
                    f"transaction {tid}: entries {_ids(span)} are not those chained at link {p}/{seq} "
                    "(changed behind the processor?)"
                )
        if extra:
            report.rows.append(
                f"transaction {tid}: entries {_ids(ids[at:])} on partition {p} have no chain link "
                "(inserted behind the processor?)"
            )


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids) if ids else "none"


def audit_chains(
    databases: list[tuple[LedgerShard, Connection]],
    shards: LedgerShards,
    published: Iterable[Checkpoint],
    expected: set[tuple[int, int]],
) -> list[tuple[str, ChainReport]]:
    """:func:`audit_chain` on each ledger database (``OGP_LEDGER_DATABASES``), each given only the checkpoints
    and expected links of the partitions it owns; with a last report, "all", that adds them up."""
    published = list(published)
    out = []
    for shard, conn in databases:
        mine = [cp for cp in published if shards.url_of(cp.partition) == shard.url]
        out.append((shard.label, audit_chain(conn, mine, {e for e in expected if shards.url_of(e[0]) == shard.url})))
    total = ChainReport()
    for _, report in out:
        for name in ("partitions", "links", "transactions", "entries", "kafka_checkpoints", "database_checkpoints"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        for name in ("broken_links", "rows", "checkpoints"):
            getattr(total, name).extend(getattr(report, name))
    return [*out, ("all", total)]
