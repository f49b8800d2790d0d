"""Opaque keyset cursors: the (created_at, id) of the last row a page showed, as base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

MAX_CURSOR_LENGTH = 200


class InvalidCursor(ValueError):
    """The cursor was not made by :func:`encode_cursor` (or was altered)."""


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """The cursor that continues a newest-first listing after the row (``created_at``, ``row_id``)."""
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; InvalidCursor for anything else."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("bad length")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidCursor("not a cursor") from None
    if created_at.tzinfo is None or not isinstance(row_id, str) or not 0 < len(row_id) <= 36:
        raise InvalidCursor("not a cursor")
    return created_at, row_id
