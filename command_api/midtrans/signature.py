"""Midtrans's notification signature. Pure: no I/O, no settings.

``signature_key = sha512_hex(order_id + status_code + gross_amount + server_key)``: a plain concatenation of
the payload's own strings (``"150000.00"``, never a re-formatted number), not an HMAC.
"""

from __future__ import annotations

import hashlib
import hmac


def signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    """The signature Midtrans puts in ``signature_key`` for these exact strings."""
    return hashlib.sha512(f"{order_id}{status_code}{gross_amount}{server_key}".encode()).hexdigest()


def verify(payload: dict, server_key: str) -> bool:
    """True when ``payload['signature_key']`` matches its own order_id, status_code and gross_amount."""
    values = [payload.get(name) for name in ("order_id", "status_code", "gross_amount", "signature_key")]
    fields = [value for value in values if isinstance(value, str) and value]
    if len(fields) != len(values):  # one is missing, empty or not a string
        return False
    order_id, status_code, gross_amount, given = fields
    expected = signature(order_id, status_code, gross_amount, server_key)
    # Constant time; lower-case both sides (hex digests from other tools may be upper case).
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("ascii", "replace"))
