"""Partner API (X-API-Key): transaction histories and reports (to be built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["partners"])
