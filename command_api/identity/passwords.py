"""User passwords: Argon2id with OWASP's recommended minimum parameters.

OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1. Stored as the PHC string
(``$argon2id$v=19$m=19456,t=2,p=1$salt$hash``), which carries its own parameters, so raising them later
only needs :func:`needs_rehash` at the next successful login.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)

# A hash of a random, discarded password, made once with the parameters above. Login verifies against it
# when the username does not exist, so that "no such user" costs as much as "wrong password" and response
# times do not reveal which usernames exist. A literal, so importing this module costs nothing;
# tests/unit/test_security.py fails if it falls out of step with the parameters.
DUMMY_PASSWORD_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$tovY3ZHcpiGqWSLzgDNQMg$4zZea5Dwdo910s/pSiMfkh1e1S3Ss/A4VLSybxDUrmg"
)


def hash_password(password: str) -> str:
    """The Argon2id PHC string for ``password`` (fresh random salt each call)."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches ``password_hash``; False (never an exception) on mismatch or a bad hash."""
    try:
        # argon2 compares the derived keys in constant time.
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_dummy(password: str) -> bool:
    """Spend the time of one verification and return False: the login path for an unknown username."""
    verify_password(password, DUMMY_PASSWORD_HASH)
    return False


def needs_rehash(password_hash: str) -> bool:
    """Whether ``password_hash`` was made with other parameters than today's (rehash after a good login)."""
    return _hasher.check_needs_rehash(password_hash)
