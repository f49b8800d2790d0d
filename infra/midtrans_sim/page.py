"""The payment page at Snap's redirect_url: pick a method, then Pay, Fail or Let it expire."""

from __future__ import annotations

from html import escape

from infra.midtrans_sim.methods import CHANNELS
from infra.midtrans_sim.state import Order

_STYLE = """body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#1d2b3a}
h1{font-size:1.3rem}.amount{font-size:1.8rem;font-weight:700;margin:.5rem 0 1.2rem}
label{display:block;padding:.55rem .8rem;margin:.3rem 0;border:1px solid #cfd8e3;border-radius:.4rem;cursor:pointer}
button{font-size:1rem;padding:.6rem 1.1rem;margin:.8rem .4rem 0 0;border-radius:.4rem;border:0;cursor:pointer}
#pay{background:#0a7d38;color:#fff}#fail{background:#b3261e;color:#fff}#expire{background:#5f6b7a;color:#fff}
.note{color:#5f6b7a;font-size:.85rem}"""


def _rupiah(amount: int) -> str:
    return "Rp " + f"{amount:,}".replace(",", ".")


def payment_page(order: Order) -> str:
    options = "\n".join(
        f'<label><input type="radio" name="channel" value="{escape(c)}" id="m-{escape(c)}"'
        f"{' checked' if i == 0 else ''}> {escape(CHANNELS[c][0])}</label>"
        for i, c in enumerate(order.enabled)
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Midtrans simulator: pay</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head><body>
<h1>Midtrans simulator</h1><div>Order <code id="order-id">{escape(order.order_id)}</code></div>
<div class="amount" id="amount">{_rupiah(order.gross_amount)}</div>
<form method="post" action="/snap/v3/redirection/{escape(order.token)}/complete">
<fieldset><legend>Choose a payment method</legend>{options}</fieldset>
<button type="submit" name="outcome" value="pay" id="pay">Pay</button>
<button type="submit" name="outcome" value="fail" id="fail">Fail</button>
<button type="submit" name="outcome" value="expire" id="expire">Let it expire</button>
</form><p class="note">A simulator: no money moves. Notifications go to the merchant's webhook.</p></body></html>"""


def result_page(order: Order, finish_url: str | None) -> str:
    link = f'<p><a id="finish" href="{escape(finish_url)}">Back to the merchant</a></p>' if finish_url else ""
    status = escape(order.status or "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Midtrans simulator: {status}</title>
<style>{_STYLE}</style></head><body><h1>Midtrans simulator</h1>
<p>Order <code>{escape(order.order_id)}</code>: <strong id="status">{status}</strong></p>
{link}</body></html>"""


def message_page(text: str) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Midtrans simulator</title>
<style>{_STYLE}</style></head><body><h1>Midtrans simulator</h1><p id="message">{escape(text)}</p></body></html>"""
