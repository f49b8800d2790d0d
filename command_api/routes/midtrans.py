"""Midtrans: wallet top-ups, order payments and the payment-status webhook (to be built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["payments"])
