"""HTTP notifications to the merchant, retried as Midtrans documents (delays compressed in development).

Midtrans's policy ("Responding HTTP Notification from Midtrans"), by the receiver's answer:

- 2xx: delivered, no retry.
- 500: retried once. 503: four times. 400 or 404: twice.
- 301/302/303: not followed and not retried (the merchant should fix the URL instead).
- 307/308: followed with the same POST and body, at most 5 redirects.
- anything else (other codes, no answer within 15 s): retried five times.

Retries come about 2 min, 10 min, 30 min, 1.5 h and 3.5 h after the failure, each with a random shift
earlier ("the first retry might be 33 s after"). How many are allowed is decided by the latest answer:
an attempt is retried while the retries made so far are fewer than that answer allows. Each URL (the
configured one, or ``X-Override-Notification``'s, plus ``X-Append-Notification``'s) is delivered on its own.
Knobs make deliveries duplicate, out of order, late or (``notifications`` off) not happen at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

log = logging.getLogger(__name__)

# Midtrans's schedule: about 2 min, 10 min, 30 min, 1.5 h, 3.5 h.
MIDTRANS_RETRY_DELAYS = (120.0, 600.0, 1800.0, 5400.0, 12600.0)
COMPRESSED = 1 / 600  # development: 0.2 s, 1 s, 3 s, 9 s, 21 s
NOT_FOLLOWED = {301, 302, 303}
FOLLOWED = {307, 308}
MAX_REDIRECTS = 5
TIMEOUT_SECONDS = 15.0
RETRIES_BY_ANSWER = {500: 1, 503: 4, 400: 2, 404: 2}
OTHER_FAILURE_RETRIES = 5


def retries_allowed(status: int | None) -> int:
    """How many retries Midtrans makes after an answer of ``status`` (None: no answer)."""
    if status is not None and (200 <= status < 300 or status in NOT_FOLLOWED):
        return 0
    return RETRIES_BY_ANSWER.get(status, OTHER_FAILURE_RETRIES) if status is not None else OTHER_FAILURE_RETRIES


@dataclass
class Knobs:
    """Test knobs, changed at run time through ``POST /_sim/knobs``."""

    notifications: bool = True  # send notifications at all (off: the merchant hears nothing, like an outage)
    duplicates: int = 0  # extra copies of every notification
    out_of_order: bool = False  # send a batch's notifications last first (settlement before pending)
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
    url: str = ""
    redirects: int = 0


@dataclass
class Notifier:
    webhook_url: str
    retry_delays: tuple[float, ...]
    knobs: Knobs
    jitter: bool = True
    deliveries: list[Delivery] = field(default_factory=list)
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _latest: dict[tuple[str, str], asyncio.Task] = field(default_factory=dict)  # an order's last batch, per URL
    _client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._client is not None:
            await self._client.aclose()

    @property
    def busy(self) -> bool:
        """Whether a delivery is running or a retry is due."""
        return bool(self._tasks)

    def send(self, payloads: list[dict], urls: tuple[str, ...] | None = None) -> None:
        """Deliver ``payloads`` (one order's statuses, in order) to ``urls`` (default: the webhook) in the
        background."""
        if not payloads or not self.knobs.notifications:
            return
        ordered = list(reversed(payloads)) if self.knobs.out_of_order else list(payloads)
        copies = [p for p in ordered for _ in range(1 + max(0, self.knobs.duplicates))]
        order_id = payloads[0]["order_id"]
        for url in urls or (self.webhook_url,):
            # An order's batches go out in the order they happened (pending before settlement); only retries,
            # and the out_of_order knob, deliver them otherwise.
            before = self._latest.get((order_id, url))
            task = self._spawn(self._send_all(url, copies, self.knobs.notify_delay_seconds, before))
            self._latest[(order_id, url)] = task
            task.add_done_callback(functools.partial(self._forget, (order_id, url)))

    def _forget(self, key: tuple[str, str], task: asyncio.Task) -> None:
        if self._latest.get(key) is task:
            del self._latest[key]

    async def idle(self, timeout: float = 30) -> None:
        """Wait until nothing is being delivered (tests)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send_all(self, url: str, payloads: list[dict], delay: float, before: asyncio.Task | None) -> None:
        if before is not None and not before.done():
            with contextlib.suppress(Exception):  # its failure is its own; a cancellation (shutdown) is ours too
                await asyncio.shield(before)
        if delay:
            await asyncio.sleep(delay)
        for payload in payloads:
            status = await self._attempt(url, payload, 1)
            if retries_allowed(status):
                self._spawn(self._retry(url, payload, status))

    async def _retry(self, url: str, payload: dict, status: int | None) -> None:
        made = 0
        while made < min(retries_allowed(status), len(self.retry_delays)):
            delay = self.retry_delays[made]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0) if self.jitter else delay)
            made += 1
            status = await self._attempt(url, payload, made + 1)
        if retries_allowed(status) > made:
            log.warning("gave up notifying %s after %d attempts", payload["order_id"], made + 1)

    async def _attempt(self, url: str, payload: dict, attempt: int) -> int | None:
        """One delivery (following 307/308): the final HTTP status, or None when nothing answered."""
        assert self._client is not None, "start() opens the client before the app sends anything"
        status, target, redirects = None, url, 0
        try:
            while True:
                reply = await self._client.post(
                    target,
                    content=json.dumps(payload),
                    headers={"content-type": "application/json", "accept": "application/json"},
                )
                status = reply.status_code
                location = reply.headers.get("location")
                if status not in FOLLOWED or not location or redirects >= MAX_REDIRECTS:
                    break
                target, redirects = str(reply.url.join(location)), redirects + 1
        except httpx.HTTPError as exc:
            status = None
            log.info("notification to %s failed: %s", target, exc.__class__.__name__)
        self.deliveries.append(
            Delivery(
                payload["order_id"],
                payload["transaction_status"],
                attempt,
                status,
                datetime.now(UTC).isoformat(),
                url,
                redirects,
            )
        )
        return status
