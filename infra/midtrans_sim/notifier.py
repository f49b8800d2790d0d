"""HTTP notifications to the merchant's webhook, retried like Midtrans (delays compressed in development).

Any 2xx stops the retries; 301/302/303 are neither followed nor retried; anything else (or no answer
within 15 s) is retried up to 5 times. Knobs make deliveries duplicate, out of order or late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

log = logging.getLogger(__name__)

# Midtrans's schedule: about 2 min, 10 min, 30 min, 1.5 h, 3.5 h.
MIDTRANS_RETRY_DELAYS = (120.0, 600.0, 1800.0, 5400.0, 12600.0)
COMPRESSED = 1 / 600  # development: 0.2 s, 1 s, 3 s, 9 s, 21 s
NOT_RETRIED = {301, 302, 303}


@dataclass
class Knobs:
    """Test knobs, changed at run time through ``POST /_sim/knobs``."""

    duplicates: int = 0  # extra copies of every notification
    out_of_order: bool = False  # send a sequence's notifications last first (settlement before pending)
    notify_delay_seconds: float = 0.0  # wait before the first attempt
    api_delay_seconds: float = 0.0  # Snap and Core API calls answer this late
    api_fail_500: bool = False  # Snap and Core API calls answer 500
    status_fail_500: bool = False  # only the Core API's status call answers 500 (a partial outage)


@dataclass
class Delivery:
    order_id: str
    transaction_status: str
    attempt: int
    http_status: int | None
    at: str


@dataclass
class Notifier:
    webhook_url: str
    retry_delays: tuple[float, ...]
    knobs: Knobs
    deliveries: list[Delivery] = field(default_factory=list)
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=15.0, follow_redirects=False)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._client is not None:
            await self._client.aclose()

    def send(self, payloads: list[dict]) -> None:
        """Deliver ``payloads`` (one order's statuses, in order) in the background."""
        ordered = list(reversed(payloads)) if self.knobs.out_of_order else list(payloads)
        copies = [p for p in ordered for _ in range(1 + max(0, self.knobs.duplicates))]
        task = asyncio.get_running_loop().create_task(self._send_all(copies, self.knobs.notify_delay_seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self, timeout: float = 30) -> None:
        """Wait until nothing is being delivered (tests)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    async def _send_all(self, payloads: list[dict], delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        for payload in payloads:
            if not await self._attempt(payload, 1):
                task = asyncio.get_running_loop().create_task(self._retry(payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _retry(self, payload: dict) -> None:
        for attempt, delay in enumerate(self.retry_delays, start=2):
            await asyncio.sleep(delay)
            if await self._attempt(payload, attempt):
                return
        log.warning("gave up notifying %s after %d attempts", payload["order_id"], len(self.retry_delays) + 1)

    async def _attempt(self, payload: dict, attempt: int) -> bool:
        """One POST; True when no retry is due (2xx, or a redirect Midtrans does not retry)."""
        status = None
        assert self._client is not None, "start() opens the client before the app sends anything"
        try:
            reply = await self._client.post(
                self.webhook_url,
                content=json.dumps(payload),
                headers={"content-type": "application/json", "user-agent": "Veritrans"},
            )
            status = reply.status_code
        except httpx.HTTPError as exc:
            log.info("notification to %s failed: %s", self.webhook_url, exc.__class__.__name__)
        self.deliveries.append(
            Delivery(payload["order_id"], payload["transaction_status"], attempt, status, datetime.now(UTC).isoformat())
        )
        return status is not None and (200 <= status < 300 or status in NOT_RETRIED)
