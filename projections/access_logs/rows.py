"""The access-log projection as a pure function: an ``AccessLogged`` event in, an ``api_access_logs`` row out."""

from __future__ import annotations

from schemas.access_logs import AccessLogged


def row_from_event(event: AccessLogged) -> dict:
    """The ``api_access_logs`` row for one event (pure)."""
    return {
        "id": event.event_id,
        "external_service_id": event.external_service_id,
        "api_key_id": event.api_key_id,
        "endpoint": event.endpoint,
        "http_method": event.http_method,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "response_status": event.response_status,
        "created_at": event.occurred_at,
    }
