"""COPY's text format as the processor writes it (ledger_processor/sql.py): every field escaped as PostgreSQL
reads it back, whatever the fast paths (exact types, objects formatted once per call) skip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum

from hypothesis import given
from hypothesis import strategies as st

from ledger_processor.domain.book import Entry, Transaction
from ledger_processor.domain.chain import Link
from ledger_processor.sql import chain_text, copy_text, entries_text, outbox_text, transactions_text

_UNESCAPE = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}


def _read_field(text: str) -> str | None:
    """One field as PostgreSQL's COPY text input reads it (the escapes the processor writes)."""
    if text == "\\N":
        return None
    out, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in _UNESCAPE:
            out.append(_UNESCAPE[pair])
            i += 2
        else:
            assert text[i] not in "\\\t\n\r", f"unescaped {text[i]!r} in {text!r}"
            out.append(text[i])
            i += 1
    return "".join(out)


def _read(buffer: bytes) -> list[list[str | None]]:
    text = buffer.decode()
    assert text == "" or text.endswith("\n")
    return [[_read_field(f) for f in line.split("\t")] for line in text.split("\n")[:-1]]


class Kind(StrEnum):
    PAYMENT = "PAYMENT"


texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))


@given(st.lists(st.tuples(texts, texts, st.none()), max_size=5))
def test_texts_come_back_as_written(rows):
    assert _read(copy_text(rows)) == [list(r) for r in rows]


def test_every_type_the_processor_writes():
    at = datetime(2026, 11, 30, 5, 30, 1, 250, tzinfo=UTC)
    details = {"note": "tab\there", "n": 1}
    rows = [("id\\1", 3, Decimal("10.50"), at, details, b"\x00\xff", True, None, Kind.PAYMENT)]
    assert _read(copy_text(rows)) == [
        [
            "id\\1",
            "3",
            "10.50",
            at.isoformat(),
            json.dumps(details, separators=(",", ":")),
            "\\x00ff",
            "True",
            None,
            "PAYMENT",
        ]
    ]
    assert copy_text([]) == b""
    assert _read(copy_text([({},)])) == [["{}"]]


def test_objects_formatted_once_are_still_each_rows_own():
    # The same dict or moment in many rows is formatted once; distinct ones (equal ids reused after a free
    # included) each keep their own text.
    at = datetime(2026, 1, 1, tzinfo=UTC)
    shared = {"correlation_id": "c1"}
    rows = [(shared, at), (shared, at), ({"correlation_id": "c2"}, at + timedelta(seconds=1))]
    rows += [({"correlation_id": f"x{i}"}, at) for i in range(50)]
    expected = [[json.dumps(h, separators=(",", ":")), t.isoformat()] for h, t in rows]
    assert _read(copy_text(rows)) == expected
    # A generator making a fresh dict per row (each freed after its row): no row takes another's text.
    generated = ({"i": i} for i in range(200))
    assert _read(copy_text((d,) for d in generated)) == [
        [json.dumps({"i": i}, separators=(",", ":"))] for i in range(200)
    ]


# The formatters of the hot path's fixed rows (entries, chain links) write the same bytes as copy_text.
ids = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
moneys = st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-(10**12), max_value=10**12)
moments = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=7))]))
digests = st.binary(min_size=0, max_size=40)


@given(st.lists(st.tuples(ids, ids, moneys, moneys), max_size=6), st.integers(0, 63), moments)
def test_entries_text_is_copy_text(legs, partition, at):
    entries = [Entry(*leg) for leg in legs]
    expected = copy_text((e.transaction_id, e.account_id, e.amount, e.balance_after, partition, at) for e in entries)
    assert entries_text(entries, partition, at) == expected


@given(
    st.lists(
        st.builds(
            Link,
            st.integers(0, 63),
            st.integers(1, 2**40),
            ids,
            st.integers(0, 99),
            digests,
            digests,
            st.integers(0, 9),
            moments,
            digests,
            digests,
        ),
        max_size=6,
    )
)
def test_chain_text_is_copy_text(links):
    expected = copy_text(
        (
            k.partition,
            k.seq,
            k.transaction_id,
            k.revision,
            k.row_digest,
            k.entries_digest,
            k.entries,
            k.prev_hash,
            k.hash,
            k.at,
        )
        for k in links
    )
    assert chain_text(links) == expected


