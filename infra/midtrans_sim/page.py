"""The payment page at Snap's redirect_url: pick a method (Continue); then the method's instructions (VA number,
bill key, payment code or QR) or the card form, where the customer pays later."""

from __future__ import annotations

from html import escape

from infra.midtrans_sim.methods import CHANNELS
from infra.midtrans_sim.state import Order, stamp

_STYLE = """body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#1d2b3a}
h1{font-size:1.3rem}.amount{font-size:1.8rem;font-weight:700;margin:.5rem 0 1.2rem}
label{display:block;padding:.55rem .8rem;margin:.3rem 0;border:1px solid #cfd8e3;border-radius:.4rem;cursor:pointer}
button{font-size:1rem;padding:.6rem 1.1rem;margin:.8rem .4rem 0 0;border-radius:.4rem;border:0;cursor:pointer}
#continue,#pay{background:#0a7d38;color:#fff}#decline{background:#b3261e;color:#fff}
#challenge,#expire{background:#5f6b7a;color:#fff}.note{color:#5f6b7a;font-size:.85rem}
dt{color:#5f6b7a;font-size:.85rem}dd{margin:0 0 .6rem;font-size:1.2rem;font-family:monospace}"""


def _rupiah(amount: int) -> str:
    return "Rp " + f"{amount:,}".replace(",", ".")


def _head(title: str, order: Order) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Midtrans simulator: {title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head><body>
<h1>Midtrans simulator</h1><div>Order <code id="order-id">{escape(order.order_id)}</code></div>
<div class="amount" id="amount">{_rupiah(order.gross_amount)}</div>"""


_FOOT = '<p class="note">A simulator: no money moves. Notifications go to the merchant\'s webhook.</p></body></html>'


def payment_page(order: Order) -> str:
    """Choose a method; Continue makes the transaction (pending) and shows how to pay it."""
    options = "\n".join(
        f'<label><input type="radio" name="channel" value="{escape(c)}" id="m-{escape(c)}"'
        f"{' checked' if i == 0 else ''}> {escape(CHANNELS[c][0])}</label>"
        for i, c in enumerate(order.enabled)
    )
    return f"""{_head("choose a method", order)}
<form method="post" action="/snap/v3/redirection/{escape(order.token or "")}/choose">
<fieldset><legend>Choose a payment method</legend>{options}</fieldset>
<button type="submit" id="continue">Continue</button>
</form>{_FOOT}"""


def _details(order: Order) -> str:
    f = order.fields
    rows: list[tuple[str, str]] = []
    for va in f.get("va_numbers", []):
        rows.append((f"{va['bank'].upper()} virtual account", va["va_number"]))
    if "permata_va_number" in f:
        rows.append(("Permata virtual account", f["permata_va_number"]))
    if "bill_key" in f:
        rows += [("Biller code", f["biller_code"]), ("Bill key", f["bill_key"])]
    if "payment_code" in f:
        rows.append((f"Payment code at {f['store'].capitalize()}", f["payment_code"]))
    if "qr_string" in f:
        rows.append(("QRIS", f["qr_string"]))
    for action in f.get("actions", []):
        if action["name"] == "deeplink-redirect":
            rows.append(("Open the app", action["url"]))
    rows.append(("Pay before", stamp(order.expiry_time)))
    return "".join(f'<dt>{escape(k)}</dt><dd id="d-{i}">{escape(v)}</dd>' for i, (k, v) in enumerate(rows))


def instructions_page(order: Order) -> str:
    """A pending transaction: how to pay it, and what the customer does next (pay, or walk away)."""
    return f"""{_head("waiting for payment", order)}
<p>Status <strong id="status">{escape(order.status or "")}</strong> · {escape(CHANNELS[order.channel or ""][0])}</p>
<dl id="instructions">{_details(order)}</dl>
<form method="post" action="/snap/v3/redirection/{escape(order.token or "")}/complete">
<button type="submit" name="outcome" value="pay" id="pay">Pay</button>
<button type="submit" name="outcome" value="expire" id="expire">Let it expire</button>
</form>{_FOOT}"""


def card_page(order: Order) -> str:
    """The card form: the issuer approves (capture), the fraud detection challenges, or the bank declines."""
    return f"""{_head("card", order)}
<p>Card <code>{escape(order.fields.get("masked_card", ""))}</code></p>
<form method="post" action="/snap/v3/redirection/{escape(order.token or "")}/complete">
<button type="submit" name="outcome" value="pay" id="pay">Pay</button>
<button type="submit" name="outcome" value="challenge" id="challenge">Pay (fraud check challenges)</button>
<button type="submit" name="outcome" value="decline" id="decline">Bank declines</button>
</form>{_FOOT}"""


def wallet_page(order: Order) -> str:
    """The e-wallet app the deeplink opens: confirm the payment."""
    return f"""{_head("e-wallet", order)}
<form method="post" action="/_sim/deeplink/{escape(order.transaction_id)}">
<button type="submit" id="pay">Pay</button></form>{_FOOT}"""


def result_page(order: Order, finish_url: str | None) -> str:
    """Where the page leaves the customer: the transaction's status and the merchant's finish link."""
    link = f'<p><a id="finish" href="{escape(finish_url)}">Back to the merchant</a></p>' if finish_url else ""
    status = escape(order.status or "")
    return f"""{_head(status, order)}
<p>Status <strong id="status">{status}</strong></p>
{link}{_FOOT}"""


def message_page(text: str) -> str:
    """A page that only says ``text``."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Midtrans simulator</title>
<style>{_STYLE}</style></head><body><h1>Midtrans simulator</h1><p id="message">{escape(text)}</p></body></html>"""
