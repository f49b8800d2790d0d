"""Opaque cursors for the partner feed: a feed position ``(feed_txid, feed_seq)`` as base64url JSON."""

from __future__ import annotations

import base64
import json

from query_api.routes.cursor import InvalidCursor, decode_json

_TAG = "f1"  # a cursor of another listing (or another version of this one) is refused, not misread
_BIGINT = 2**63  # both positions are PostgreSQL bigints: a larger number would fail in the query, not here


def encode_feed_cursor(feed_txid: int, feed_seq: int) -> str:
    """The cursor that continues the feed after the row at this position."""
    raw = json.dumps([_TAG, feed_txid, feed_seq], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_feed_cursor(cursor: str) -> tuple[int, int]:
    """The feed position a cursor names; InvalidCursor for anything else."""
    value = decode_json(cursor)
    if not (
        isinstance(value, list)
        and len(value) == 3
        and value[0] == _TAG
        and all(type(v) is int and 0 <= v < _BIGINT for v in value[1:])
    ):
        raise InvalidCursor("not a cursor")
    return value[1], value[2]
