"""JWT access and refresh tokens, verified per RFC 8725: pinned algorithm, issuer, audience, type."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"  # pinned: verification never reads the algorithm from the token header
ACCESS = "access"
REFRESH = "refresh"


class InvalidToken(Exception):
    """The token is malformed, forged, expired, revoked or of the wrong kind."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    token_id: str
    token_type: str
    expires_at: int
    is_admin: bool = False
    family_id: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: TokenClaims


class TokenService:
    def __init__(self, signing_key: str, issuer: str, audience: str, access_ttl: int, refresh_ttl: int):
        if len(signing_key) < 32:
            raise ValueError("the JWT signing key must be at least 32 characters")
        self._key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    @classmethod
    def from_settings(cls, settings) -> TokenService:
        return cls(
            settings.jwt_signing_key.get_secret_value(),
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.access_token_ttl_seconds,
            settings.refresh_token_ttl_seconds,
        )

    def _issue(self, user_id: int, token_type: str, ttl: int, extra: dict, now: int | None = None) -> IssuedToken:
        now = int(time.time()) if now is None else now
        jti = uuid.uuid4().hex
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "typ": token_type,
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            **extra,
        }
        token = jwt.encode(payload, self._key, algorithm=ALGORITHM)
        claims = TokenClaims(user_id, jti, token_type, now + ttl, bool(extra.get("adm")), extra.get("fid"))
        return IssuedToken(token, claims)

    def issue_access(self, user_id: int, is_admin: bool, now: int | None = None) -> IssuedToken:
        return self._issue(user_id, ACCESS, self.access_ttl, {"adm": True} if is_admin else {}, now)

    def issue_refresh(self, user_id: int, family_id: str, now: int | None = None) -> IssuedToken:
        return self._issue(user_id, REFRESH, self.refresh_ttl, {"fid": family_id}, now)

    def verify(self, token: str, expected_type: str) -> TokenClaims:
        """Claims of a valid token of ``expected_type``; InvalidToken otherwise (never says why to callers)."""
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(exc.__class__.__name__) from None
        if payload.get("typ") != expected_type:
            raise InvalidToken("wrong token type")
        try:
            user_id = int(payload["sub"])
        except (TypeError, ValueError):
            raise InvalidToken("bad subject") from None
        return TokenClaims(
            user_id,
            str(payload["jti"]),
            expected_type,
            int(payload["exp"]),
            bool(payload.get("adm", False)),
            payload.get("fid"),
        )


def token_hash(token: str) -> str:
    """What the database stores for a refresh token: SHA-256 hex (tokens are high-entropy)."""
    return hashlib.sha256(token.encode()).hexdigest()
