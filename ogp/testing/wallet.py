"""Wallet users as tests drive them over HTTP: sign up, wait for the ledger, check balances."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import httpx


def signed_up(commands: httpx.Client, name: str) -> dict:
    """Register and log in a fresh user; returns its fields, ids and an ``auth`` header."""
    n = uuid.uuid4().int % 10**8
    user = {"username": f"{name}{n}", "email": f"{name}{n}@example.com", "phone": f"0815{n:08d}",
            "password": f"{name} secret {n}"}
    registered = commands.post("/api/auth/register", json=user).json()
    token = commands.post("/api/auth/login", json={"username": user["username"], "password": user["password"]}
                          ).json()["access_token"]
    return {**user, **registered, "auth": {"Authorization": f"Bearer {token}"}}


def check(condition: bool) -> None:
    assert condition


def has_balance(queries: httpx.Client, user: dict, amount: str) -> None:
    assert Decimal(queries.get("/api/payment/balance", headers=user["auth"]).json()["balance"]) == Decimal(amount)


def eventually(assertion, timeout: float = 60):
    """Retry ``assertion`` (a callable that asserts) until it passes or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return assertion()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
