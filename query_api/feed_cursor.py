"""Opaque cursors for the partner feed: a feed position ``(feed_txid, feed_seq)`` as base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json

from query_api.routes.cursor import MAX_CURSOR_LENGTH, InvalidCursor

_TAG = "f1"  # a cursor of another listing (or another version of this one) is refused, not misread


def encode_feed_cursor(feed_txid: int, feed_seq: int) -> str:
    """The cursor that continues the feed after the row at this position."""
    raw = json.dumps([_TAG, feed_txid, feed_seq], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_feed_cursor(cursor: str) -> tuple[int, int]:
    """The feed position a cursor names; InvalidCursor for anything else."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("bad length")
    try:
        tag, txid, seq = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise InvalidCursor("not a cursor") from None
    if tag != _TAG or type(txid) is not int or type(seq) is not int or txid < 0 or seq < 0:
        raise InvalidCursor("not a cursor")
    return txid, seq
