"""Wallet users as tests drive them over HTTP: sign up, wait for the ledger, check balances."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx

from tests.support.waiting import eventually

__all__ = ["check", "eventually", "has_balance", "signed_up"]  # eventually: kept importable from here


def signed_up(commands: httpx.Client, name: str) -> dict:
    """Register and log in a fresh user; returns its fields, ids and an ``auth`` header."""
    n = uuid.uuid4().int % 10**8
    user = {
        "username": f"{name}{n}",
        "email": f"{name}{n}@example.com",
        "phone": f"0815{n:08d}",
        "password": f"{name} secret {n}",
    }
    registered = commands.post("/api/auth/register", json=user).json()
    token = commands.post("/api/auth/login", json={"username": user["username"], "password": user["password"]}).json()[
        "access_token"
    ]
    return {**user, **registered, "auth": {"Authorization": f"Bearer {token}"}}


def check(condition: bool) -> None:
    assert condition


def has_balance(queries: httpx.Client, user: dict, amount: str) -> None:
    assert Decimal(queries.get("/api/payment/balance", headers=user["auth"]).json()["balance"]) == Decimal(amount)
