"""Wallet commands (pay, transfer, refund): validation, idempotency and appending to Kafka."""
