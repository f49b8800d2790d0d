"""Driving the Midtrans simulator the way the world drives Midtrans: the customer picks a method and pays
later, the clock moves, the merchant's webhook is down. A thin client of the simulator's ``/_sim`` API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from tests.support.waiting import wait_until


class SimulatorControl:
    """What happens at Midtrans that is neither our call nor our webhook."""

    def __init__(self, client: httpx.Client):
        self.client = client

    def choose(self, order_id: str, channel: str) -> dict:
        """The customer picks ``channel`` on the payment page: the transaction is made (pending for all but cards)."""
        reply = self.client.post(f"/_sim/orders/{order_id}/choose", json={"channel": channel})
        reply.raise_for_status()
        return reply.json()

    def pay(self, order_id: str, channel: str | None = None, outcome: str = "pay") -> dict:
        """The customer pays (at the ATM, the store, in the app, by card); with ``channel`` they pick it first.
        ``outcome``: pay, challenge (a card the fraud check questions), decline, expire."""
        body: dict = {"outcome": outcome}
        if channel:
            body["channel"] = channel
        reply = self.client.post(f"/_sim/orders/{order_id}/pay", json=body)
        reply.raise_for_status()
        return reply.json()

    def reverse(self, order_id: str) -> dict:
        """The bank reverses a settled payment (settlement → deny)."""
        reply = self.client.post(f"/_sim/orders/{order_id}/reverse")
        reply.raise_for_status()
        return reply.json()

    def advance_clock(self, seconds: float) -> None:
        """Move Midtrans's clock forward: what falls due (expiry, card settlement) happens now."""
        self.client.post("/_sim/clock", json={"advance_seconds": seconds}).raise_for_status()

    def knobs(self, **values) -> dict:
        """Set knobs (notifications, duplicates, out_of_order, notify_delay_seconds, api_delay_seconds, ...)."""
        reply = self.client.post("/_sim/knobs", json=values)
        reply.raise_for_status()
        return reply.json()

    @contextlib.contextmanager
    def knobs_set(self, **values) -> Iterator[None]:
        """Knobs set for the ``with`` block, restored after it."""
        before = self.client.get("/_sim/knobs").json()
        self.knobs(**values)
        try:
            yield
        finally:
            self.knobs(**{k: before[k] for k in values})

    def notifications_suppressed(self) -> contextlib.AbstractContextManager[None]:
        """Midtrans's notifications do not reach anyone in the ``with`` block (they are lost, not delayed)."""
        return self.knobs_set(notifications=False)

    def deliveries(self, order_id: str | None = None) -> list[dict]:
        """Notification attempts (of ``order_id``), in order."""
        return [d for d in self.client.get("/_sim/deliveries").json() if order_id in (None, d["order_id"])]

    def statuses_delivered(self, order_id: str) -> list[str]:
        """The transaction statuses notified for ``order_id``, first attempts only."""
        return [d["transaction_status"] for d in self.deliveries(order_id) if d["attempt"] == 1]

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until no notification is being delivered or due for a retry."""
        wait_until(lambda: not self.client.get("/_sim/notifier").json()["busy"], timeout, "the simulator was idle")
