"""Payment methods: our enum values and what Midtrans calls them. Pure."""

from __future__ import annotations

from enum import StrEnum


class PaymentMethod(StrEnum):
    """The wallet's payment methods (``payment_method_enum``): the document's two plus Midtrans's others."""

    GOPAY = "GOPAY"
    SHOPEE_PAY = "SHOPEE_PAY"
    CREDIT_CARD = "CREDIT_CARD"
    BANK_TRANSFER = "BANK_TRANSFER"  # any virtual account: the customer picks the bank on the page
    BCA_VA = "BCA_VA"
    MANDIRI_BILL = "MANDIRI_BILL"
    BNI_VA = "BNI_VA"
    BRI_VA = "BRI_VA"
    PERMATA_VA = "PERMATA_VA"
    OVO = "OVO"
    DANA = "DANA"
    QRIS = "QRIS"
    INDOMARET = "INDOMARET"
    ALFAMART = "ALFAMART"


# Snap's ``enabled_payments`` for each method.
ENABLED_PAYMENTS: dict[PaymentMethod, list[str]] = {
    PaymentMethod.GOPAY: ["gopay"],
    PaymentMethod.SHOPEE_PAY: ["shopeepay"],
    PaymentMethod.CREDIT_CARD: ["credit_card"],
    PaymentMethod.BANK_TRANSFER: ["bca_va", "echannel", "bni_va", "bri_va", "permata_va"],
    PaymentMethod.BCA_VA: ["bca_va"],
    PaymentMethod.MANDIRI_BILL: ["echannel"],
    PaymentMethod.BNI_VA: ["bni_va"],
    PaymentMethod.BRI_VA: ["bri_va"],
    PaymentMethod.PERMATA_VA: ["permata_va"],
    PaymentMethod.OVO: ["ovo"],
    PaymentMethod.DANA: ["dana"],
    PaymentMethod.QRIS: ["other_qris"],
    PaymentMethod.INDOMARET: ["indomaret"],
    PaymentMethod.ALFAMART: ["alfamart"],
}

# The method a notification names (payment_type plus its bank or store), for the read model.
_BANKS = {
    "bca": PaymentMethod.BCA_VA,
    "bni": PaymentMethod.BNI_VA,
    "bri": PaymentMethod.BRI_VA,
    "permata": PaymentMethod.PERMATA_VA,
    "cimb": PaymentMethod.BANK_TRANSFER,
}
_TYPES = {
    "gopay": PaymentMethod.GOPAY,
    "shopeepay": PaymentMethod.SHOPEE_PAY,
    "credit_card": PaymentMethod.CREDIT_CARD,
    "echannel": PaymentMethod.MANDIRI_BILL,
    "ovo": PaymentMethod.OVO,
    "dana": PaymentMethod.DANA,
    "qris": PaymentMethod.QRIS,
}


def method_of_notification(payload: dict) -> PaymentMethod | None:
    """Which of our methods a Midtrans notification or status reports, if any."""
    payment_type = str(payload.get("payment_type") or "").lower()
    if payment_type in _TYPES:
        return _TYPES[payment_type]
    if payment_type == "bank_transfer":
        if payload.get("permata_va_number"):
            return PaymentMethod.PERMATA_VA
        for va in payload.get("va_numbers") or []:
            if isinstance(va, dict) and str(va.get("bank", "")).lower() in _BANKS:
                return _BANKS[str(va["bank"]).lower()]
        return PaymentMethod.BANK_TRANSFER
    if payment_type == "cstore":
        store = str(payload.get("store") or "").lower()
        return {"indomaret": PaymentMethod.INDOMARET, "alfamart": PaymentMethod.ALFAMART}.get(store)
    return None


# What a Core API charge (``POST /v2/charge``, no payment page) sends for the methods it can make: the
# customer gets a VA number, a Mandiri bill key, or a QR/deeplink straight from the answer.
CORE_CHARGES: dict[PaymentMethod, dict] = {
    PaymentMethod.BCA_VA: {"payment_type": "bank_transfer", "bank_transfer": {"bank": "bca"}},
    PaymentMethod.BNI_VA: {"payment_type": "bank_transfer", "bank_transfer": {"bank": "bni"}},
    PaymentMethod.BRI_VA: {"payment_type": "bank_transfer", "bank_transfer": {"bank": "bri"}},
    PaymentMethod.PERMATA_VA: {"payment_type": "bank_transfer", "bank_transfer": {"bank": "permata"}},
    PaymentMethod.MANDIRI_BILL: {
        "payment_type": "echannel",
        "echannel": {"bill_info1": "Payment:", "bill_info2": "Wallet top-up"},
    },
    PaymentMethod.GOPAY: {"payment_type": "gopay"},
    PaymentMethod.QRIS: {"payment_type": "qris"},
}

# The fields of a pending transaction that tell the customer how to pay, kept as Midtrans writes them.
_INSTRUCTION_FIELDS = ("payment_type", "permata_va_number", "bill_key", "biller_code", "store", "payment_code")
_ACTIONS = {"generate-qr-code": "qr_code_url", "deeplink-redirect": "deeplink_url"}


def instructions_of(payload: dict) -> dict | None:
    """How to pay a pending transaction, from a charge answer, a notification or a status answer (None when
    it says nothing a customer acts on, such as a card). ``actions`` keep only the customer's two (the
    status and cancel URLs are the merchant's)."""
    found: dict = {k: str(payload[k]) for k in _INSTRUCTION_FIELDS if payload.get(k) not in (None, "")}
    vas = [
        {"bank": str(va.get("bank", "")), "va_number": str(va.get("va_number", ""))}
        for va in payload.get("va_numbers") or []
        if isinstance(va, dict) and va.get("va_number")
    ]
    if vas:
        found["va_numbers"] = vas
    for action in payload.get("actions") or []:
        if isinstance(action, dict) and action.get("name") in _ACTIONS and action.get("url"):
            found[_ACTIONS[action["name"]]] = str(action["url"])
    if payload.get("qr_string"):
        found["qr_string"] = str(payload["qr_string"])
    if set(found) <= {"payment_type"}:
        return None
    if payload.get("expiry_time"):
        found["expiry_time"] = str(payload["expiry_time"])
    return found
