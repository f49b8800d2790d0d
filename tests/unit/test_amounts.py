"""Exact amount parsing for wallet command bodies: pure, no infrastructure."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from command_api.payments.amounts import (
    AmountOutOfLimits,
    InvalidJson,
    check_limits,
    loads_exact,
    money_str,
    parse_amount,
)
from command_api.payments.requests import PayRequest


def amount_of(json_text: str) -> Decimal:
    return parse_amount(loads_exact('{"amount": %s}' % json_text)["amount"])


@pytest.mark.parametrize(
    "json_text,expected",
    [
        ('"12345.67"', "12345.67"),
        ("12345.67", "12345.67"),  # a JSON number, read exactly (as a float it would be 12345.670000000000073)
        ("0.1", "0.10"),
        ('"10.5"', "10.50"),
        ("10", "10.00"),
        ("1e2", "100.00"),
        ("1.50e1", "15.00"),
        ("1.000", "1.00"),  # trailing zeros are not extra precision
        ("9999999999999.99", "9999999999999.99"),
        ('"0.01"', "0.01"),
    ],
)
def test_exact_amounts_are_accepted_with_two_places(json_text, expected):
    amount = amount_of(json_text)
    assert isinstance(amount, Decimal)
    assert money_str(amount) == expected


@pytest.mark.parametrize(
    "json_text",
    [
        "1.005",
        '"1.005"',
        "0.001",  # more than 2 places
        "0",
        '"0.00"',
        "-5",
        '"-0.01"',
        "-0",  # not positive
        "10000000000000",
        '"9999999999999.991"',
        "1e400",  # above numeric(15,2)
        "true",
        "false",
        "null",
        "[]",
        "{}",
        '"abc"',
        '""',
        '"NaN"',
        '"Infinity"',
        '"1_000"',
        '" 5"',
        '"5 "',
        '"0x10"',
        '"1,5"',
        '"1E2"',  # a string is digits
        '"' + "1" * 100 + '"',
    ],
)
def test_inexact_or_malformed_amounts_are_refused(json_text):
    with pytest.raises(ValueError):
        amount_of(json_text)


def test_floats_are_refused_even_when_they_look_exact():
    with pytest.raises(ValueError):
        parse_amount(12.5)


@pytest.mark.parametrize(
    "raw", [b"NaN", b'{"amount": Infinity}', b'{"a": -Infinity}', b"{", b"\xff", b'{"amount": "1", "amount": "1000"}']
)
def test_loads_exact_refuses_non_json_constants_garbage_and_duplicate_keys(raw):
    with pytest.raises(InvalidJson):
        loads_exact(raw)


def test_loads_exact_never_produces_floats():
    data = loads_exact(b'{"a": 0.1, "b": [1.5e3, 2], "c": {"d": 12345.67}}')
    assert data == {"a": Decimal("0.1"), "b": [Decimal("1.5E+3"), Decimal(2)], "c": {"d": Decimal("12345.67")}}
    assert isinstance(data["b"][1], Decimal)


@pytest.mark.parametrize(
    "amount,ok", [("0.99", False), ("1.00", True), ("500.00", True), ("1000.00", True), ("1000.01", False)]
)
def test_limits_are_inclusive(amount, ok):
    if ok:
        check_limits(Decimal(amount), Decimal("1.00"), Decimal("1000.00"))
    else:
        with pytest.raises(AmountOutOfLimits, match=r"between 1\.00 and 1000\.00"):
            check_limits(Decimal(amount), Decimal("1.00"), Decimal("1000.00"))


def test_request_bodies_are_strict_and_canonical():
    a = PayRequest.model_validate(loads_exact(b'{"amount": 12.5, "merchant_reference": "m-1"}'))
    b = PayRequest.model_validate(loads_exact(b'{"merchant_reference": "m-1", "amount": "12.50"}'))
    assert a.canonical() == b.canonical()
    assert '"amount":"12.50"' in a.canonical()
    with pytest.raises(ValidationError):
        PayRequest.model_validate({"amount": "1.00", "merchant_reference": "m", "tip": "1.00"})
    with pytest.raises(ValidationError):
        PayRequest.model_validate({"amount": "1.00", "merchant_reference": "m", "description": "x" * 501})
    with pytest.raises(ValidationError):
        PayRequest.model_validate({"amount": "1.00", "merchant_reference": "m" * 256})
    with pytest.raises(ValidationError):
        PayRequest.model_validate({"amount": "1.00", "merchant_reference": Decimal(7)})  # not a string


def test_request_texts_refuse_nul_characters_which_postgresql_cannot_store():
    import pytest as _pytest
    from pydantic import ValidationError

    from command_api.payments.requests import PayRequest

    with _pytest.raises(ValidationError):
        PayRequest.model_validate({"amount": "1.00", "merchant_reference": "m", "description": "a\x00b"})
    with _pytest.raises(ValidationError):
        PayRequest.model_validate({"amount": "1.00", "merchant_reference": "m\x00"})
