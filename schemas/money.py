"""Money on the wire: a Decimal with exactly two places, carried as a JSON string, never a float.

The one money parser: :func:`to_money` (exact to the cent) and :func:`positive_amount` (an amount of a
transaction) serve the messages here and the command API's request bodies, which add only how a body may
spell an amount (``command_api.payments.amounts``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Final

from pydantic import BeforeValidator, PlainSerializer

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999999.99")  # the schema's numeric(15,2)
CURRENCY: Final = "IDR"


def to_money(value) -> Decimal:
    """Exact conversion to 2 places; refuses floats, NaN, infinities and anything with more precision."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("amounts must be strings or integers, never floats")
    try:
        d = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError("not a decimal amount") from None
    if not d.is_finite():
        raise ValueError("amount must be finite")
    try:
        q = d.quantize(CENT)
    except InvalidOperation:
        raise ValueError("amount out of range") from None
    if q != d:
        raise ValueError("amount has more than 2 decimal places")
    return q


def positive_amount(value) -> Decimal:
    """An amount of a transaction: exact to the cent, above zero and within numeric(15,2)."""
    d = to_money(value)
    if d <= 0:
        raise ValueError("amount must be positive")
    if d > MAX_AMOUNT:
        raise ValueError(f"amount must be at most {MAX_AMOUNT}")
    return d


def any_money(value) -> Decimal:
    d = to_money(value)
    if abs(d) > Decimal("999999999999999999.99"):
        raise ValueError("amount out of range")
    return d


def money_str(d: Decimal) -> str:
    return f"{d:.2f}"


Amount = Annotated[Decimal, BeforeValidator(positive_amount), PlainSerializer(money_str, return_type=str)]
"""A positive amount (0.01 .. 9,999,999,999,999.99), 2 places."""

Balance = Annotated[Decimal, BeforeValidator(any_money), PlainSerializer(money_str, return_type=str)]
"""A balance or signed amount, 2 places."""


# Bank Indonesia's monthly e-money limits count Indonesian calendar months: Jakarta time (WIB, UTC+7, no DST).
WIB = timezone(timedelta(hours=7), "WIB")


def regulatory_month(moment: datetime) -> date:
    """The first day of ``moment``'s calendar month in Jakarta."""
    return moment.astimezone(WIB).date().replace(day=1)
