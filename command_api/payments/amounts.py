"""How a request body may spell an amount, and the per-transaction limits. Pure: no I/O, no settings.

What an amount is (exact to the cent, positive, within numeric(15,2)) is :func:`schemas.money.positive_amount`,
the one money parser; this module adds only the body's grammar. A JSON number is only accepted if it converts
to the amount *exactly*: bodies are decoded with :func:`loads_exact`, so ``12345.67`` arrives as
``Decimal("12345.67")`` and never passes through a float.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from schemas.money import money_str, positive_amount

__all__ = [
    "AMOUNT_PATTERN",
    "InvalidJson",
    "AmountOutOfLimits",
    "loads_exact",
    "parse_amount",
    "check_limits",
    "money_str",
]

# The one spelling of an amount in a JSON string, as the OpenAPI documents publish it: ASCII digits, no sign,
# exponent, leading zero or trailing dot, at most 2 places, above zero and within numeric(15,2). Decimal()
# alone would also take "1e2", "+1", "1.", " 5", "1_000", "NaN" and Arabic-Indic or full-width digits.
AMOUNT_PATTERN = r"^(?:[1-9][0-9]{0,12}(?:\.[0-9]{1,2})?|0\.(?:[1-9][0-9]?|0[1-9]))$"
_DECIMAL_TEXT = re.compile(AMOUNT_PATTERN)


class InvalidJson(ValueError):
    """The body is not a JSON document we accept."""


class AmountOutOfLimits(ValueError):
    """A valid amount outside the per-transaction limits."""

    def __init__(self, amount: Decimal, minimum: Decimal, maximum: Decimal):
        super().__init__(f"amount must be between {money_str(minimum)} and {money_str(maximum)} IDR")
        self.amount, self.minimum, self.maximum = amount, minimum, maximum


def _refuse_constant(name: str):
    raise InvalidJson(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            # {"amount": "1", "amount": "1000"} means whatever the last parser to read it decides.
            raise InvalidJson(f"duplicate key {key!r}")
        result[key] = value
    return result


def loads_exact(raw: bytes | str) -> Any:
    """JSON with every number as a Decimal (never a float), no NaN/Infinity, no duplicate keys."""
    try:
        return json.loads(
            raw,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except InvalidJson:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidJson("body is not valid JSON") from exc


def parse_amount(value: Any) -> Decimal:
    """A positive amount with at most 2 places, from a JSON string or an exact JSON number."""
    if isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):  # fullmatch: "$" alone would let "5\n" through
            raise ValueError('amount must be written like "12345.67": digits, at most 2 decimal places')
    elif isinstance(value, bool) or not isinstance(value, int | Decimal):
        # bool, None, float (a float has already lost the exact value), lists, objects
        raise ValueError("amount must be a JSON string or number")
    return positive_amount(value)


def check_limits(amount: Decimal, minimum: Decimal, maximum: Decimal) -> None:
    """Raise AmountOutOfLimits unless ``minimum <= amount <= maximum``."""
    if not minimum <= amount <= maximum:
        raise AmountOutOfLimits(amount, minimum, maximum)
