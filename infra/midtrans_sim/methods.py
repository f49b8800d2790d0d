"""Snap's ``enabled_payments`` values and the notification fields each produces. Pure."""

from __future__ import annotations

import random

# value -> (label on the page, payment_type in notifications)
CHANNELS: dict[str, tuple[str, str]] = {
    "credit_card": ("Credit/debit card", "credit_card"),
    "bca_va": ("BCA Virtual Account", "bank_transfer"),
    "echannel": ("Mandiri Bill", "echannel"),
    "bni_va": ("BNI Virtual Account", "bank_transfer"),
    "bri_va": ("BRI Virtual Account", "bank_transfer"),
    "permata_va": ("Permata Virtual Account", "bank_transfer"),
    "cimb_va": ("CIMB Virtual Account", "bank_transfer"),
    "other_va": ("Other bank Virtual Account", "bank_transfer"),
    "gopay": ("GoPay", "gopay"),
    "shopeepay": ("ShopeePay", "shopeepay"),
    "ovo": ("OVO", "ovo"),
    "dana": ("DANA", "dana"),
    "other_qris": ("QRIS", "qris"),
    "indomaret": ("Indomaret", "cstore"),
    "alfamart": ("Alfamart", "cstore"),
    "akulaku": ("Akulaku", "akulaku"),
    "kredivo": ("Kredivo", "kredivo"),
}
ALIASES = {
    "bank_transfer": ["bca_va", "bni_va", "bri_va", "permata_va", "cimb_va", "other_va"],
    "cstore": ["indomaret", "alfamart"],
}


def expand(enabled: list[str] | None) -> list[str]:
    """The concrete channels a Snap request enables (all of them when it names none)."""
    if not enabled:
        return list(CHANNELS)
    out: list[str] = []
    for value in enabled:
        for channel in ALIASES.get(value, [value]):
            if channel not in out:
                out.append(channel)
    return out


def unknown(enabled: list[str]) -> list[str]:
    return [v for v in enabled if v not in CHANNELS and v not in ALIASES]


def method_fields(channel: str, rng: random.Random | None = None) -> dict:
    """The method-specific fields of a notification paid through ``channel``."""
    rng = rng or random.Random()
    digits = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731 - a one-line helper, local to this function
    payment_type = CHANNELS[channel][1]
    if channel in ("bca_va", "bni_va", "bri_va", "cimb_va", "other_va"):
        bank = channel.removesuffix("_va").replace("other", "bca")
        return {
            "payment_type": payment_type,
            "va_numbers": [{"bank": bank, "va_number": digits(11)}],
            "payment_amounts": [],
        }
    if channel == "permata_va":
        return {"payment_type": payment_type, "permata_va_number": digits(16)}
    if channel == "echannel":
        return {"payment_type": payment_type, "bill_key": digits(12), "biller_code": "70012"}
    if channel in ("indomaret", "alfamart"):
        return {"payment_type": payment_type, "store": channel, "payment_code": digits(14)}
    if channel == "credit_card":
        return {
            "payment_type": payment_type,
            "masked_card": f"481111-{digits(4)}",
            "bank": "bni",
            "card_type": "credit",
            "channel_response_code": "00",
            "channel_response_message": "Approved",
            "approval_code": digits(13),
            "eci": "05",
        }
    if channel == "other_qris":
        return {"payment_type": payment_type, "issuer": "gopay", "acquirer": "gopay"}
    return {"payment_type": payment_type}