def test_fixed_row_formatters_escape_and_share_moments():
    at = datetime(2026, 11, 30, 5, 30, 1, 250, tzinfo=UTC)
    later = at + timedelta(seconds=1)
    entries = [Entry("t\\1", "a\tb", Decimal("-1.00"), Decimal("5.00")), Entry("t2", "a", Decimal("1E+1"), Decimal(0))]
    assert _read(entries_text(entries, 3, at)) == [
        ["t\\1", "a\tb", "-1.00", "5.00", "3", at.isoformat()],
        ["t2", "a", "1E+1", "0", "3", at.isoformat()],
    ]
    links = [
        Link(1, 2, "x\n", 0, b"\x01", b"", 2, at, b"\xff", b"\x00"),
        Link(1, 3, "y", 1, b"", b"", 0, later, b"", b""),
    ]
    assert _read(chain_text(links)) == [
        ["1", "2", "x\n", "0", "\\x01", "\\x", "2", "\\xff", "\\x00", at.isoformat()],
        ["1", "3", "y", "1", "\\x", "\\x", "0", "\\x", "\\x", later.isoformat()],
    ]
    assert entries_text([], 0, at) == chain_text([]) == copy_text([]) == b""


optional_ids = st.none() | ids
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | ids, lambda inner: st.lists(inner, max_size=3), max_leaves=5
)
details = st.dictionaries(ids, json_values, max_size=3)


@st.composite
def transactions(draw):
    return Transaction(
        transaction_id=draw(ids),
        transaction_type=draw(st.sampled_from(["PAYMENT", "TOPUP", "TRANSFER"])),
        account_id=draw(ids),
        user_id=draw(st.none() | st.integers(0, 2**40)),
        status=draw(st.sampled_from(["PENDING", "SUCCESS", "FAILED"])),
        amount=draw(moneys),
        created_at=draw(moments),
        updated_at=draw(moments),
        failure_reason=draw(optional_ids),
        balance_before=draw(st.none() | moneys),
        balance_after=draw(st.none() | moneys),
        description=draw(ids),
        external_reference=draw(optional_ids),
        payment_method=draw(optional_ids),
        revision=draw(st.integers(0, 9)),
        details=draw(details),
        is_new=True,
        command_offset=draw(st.none() | st.integers(0, 2**40)),
    )


@given(st.lists(transactions(), max_size=5), st.integers(0, 63))
def test_transactions_text_is_copy_text(new, partition):
    expected = copy_text(
        (
            t.transaction_id,
            partition,
            t.transaction_type,
            t.account_id,
            t.user_id,
            t.status,
            t.amount,
            t.currency,
            t.failure_reason,
            t.balance_before,
            t.balance_after,
            t.description,
            t.external_reference,
            t.payment_method,
            t.revision,
            t.details,
            t.command_offset,
            t.created_at,
            t.updated_at,
        )
        for t in new
    )
    assert transactions_text(new, partition) == expected


@given(
    st.lists(st.tuples(st.sampled_from(["ledger.events", "a\tb"]), optional_ids, ids, details), max_size=6),
    st.integers(0, 63),
    moments,
)
def test_outbox_text_is_copy_text(messages, partition, at):
    ids_ = list(range(100, 100 + len(messages)))
    shared = {"correlation_id": "c1"}  # a command's messages share its headers dict
    topics = [m[0] for m in messages]
    keys = [m[1] for m in messages]
    payloads = [m[2] for m in messages]
    headers = [m[3] if n % 2 else shared for n, m in enumerate(messages)]
    expected = copy_text(
        (i, partition, t, k, p, h, at) for i, t, k, p, h in zip(ids_, topics, keys, payloads, headers, strict=True)
    )
    assert outbox_text(ids_, partition, topics, keys, payloads, headers, at) == expected
