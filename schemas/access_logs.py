"""Access-log events: one per partner request made with a known API key. Keyed on Kafka by the key id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Message

__all__ = ["AccessLogged"]

HttpMethod = Literal["GET", "POST", "PUT", "DELETE", "PATCH"]


class AccessLogged(Message):
    """A partner request and its answer; the projector writes it to ``api_access_logs`` (id = event_id)."""

    TYPE = "AccessLogged"
    event_id: Annotated[str, Field(min_length=36, max_length=36)]  # a UUID: the row's primary key
    api_key_id: Annotated[str, Field(max_length=36)]
    external_service_id: Annotated[str, Field(max_length=36)]
    endpoint: Annotated[str, Field(max_length=255)]
    http_method: HttpMethod
    ip_address: Annotated[str, Field(max_length=64)] | None = None
    user_agent: Annotated[str, Field(max_length=512)] | None = None
    response_status: Annotated[int, Field(ge=100, le=599)]
    occurred_at: datetime
