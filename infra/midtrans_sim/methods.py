"""Snap's ``enabled_payments`` values and the fields each puts in charge answers, statuses and notifications.

Shaped after Midtrans's documented samples: ``va_numbers`` (BCA, BNI, BRI, CIMB), ``permata_va_number``,
``bill_key``/``biller_code`` (Mandiri bill), ``store``/``payment_code`` and, once paid, ``approval_code``
(convenience stores), ``actions`` while an e-wallet or QRIS payment waits, ``payment_amounts`` once a BNI VA
is paid, ``issuer``/``acquirer``/``transaction_type`` for QRIS, and card fields with an 8+4 ``masked_card``.
"Other banks" is not a bank of its own: Snap shows the merchant's open-loop VA (BNI or Permata) under that
name, and the notification is that bank's. Pure.
"""

from __future__ import annotations

import random
from typing import Literal

# value -> (label on the page, payment_type in notifications)
CHANNELS: dict[str, tuple[str, str]] = {
    "credit_card": ("Credit/debit card", "credit_card"),
    "bca_va": ("BCA Virtual Account", "bank_transfer"),
    "echannel": ("Mandiri Bill", "echannel"),
    "bni_va": ("BNI Virtual Account", "bank_transfer"),
    "bri_va": ("BRI Virtual Account", "bank_transfer"),
    "permata_va": ("Permata Virtual Account", "bank_transfer"),
    "cimb_va": ("CIMB Virtual Account", "bank_transfer"),
    "other_va": ("Other banks (ATM Bersama, Prima, Alto)", "bank_transfer"),
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
# Payment types Midtrans refunds (Refund API page); the others are refunded outside Midtrans, if at all.
REFUNDABLE = {"credit_card", "gopay", "shopeepay", "dana", "ovo", "qris", "kredivo", "akulaku"}
DIRECT_REFUNDABLE = {"credit_card", "gopay", "shopeepay", "qris", "akulaku", "kredivo"}
# Fields that only describe how to pay a pending transaction: gone once it is paid or closed.
PENDING_ONLY = ("actions", "qr_string")

OtherVaBank = Literal["bni", "permata"]


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
    """The values of ``enabled`` Snap does not know."""
    return [v for v in enabled if v not in CHANNELS and v not in ALIASES]


def payment_type(channel: str) -> str:
    """The ``payment_type`` a channel's notifications carry."""
    return CHANNELS[channel][1]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _actions(base_url: str, transaction_id: str, channel: str) -> list[dict]:
    core = f"{base_url}/v2"
    qr = {
        "name": "generate-qr-code",
        "method": "GET",
        "url": f"{core}/{payment_type(channel)}/{transaction_id}/qr-code",
    }
    deeplink = {"name": "deeplink-redirect", "method": "GET", "url": f"{base_url}/_sim/deeplink/{transaction_id}"}
    status = {"name": "get-status", "method": "GET", "url": f"{core}/{transaction_id}/status"}
    cancel = {"name": "cancel", "method": "POST", "url": f"{core}/{transaction_id}/cancel"}
    if channel == "gopay":
        return [qr, deeplink, status, cancel]
    if channel == "other_qris":
        return [qr]
    return [deeplink]


def pending_fields(
    channel: str,
    transaction_id: str,
    base_url: str,
    other_va_bank: OtherVaBank = "bni",
    rng: random.Random | None = None,
) -> dict:
    """What a transaction by ``channel`` carries from its creation: how to pay it."""
    rng = rng or random.Random()
    fields: dict = {"payment_type": payment_type(channel)}
    bank = other_va_bank if channel == "other_va" else channel.removesuffix("_va")
    if channel in ("bca_va", "bni_va", "bri_va", "cimb_va") or (channel == "other_va" and bank == "bni"):
        fields["va_numbers"] = [{"bank": bank, "va_number": _digits(rng, 16 if bank == "bni" else 11)}]
    elif channel in ("permata_va", "other_va"):
        fields["permata_va_number"] = _digits(rng, 16)
    elif channel == "echannel":
        fields.update(bill_key=_digits(rng, 12), biller_code="70012")
    elif channel in ("indomaret", "alfamart"):
        fields.update(store=channel, payment_code=_digits(rng, 14))
    elif channel in ("gopay", "shopeepay", "dana", "other_qris"):
        fields["actions"] = _actions(base_url, transaction_id, channel)
        if channel == "other_qris":
            fields.update(acquirer="gopay", qr_string=f"00020101021226{_digits(rng, 40)}5802ID6304{_digits(rng, 4)}")
    elif channel == "credit_card":
        fields.update(
            masked_card=f"48111111-{_digits(rng, 4)}",  # first 8 and last 4 digits, as Midtrans masks today
            bank="bni",
            card_type="credit",
            eci="05",
        )
    return fields


def paid_fields(channel: str, fields: dict, paid_at: str, amount: str, rng: random.Random | None = None) -> dict:
    """What a payment by ``channel`` adds once it is made (``fields``: what the transaction had)."""
    rng = rng or random.Random()
    added: dict = {}
    if any(va.get("bank") == "bni" for va in fields.get("va_numbers", [])):
        added["payment_amounts"] = [{"paid_at": paid_at, "amount": amount}]
    if channel in ("indomaret", "alfamart"):
        added["approval_code"] = _digits(rng, 20)
    if channel == "echannel":
        added["approval_code"] = _digits(rng, 9)
    if channel == "other_qris":
        issuer = rng.choice(["gopay", "shopeepay", "dana", "ovo", "bca"])
        added.update(
            issuer=issuer,
            transaction_type="on-us" if issuer == fields.get("acquirer") else "off-us",
            merchant_cross_reference_id=_uuid(rng),
        )
    if channel == "credit_card":
        added.update(approval_code=_digits(rng, 13), channel_response_code="00", channel_response_message="Approved")
    return added


def _uuid(rng: random.Random) -> str:
    h = "".join(rng.choice("0123456789abcdef") for _ in range(32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
