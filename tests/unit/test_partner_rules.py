"""Pure partner rules: key refusals, masking, rate-limit headers, feed cursors, access-log events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projections.access_logs.rows import row_from_event
from query_api.feed_cursor import decode_feed_cursor, encode_feed_cursor
from query_api.partners.access_log import access_event
from query_api.partners.keys import PartnerKey, mask_email, mask_phone
from query_api.partners.rate_limit import rate_limit_headers
from query_api.routes.cursor import InvalidCursor, encode_cursor
from schemas.access_logs import AccessLogged
from schemas.base import decode, encode

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def key(**changes) -> PartnerKey:
    base = dict(
        id="k",
        external_service_id="s",
        permissions=frozenset({"READ_TRANSACTIONS"}),
        rate_limit_count=100,
        rate_limit_unit="minute",
        expires_at=None,
        is_active=True,
        revoked_at=None,
        service_active=True,
    )
    return PartnerKey(**(base | changes))


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({}, None),
        ({"revoked_at": NOW}, "api_key_revoked"),
        ({"is_active": False}, "api_key_inactive"),
        ({"service_active": False}, "service_inactive"),
        ({"expires_at": NOW}, "api_key_expired"),
        ({"expires_at": NOW + timedelta(seconds=1)}, None),
        ({"previous_expires_at": NOW - timedelta(seconds=1)}, "api_key_rotated"),
        ({"previous_expires_at": NOW + timedelta(hours=1)}, None),
    ],
)
def test_key_refusals(changes, reason):
    assert key(**changes).refusal(NOW) == reason


def test_permissions_are_checked_one_by_one():
    assert key().allows("READ_TRANSACTIONS") and not key().allows("READ_REPORTS")


def test_partners_see_masked_contact_details():
    assert mask_email("alice@demo.onegate.id") == "a***@demo.onegate.id"
    assert mask_phone("+6281200000002") == "+62812****0002"
    assert mask_phone("12345") == "*****" and mask_email("nonsense") is None and mask_phone(None) is None


def test_rate_limit_headers_round_the_reset_up():
    headers = rate_limit_headers(100, 7, reset_at=1000.2, window_seconds=60, now=990.0)
    assert headers == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "7",
        "RateLimit-Reset": "11",
        "RateLimit-Policy": "100;w=60",
    }


def test_feed_cursors_round_trip_and_refuse_other_cursors():
    assert decode_feed_cursor(encode_feed_cursor(123, 456)) == (123, 456)
    for bad in ("", "x" * 300, "bm9wZQ", encode_cursor(NOW, "row-id")):
        with pytest.raises(InvalidCursor):
            decode_feed_cursor(bad)


def test_access_log_events_round_trip_to_rows():
    event = access_event("k", "s", "/api/transaction/histories", "GET", "203.0.113.9", "curl/8", 429, at=NOW)
    assert decode(encode(event)) == event and isinstance(event, AccessLogged)
    row = row_from_event(event)
    assert row["id"] == event.event_id and row["response_status"] == 429 and row["created_at"] == NOW
    assert access_event("k", "s", "/x", "HEAD", None, None, 200) is None  # not in http_method_enum
