"""Partners' API keys: ``ogp_<prefix>_<secret>``, stored as a lookup prefix plus a peppered HMAC.

Why not Argon2 as for passwords: an API key carries ~256 random bits, so brute force is hopeless whatever
the hash; a slow hash would only add latency to every partner request. HMAC-SHA256 under a server-side
pepper (settings.api_key_pepper) also means a stolen database alone cannot be used to test guesses.
The public prefix makes lookup a single indexed row: ``WHERE key_prefix = :prefix``, then compare hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from typing import NamedTuple, Protocol

KEY_SCHEME = "ogp"
PREFIX_LENGTH = 8
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_BYTES = 32  # token_urlsafe(32): 43 characters

# The secret is token_urlsafe output (which may itself contain '_' and '-'), hence the anchored pattern
# instead of a split; the upper bound keeps absurd inputs out of the hash.
_KEY_PATTERN = re.compile(rf"^{KEY_SCHEME}_([a-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9_-]{{32,128}})$")


class MalformedApiKey(ValueError):
    """The presented string is not shaped like one of our API keys."""


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


Pepper = str | bytes | _Secret


class ApiKeyMaterial(NamedTuple):
    """A new key: show ``plaintext`` once to its owner; store only ``prefix`` and ``key_hash``."""

    plaintext: str
    prefix: str
    key_hash: str


def _pepper_bytes(pepper: Pepper) -> bytes:
    if hasattr(pepper, "get_secret_value"):  # pydantic SecretStr from settings
        pepper = pepper.get_secret_value()
    if isinstance(pepper, str):
        pepper = pepper.encode()
    if not pepper:
        raise ValueError("an empty pepper would make key hashes unkeyed")
    return pepper


def format_api_key(prefix: str, secret: str) -> str:
    """Assemble ``ogp_<prefix>_<secret>``; refuses parts that :func:`parse_prefix` would not read back."""
    plaintext = f"{KEY_SCHEME}_{prefix}_{secret}"
    if not _KEY_PATTERN.match(plaintext):
        raise MalformedApiKey("prefix must be 8 of [a-z0-9] and secret 32-128 of [A-Za-z0-9_-]")
    return plaintext


def generate_api_key(pepper: Pepper) -> ApiKeyMaterial:
    """A fresh random key with its prefix and hash (a prefix collision surfaces as a unique violation)."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    plaintext = format_api_key(prefix, secrets.token_urlsafe(_SECRET_BYTES))
    return ApiKeyMaterial(plaintext, prefix, hash_api_key(plaintext, pepper))


def parse_prefix(plaintext: str) -> str:
    """The lookup prefix of a presented key; :class:`MalformedApiKey` if it is not one of ours."""
    match = _KEY_PATTERN.match(plaintext or "")
    if match is None:
        raise MalformedApiKey("not an OGP API key")
    return match.group(1)


def hash_api_key(plaintext: str, pepper: Pepper) -> str:
    """HMAC-SHA256 (hex, 64 characters) of the whole key under the server's pepper."""
    return hmac.new(_pepper_bytes(pepper), plaintext.encode(), hashlib.sha256).hexdigest()


def verify_api_key(plaintext: str, key_hash: str, pepper: Pepper) -> bool:
    """Whether ``plaintext`` hashes to ``key_hash``, compared in constant time."""
    return hmac.compare_digest(hash_api_key(plaintext, pepper), key_hash)
