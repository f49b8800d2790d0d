"""The tamper-evident chain's pure core: the canonical encoding, the digests, the links a batch appends."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger_processor.domain import chain, rules
from ledger_processor.domain.book import Account, Book, InvariantViolation, Transaction
from schemas.commands import RequestPayment

D = Decimal
NOW = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC)


def tx(**fields) -> Transaction:
    values = dict(
        transaction_id="t-1",
        transaction_type="PAYMENT",
        account_id="a",
        user_id=7,
        status="SUCCESS",
        amount=D("10.00"),
        created_at=NOW,
        updated_at=NOW,
        balance_before=D("100.00"),
        balance_after=D("90.00"),
        description="coffee",
        revision=1,
        details={"metadata": {"order": "x", "n": 3}},
    )
    values.update(fields)
    return Transaction(**values)


def paid_book(*amounts: str) -> Book:
    book = Book(partition=3, now=NOW, partition_of=lambda _: 3)
    book.accounts["a"] = Account("a", D("1000.00"), user_id=7)
    for amount in amounts:
        rules.apply(
            book,
            RequestPayment(
                account_id="a",
                requested_at=NOW,
                transaction_id=uuid.uuid4().hex,
                user_id=7,
                amount=amount,
                merchant_reference="m",
            ),
        )
    return book


# -- the encoding -----------------------------------------------------------------------------------------
def test_money_is_two_fixed_places_as_the_database_rounds_it():
    assert chain.money(D("1")) == "1.00"
    assert chain.money(D("1.005")) == "1.01"  # numeric(…, 2) rounds half away from zero
    assert chain.money(D("-1.005")) == "-1.01"
    assert chain.money(D("-0.00")) == "0.00"
    assert chain.money(None) is None


def test_timestamps_are_utc_with_microseconds_and_naive_ones_are_refused():
    wib = timezone(timedelta(hours=7))
    assert chain.timestamp(NOW.astimezone(wib)) == "2026-12-01T03:04:05.678901+00:00"
    assert chain.timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000+00:00"
    with pytest.raises(ValueError, match="naive"):
        chain.timestamp(datetime(2026, 1, 1))


def test_details_encode_alike_whatever_their_key_order_or_number_spelling():
    assert chain.canonical_json({"b": 1, "a": [1.0, "x"]}) == chain.canonical_json({"a": [1, "x"], "b": 1.0})
    # What jsonb gives back for 1e300 is an integer: still the same value, so the same text.
    assert chain.canonical_json(1e300) == chain.canonical_json(10**300)
    assert chain.canonical_json({1: "x"}) == chain.canonical_json({"1": "x"})  # as json.dumps stores the key


def test_details_keep_what_differs_apart():
    assert chain.canonical_json(1) != chain.canonical_json("1")
    assert chain.canonical_json(True) != chain.canonical_json(1)
    assert chain.canonical_json(None) != chain.canonical_json("null")
    assert chain.canonical_json({"a": "b,c"}) != chain.canonical_json({"a": "b", "c": None})
    with pytest.raises(ValueError):
        chain.canonical_json(float("nan"))
    with pytest.raises(TypeError):
        chain.canonical_json({"when": NOW})


json_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@given(json_data)
def test_details_read_back_from_json_encode_as_written(value):
    # The processor hashes the dict it writes; the audit the one it reads back.
    assert chain.canonical_json(json.loads(json.dumps(value))) == chain.canonical_json(value)


def test_every_column_written_changes_the_row_digest():
    base = chain.row_digest(tx(), 3)
    changed = [
        tx(status="FAILED"),
        tx(amount=D("10.01")),
        tx(balance_after=D("90.01")),
        tx(revision=2),
        tx(account_id="b"),
        tx(user_id=8),
        tx(description="tea"),
        tx(failure_reason="x"),
        tx(details={"metadata": {"order": "x", "n": 4}}),
        tx(updated_at=NOW + timedelta(microseconds=1)),
    ]
    assert all(chain.row_digest(t, 3) != base for t in changed)
    assert chain.row_digest(tx(), 4) != base  # moved to another partition
    # Not a change: the same values read back (another key order, another time zone).
    same = tx(details={"metadata": {"n": 3, "order": "x"}}, created_at=NOW.astimezone(timezone(timedelta(hours=7))))
    assert chain.row_digest(same, 3) == base


def test_the_encoding_is_pinned():
    # A change of what is hashed must come with a new FORMAT (old links stay verifiable by the old rules).
    assert chain.row_bytes(tx(), 3) == (
        b"11:ogp-chain/1,11:transaction,3:t-1,1:3,7:PAYMENT,1:a,1:7,7:SUCCESS,5:10.00,3:IDR,~6:100.00,5:90.00,"
        b'6:coffee,~~1:1,32:{"metadata":{"n":3,"order":"x"}},'
        b"32:2026-12-01T03:04:05.678901+00:00,32:2026-12-01T03:04:05.678901+00:00,"
    )
    assert chain.row_digest(tx(), 3).hex() == "a14c66a6684becb5cdf2823e001ffa9c5488dd5df4e1ac5208df83cd26c3fa3d"


def test_no_value_can_pass_for_another():
    # Fields carry their length: a separator inside a value, or a NULL beside an empty or "~" text, stays apart.
    assert chain.row_digest(tx(description="a,1:b", failure_reason=None), 3) != chain.row_digest(
        tx(description="a", failure_reason="b"), 3
    )
    assert len({chain.row_digest(tx(failure_reason=v), 3) for v in (None, "", "~")}) == 3


# -- the writer's side ------------------------------------------------------------------------------------
def test_a_batch_appends_one_link_per_transaction_written_continuing_the_head():
    book = paid_book("10.00", "20.00")
    head = chain.Head(seq=41, hash=b"\x01" * 32)
    links = chain.links(book, 3, head)
    assert [k.seq for k in links] == [42, 43]
    assert links[0].prev_hash == head.hash and links[1].prev_hash == links[0].hash
    assert all(chain.verify(k) for k in links)
    assert [k.entries for k in links] == [2, 2]  # the wallet's debit and the merchant payable's credit
    first = list(book.transactions.values())[0]
    assert links[0].transaction_id == first.transaction_id and links[0].revision == first.revision
    assert links[0].row_digest == chain.row_digest(first, 3)


def test_a_transaction_loaded_and_left_alone_gets_no_link():
    book = paid_book("10.00")
    book.transactions["old"] = tx(transaction_id="old")  # loaded, not changed, nothing posted
    assert [k.transaction_id for k in chain.links(book, 3, chain.Head())] == [
        t for t in book.transactions if t != "old"
    ]


def test_entries_for_a_transaction_the_batch_does_not_hold_are_a_bug():
    book = paid_book("10.00")
    book.transactions.clear()
    with pytest.raises(InvariantViolation, match="entries for transactions"):
        chain.links(book, 3, chain.Head())


def test_a_changed_field_of_a_link_breaks_its_hash():
    link = chain.links(paid_book("10.00"), 3, chain.Head())[0]
    assert chain.verify(link)
    for changed in (
        link._replace(revision=link.revision + 1),
        link._replace(entries=link.entries - 1),
        link._replace(row_digest=bytes(32)),
        link._replace(prev_hash=b"\x02" * 32),
        link._replace(at=link.at + timedelta(seconds=1)),
    ):
        assert not chain.verify(changed)


def test_checkpoints_are_due_after_so_many_links_or_so_long():
    every, most = timedelta(seconds=60), 100
    assert not chain.checkpoint_due(chain.Head(), NOW, every, most)  # an empty chain
    assert chain.checkpoint_due(chain.Head(seq=1), NOW, every, most)  # the first
    last = chain.Head(seq=150, checkpoint_seq=100, checkpoint_at=NOW)
    assert not chain.checkpoint_due(last, NOW + timedelta(seconds=59), every, most)
    assert chain.checkpoint_due(last, NOW + timedelta(seconds=60), every, most)
    assert chain.checkpoint_due(replace(last, seq=200), NOW, every, most)
    assert not chain.checkpoint_due(replace(last, seq=100), NOW + timedelta(hours=1), every, most)  # nothing new


def test_entries_are_cut_into_what_each_link_added():
    rows = [chain.EntryRow("a", D(i), D(0), NOW) for i in range(1, 6)]
    assert chain.split(rows, [2, 2]) == ([rows[:2], rows[2:4]], rows[4:])
    assert chain.split(rows[:3], [2, 2]) == ([rows[:2], rows[2:3]], [])
