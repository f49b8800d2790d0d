"""Secrets at rest: Argon2id password hashes and peppered HMAC hashes of partners' API keys."""
