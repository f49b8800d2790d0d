"""Pure identity rules: normalisation and the password policy. No I/O."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MIN_PASSWORD_LENGTH = 10


class PolicyViolation(ValueError):
    """Input that is well-formed but not acceptable; ``code`` and ``field`` are machine-readable."""

    def __init__(self, code: str, field: str, message: str):
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


def normalise_phone(raw: str) -> str:
    """E.164 form of an Indonesian (or explicitly international) phone number: '0812…' → '+62812…'."""
    try:
        number = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException:
        raise PolicyViolation("invalid_phone", "phone", "phone is not a valid phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise PolicyViolation("invalid_phone", "phone", "phone is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    """The lower-cased address, if mail could be delivered to its form (no special-use domain such as .test)."""
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise PolicyViolation("invalid_email", "email", f"email is not a deliverable address: {exc}") from None


def check_password(password: str, username: str, email: str) -> None:
    """OWASP-style policy: long enough, and not the user's own name or address."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PolicyViolation(
            "weak_password", "password", f"password must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    lowered = password.lower()
    if lowered in {username.lower(), email.lower(), email.split("@")[0].lower()}:
        raise PolicyViolation("weak_password", "password", "password must not equal the username or email")
