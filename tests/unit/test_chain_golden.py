"""The chain's bytes stay the bytes existing chains were hashed with, however the encoder is made faster.

Two guards: hashes pinned from the encoder as it was before the hot path was reworked (a varied batch of
transactions and entries, chained onto a head), and a frozen copy of that encoder (``_reference_*`` below,
``ogp-chain/1`` as first written) that the current one must match byte for byte on generated rows, entries and
links. ``ogp audit --chain`` verifies old links with the current code: any difference here breaks it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_processor.domain import chain
from ledger_processor.domain.book import Book, Entry, Transaction

D = Decimal
NOW = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC)
WIB = timezone(timedelta(hours=7))


# -- ogp-chain/1 as first written (the oracle) ---------------------------------------------------------------
def _reference_fields(values: Iterable[str | None]) -> bytes:
    return "".join(["~" if v is None else f"{len(v)}:{v}," for v in values]).encode("utf-8", "surrogatepass")


def _reference_row_bytes(tx: Transaction, partition: int) -> bytes:
    m, ts = chain.money, chain.timestamp
    return _reference_fields(
        (
            "ogp-chain/1",
            "transaction",
            tx.transaction_id,
            str(partition),
            tx.transaction_type,
            tx.account_id,
            None if tx.user_id is None else str(tx.user_id),
            tx.status,
            m(tx.amount),
            tx.currency,
            tx.failure_reason,
            m(tx.balance_before),
            m(tx.balance_after),
            tx.description,
            tx.external_reference,
            tx.payment_method,
            str(tx.revision),
            chain.canonical_json(tx.details),
            ts(tx.created_at),
            ts(tx.updated_at),
        )
    )


def _reference_entries_bytes(entries) -> bytes:
    values: list[str | None] = ["ogp-chain/1", "entries"]
    for account_id, amount, balance_after, created_at in entries:
        values += (account_id, chain.money(amount), chain.money(balance_after), chain.timestamp(created_at))
    return _reference_fields(values)


def _reference_link_hash(prev, partition, seq, transaction_id, revision, row, entries, count, at) -> bytes:
    body = _reference_fields(
        (
            "ogp-chain/1",
            "link",
            str(partition),
            str(seq),
            transaction_id,
            str(revision),
            row.hex(),
            entries.hex(),
            str(count),
            chain.timestamp(at),
        )
    )
    return hashlib.sha256(prev + body).digest()


# -- a varied batch ---------------------------------------------------------------------------------------
TEXTS = ["", "~", "a,1:b", "kopi ☕", "日本語", "\ud800lone", "tab\tnew\nline", "x" * 300, "0", "-"]
MONEY = [None, D("0"), D("-0.00"), D("1"), D("1.005"), D("-1.005"), D("10.00"), D("1E+2"), D("123456789012.34")]
DETAILS = [
    {},
    {"metadata": {}},
    {"metadata": {"merchant_reference": "bench-1"}},
    {"b": 1, "a": [1.0, "x", None, True, False], "n": D("2.50")},
    {3: "int key", None: "none key", True: "bool key", 2.5: "float key"},
    {"deep": {"deeper": [{"z": 1e300, "y": -0.0}, []]}, "unicode": "é\u2028"},
]


def varied_book(seed: int, n: int = 60) -> Book:
    rng = random.Random(seed)
    book = Book(partition=7, now=NOW, partition_of=lambda _: 7)
    for i in range(n):
        tid = f"t-{seed}-{i}-{rng.choice(TEXTS)}"
        created = NOW - timedelta(microseconds=rng.randrange(10**9))
        tx = Transaction(
            transaction_id=tid,
            transaction_type=rng.choice(["PAYMENT", "TRANSFER", "TOPUP", "REFUND"]),
            account_id=rng.choice(["a", "b", "SYS:SUSPENSE:p007", "ü"]),
            user_id=rng.choice([None, 0, 7, 10**12]),
            status=rng.choice(["PENDING", "SUCCESS", "FAILED", "CANCELLED"]),
            amount=rng.choice(MONEY[1:]),
            created_at=created.astimezone(rng.choice([UTC, WIB])),
            updated_at=NOW,
            failure_reason=rng.choice([None, "", "insufficient_funds"]),
            balance_before=rng.choice(MONEY),
            balance_after=rng.choice(MONEY),
            description=rng.choice(TEXTS),
            external_reference=rng.choice([None, *TEXTS]),
            payment_method=rng.choice([None, "GOPAY", ""]),
            revision=rng.randrange(5),
            details=rng.choice(DETAILS),
            is_new=rng.random() < 0.5,
            changed=rng.random() < 0.5,
        )
        book.transactions[tid] = tx
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            book.entries.append(Entry(tid, rng.choice(["a", "b", "ü"]), rng.choice(MONEY[1:]), rng.choice(MONEY[1:])))
    return book


HEAD = chain.Head(seq=41, hash=bytes(range(32)))
# Computed with the encoder before the hot-path rework (commit b04feaa): never edit these to make a test pass.
GOLDEN = {
    1: "2b41cefefaf3d3c362eba97749a3bfe5e8272cec5a157e362a7e6226deaf2c7f",
    2: "fec769f4b636a404600210afffa44b626e7f214e0442eb01533393564187e9a4",
    3: "a99c9aef79450e6f833876beedd2840e198fff323e9f042151840f4c904439ee",
}


def test_a_varied_batch_chains_to_the_pinned_hashes():
    for seed, expected in GOLDEN.items():
        links = chain.links(varied_book(seed), 7, HEAD)
        assert links[0].prev_hash == HEAD.hash and links[0].seq == HEAD.seq + 1
        assert links[-1].hash.hex() == expected, seed


def test_a_varied_batch_matches_the_reference_encoder_link_by_link():
    for seed in GOLDEN:
        book = varied_book(seed)
        prev = HEAD.hash
        for link in chain.links(book, 7, HEAD):
            tx = book.transactions[link.transaction_id]
            added = [
                (e.account_id, e.amount, e.balance_after, NOW)
                for e in book.entries
                if e.transaction_id == tx.transaction_id
            ]
            assert link.row_digest == hashlib.sha256(_reference_row_bytes(tx, 7)).digest()
            assert link.entries_digest == hashlib.sha256(_reference_entries_bytes(added)).digest()
            assert link.prev_hash == prev
            assert link.hash == _reference_link_hash(
                prev, 7, link.seq, tx.transaction_id, tx.revision, link.row_digest, link.entries_digest, len(added), NOW
            )
            assert chain.verify(link)
            prev = link.hash


texts = st.text(max_size=20)
money = st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**12), max_value=10**12)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from([UTC, WIB])
)


@settings(max_examples=300, deadline=None)
@given(
    tid=texts,
    kind=texts,
    account=texts,
    user=st.none() | st.integers(),
    status=texts,
    amounts=st.tuples(money, money, money),
    optional=st.tuples(st.none() | texts, st.none() | texts, st.none() | texts),
    description=texts,
    revision=st.integers(min_value=0, max_value=10**6),
    details=st.sampled_from(DETAILS),
    moments=st.tuples(moments, moments),
    partition=st.integers(min_value=0, max_value=10**4),
)
def test_any_row_encodes_as_the_reference_does(
    tid, kind, account, user, status, amounts, optional, description, revision, details, moments, partition
):
    tx = Transaction(
        transaction_id=tid,
        transaction_type=kind,
        account_id=account,
        user_id=user,
        status=status,
        amount=amounts[0],
        created_at=moments[0],
        updated_at=moments[1],
        failure_reason=optional[0],
        balance_before=amounts[1],
        balance_after=amounts[2],
        description=description,
        external_reference=optional[1],
        payment_method=optional[2],
        revision=revision,
        details=details,
    )
    assert chain.row_bytes(tx, partition) == _reference_row_bytes(tx, partition)
    assert chain.row_digest(tx, partition) == hashlib.sha256(_reference_row_bytes(tx, partition)).digest()


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(st.tuples(texts, money.filter(lambda m: m is not None), money, moments), max_size=4))
def test_any_entries_encode_as_the_reference_does(entries):
    assert chain.entries_bytes(entries) == _reference_entries_bytes(entries)


@settings(max_examples=200, deadline=None)
@given(
    prev=st.binary(min_size=32, max_size=32),
    partition=st.integers(min_value=0, max_value=10**4),
    seq=st.integers(min_value=1, max_value=10**12),
    tid=texts,
    revision=st.integers(min_value=0, max_value=10**6),
    digests=st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
    count=st.integers(min_value=0, max_value=100),
    at=moments,
)
def test_any_link_hashes_as_the_reference_does(prev, partition, seq, tid, revision, digests, count, at):
    got = chain.link_hash(prev, partition, seq, tid, revision, digests[0], digests[1], count, at)
    assert got == _reference_link_hash(prev, partition, seq, tid, revision, digests[0], digests[1], count, at)
