"""Request field types both APIs share, each documented in OpenAPI exactly as it is parsed."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, WithJsonSchema


def _json_integer(value: object) -> object:
    # pydantic alone would also take "2" and true; JSON Schema's integer is a number, 2.0 included (a body
    # read by loads_exact brings it as a Decimal).
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError("must be a JSON integer")
    return value


# Marks an int field as a JSON integer: what ``"type": "integer"`` admits, and nothing else. It goes after
# the field's Field(ge=..., le=...), or pydantic cannot publish those bounds as minimum and maximum.
JSON_INTEGER = BeforeValidator(_json_integer)

_DATE_AND_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _date_and_time(value: object) -> object:
    # pydantic alone would also read 0.5 or "1700000000" as seconds since 1970: not a moment anyone writes.
    if not isinstance(value, str) or not _DATE_AND_TIME.match(value):
        raise ValueError("must be an ISO 8601 date and time, such as 2026-04-01T08:00:00Z")
    return value


Moment = Annotated[
    datetime,
    BeforeValidator(_date_and_time),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "examples": ["2026-04-01T08:00:00Z"],
            "description": "ISO 8601 date and time; without an offset it is read as UTC",
        }
    ),
]
AwareMoment = Annotated[
    AwareDatetime,
    BeforeValidator(_date_and_time),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "examples": ["2026-04-01T08:00:00Z"],
            "description": "ISO 8601 date and time with an offset (Z or ±hh:mm)",
        }
    ),
]
