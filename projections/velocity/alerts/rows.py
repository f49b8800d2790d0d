"""The velocity alerts' projection as a pure function: a ``VelocityAlert`` in, a ``velocity_alerts`` row out."""

from __future__ import annotations

from schemas.events import VelocityAlert


def row_from_alert(alert: VelocityAlert) -> dict:
    """The ``velocity_alerts`` row for one alert (pure)."""
    return {
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "key_kind": alert.key_kind,
        "key": alert.key,
        "window_start": alert.window_start,
        "window_end": alert.window_end,
        "observed": alert.observed,
        "threshold": alert.threshold,
        "account_id": alert.account_id,
        "transaction_id": alert.transaction_id,
        "event_id": alert.event_id,
        "occurred_at": alert.occurred_at,
    }
