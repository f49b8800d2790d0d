"""Midtrans: the signature rule, payment methods, the midtransclient adapter and the use cases."""
