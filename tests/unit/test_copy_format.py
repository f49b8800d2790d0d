"""COPY's text format as the processor writes it (ledger_processor/sql.py): every field escaped as PostgreSQL
reads it back, whatever the fast paths (exact types, objects formatted once per call) skip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from hypothesis import given
from hypothesis import strategies as st

from ledger_processor.sql import copy_text

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
