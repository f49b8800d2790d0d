"""The velocity alerts projector: ``ogp.alerts.v1`` → ``velocity_alerts``. Run:
``python -m projections.velocity.alerts``.

A projector of independent facts (``projections.facts``), like the access logs: the monitor may send an alert
more than once (after a crash, with the same id), and a batch may come again after a crash here; either way
the duplicate is a no-op, so the table holds exactly one row per breach.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import velocity_alerts
from ogp.settings import Settings
from ogp.worker import Heartbeat
from projections.facts import FactProjector, Facts
from projections.velocity.alerts.rows import row_from_alert
from schemas.events import VelocityAlert
from schemas.topics import ALERTS

GROUP_ID = "projector-velocity-alerts"
ALERT_FACTS = Facts(velocity_alerts, "alert_id", VelocityAlert, row_from_alert, "velocity alert")


class VelocityAlertProjector(FactProjector):
    """Consumes velocity alerts into ``velocity_alerts`` until ``stop()``."""

    name = "velocity-alerts"
    facts = ALERT_FACTS

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = GROUP_ID,
        topic: str = ALERTS,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        super().__init__(settings, group_id=group_id, topic=topic, engine=engine, heartbeat=heartbeat)
