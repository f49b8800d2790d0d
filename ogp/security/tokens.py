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
# Verified tokens remembered per process (see TokenService.verify): a token is ~300 bytes, so ~3 MB at most.
VERIFIED_CACHE_SIZE = 10_000


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
        # token -> its claims, oldest first: what this key verified, until the token's exp.
        self._verified: dict[str, TokenClaims] = {}

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
        """Claims of a valid token of ``expected_type``; InvalidToken otherwise (never says why to callers).

        A token verified once is remembered until its ``exp``: checking the signature and claims again cost
        the query API a tenth of a balance read's CPU (py-spy), and gives the same answer for the same string
        under the same key until it expires (nbf and iat only ever get further behind). Revocation is not a
        property of the string: callers check the deny-list on every request, remembered or not.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = claims
        elif claims.expires_at <= time.time():  # PyJWT's own test: expired from the second of exp on
            del self._verified[token]
            raise InvalidToken("ExpiredSignatureError")
        if claims.token_type != expected_type:
            raise InvalidToken("wrong token type")
        return claims

    def _verify(self, token: str) -> TokenClaims:
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
        token_type = payload.get("typ")
        if token_type not in (ACCESS, REFRESH):
            raise InvalidToken("wrong token type")
        try:
            user_id = int(payload["sub"])
        except (TypeError, ValueError):
            raise InvalidToken("bad subject") from None
        return TokenClaims(
            user_id,
            str(payload["jti"]),
            token_type,
            int(payload["exp"]),
            bool(payload.get("adm", False)),
            payload.get("fid"),
        )


def token_hash(token: str) -> str:
    """What the database stores for a refresh token: SHA-256 hex (tokens are high-entropy)."""
    return hashlib.sha256(token.encode()).hexdigest()
