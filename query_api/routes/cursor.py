"""Opaque keyset cursors: the (created_at, id) of the last row a page showed, as base64url JSON.

A cursor comes back from the client, so everything decoded from it is checked as strictly as any other
input before it reaches a query: the alphabet and length first, then each value's type and range.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime

MAX_CURSOR_LENGTH = 200
# What the OpenAPI documents publish for a cursor parameter; the decoders enforce it (400 ``invalid_cursor``).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+={0,2}$"
CURSOR_SCHEMA = {"minLength": 1, "maxLength": MAX_CURSOR_LENGTH, "pattern": CURSOR_PATTERN}
_CURSOR = re.compile(CURSOR_PATTERN)
_ROW_ID = re.compile(r"[A-Za-z0-9._:-]{1,36}")  # our row ids are UUID text (String(36))


class InvalidCursor(ValueError):
    """The cursor was not made by :func:`encode_cursor` (or was altered)."""


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """The cursor that continues a newest-first listing after the row (``created_at``, ``row_id``)."""
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_json(cursor: str):
    """The JSON value inside a cursor's base64url text; InvalidCursor for anything else."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR.fullmatch(cursor):
        raise InvalidCursor("bad length or alphabet")
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidCursor("not a cursor") from None


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; InvalidCursor for anything else."""
    value = decode_json(cursor)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise InvalidCursor("not a cursor")
    created, row_id = value
    try:
        created_at = datetime.fromisoformat(created)
    except ValueError:
        raise InvalidCursor("not a cursor") from None
    if created_at.tzinfo is None or not _ROW_ID.fullmatch(row_id):
        raise InvalidCursor("not a cursor")
    return created_at, row_id
