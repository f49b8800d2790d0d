"""A Midtrans simulator: Snap, a payment page, the Core API subset and signed notifications with retries.

The real sandbox is unreachable from our machines; this speaks the subset in ``shared/notes/midtrans.md``
byte-compatibly where it matters (paths, Basic auth, field names, status codes, signature) and follows
Midtrans's documented transaction lifecycle, inconvenient parts included:

- A Snap order has no transaction (status API: 404) until the customer picks a method. A VA, Mandiri bill,
  store, QRIS or e-wallet is then ``pending`` (201, with va_numbers / permata_va_number / bill_key +
  biller_code / payment_code / actions) and is paid later: **Pay** on the follow-up page, the e-wallet
  deeplink page, or ``POST /_sim/orders/{id}/pay``. A card is ``capture`` (fraud ``accept``, settling a day
  later on the simulator's clock, or ``challenge``, waiting for ``/approve`` or ``/deny``).
- A pending transaction expires by its own ``expiry`` on the simulator's clock, with an ``expire``
  notification. An order nobody picked a method for expires silently (there is no transaction to notify).
- Refunds only after settlement (412 before), 414 for a bad amount, 406 for a refund_key reused for another
  amount; cancel answers 200, its notification 202; expire answers 407.
- Notifications are retried by the receiver's answer (500 once, 503 four times, 400/404 twice, 3xx 301-303
  never, 307/308 followed, others five times), with delays compressed outside production.

Settings (``OGP_`` environment, ogp/settings.py): ``MIDTRANS_SIM_CLOCK_SPEED`` (the clock's speed, 1.0),
``MIDTRANS_SIM_CARD_SETTLEMENT_SECONDS`` (a card capture settles this many simulator seconds later; default a
day, 144 s outside production), ``MIDTRANS_SIM_NOTIFICATIONS`` (false: nothing is sent),
``MIDTRANS_SIM_OTHER_VA_BANK`` (bni or permata: who processes "Other banks").

Run-time controls (tests, demos): ``POST /_sim/orders/{id}/choose {"channel"}``, ``POST /_sim/orders/{id}/pay
{"channel"?, "outcome": "pay|challenge|decline|expire"}``, ``POST /_sim/orders/{id}/reverse`` (a settled
payment reversed to deny), ``POST /_sim/clock {"advance_seconds"?, "speed"?}``, ``POST /_sim/knobs``
(notifications, duplicates, out_of_order, notify_delay_seconds, api_delay_seconds, api_fail_500,
status_fail_500), ``GET /_sim/deliveries``, ``GET /_sim/notifier``. tests/support/midtrans_sim.py wraps them.
"""
