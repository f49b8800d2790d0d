"""A Midtrans simulator: Snap, a payment page, signed notifications with retries, and the Core API subset.

The real sandbox is unreachable from our machines; this speaks the subset in ``shared/notes/midtrans.md``
byte-compatibly where it matters (paths, Basic auth, field names, status codes, signature).
"""
