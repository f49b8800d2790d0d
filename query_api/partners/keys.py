"""What an API key may do, as pure rules over a snapshot of its row (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class PartnerKey:
    """One api_keys row (and its service's flag) as the query API needs it."""

    id: str
    external_service_id: str
    permissions: frozenset[str]
    rate_limit_count: int | None
    rate_limit_unit: str
    expires_at: datetime | None
    is_active: bool
    revoked_at: datetime | None
    service_active: bool
    # Set when the presented secret is the rotated-out one: it works until then.
    previous_expires_at: datetime | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why this key may not be used at ``now`` (a stable error code), or None when it may."""
        if self.revoked_at is not None:
            return "api_key_revoked"
        if not self.is_active:
            return "api_key_inactive"
        if not self.service_active:
            return "service_inactive"
        if self.expires_at is not None and self.expires_at <= now:
            return "api_key_expired"
        if self.previous_expires_at is not None and self.previous_expires_at <= now:
            return "api_key_rotated"
        return None

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


def mask_email(email: str | None) -> str | None:
    """``alice@demo.onegate.id`` → ``a***@demo.onegate.id``: enough to tell users apart, not to contact them."""
    if not email or "@" not in email:
        return None
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str | None:
    """``+6281200000002`` → ``+62812*****0002``: operator prefix and last four digits only."""
    if not phone:
        return None
    if len(phone) <= 8:
        return "*" * len(phone)
    return phone[:6] + "*" * (len(phone) - 10) + phone[-4:]
