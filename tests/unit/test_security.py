"""Password hashing and API key handling: pure functions, no infrastructure."""

from __future__ import annotations

import hashlib
import hmac
from unittest.mock import patch

import jwt
import pytest
from pydantic import SecretStr

from command_api.identity.passwords import (
    DUMMY_PASSWORD_HASH,
    hash_password,
    needs_rehash,
    verify_dummy,
    verify_password,
)
from ogp.security.api_keys import (
    MalformedApiKey,
    format_api_key,
    generate_api_key,
    hash_api_key,
    parse_prefix,
    verify_api_key,
)
from ogp.security.tokens import ACCESS, REFRESH, InvalidToken, TokenService

PEPPER = "unit-test-pepper"


# -- passwords -----------------------------------------------------------------------------------------


def test_password_hash_is_argon2id_with_owasp_parameters_and_never_the_plaintext():
    password_hash = hash_password("correct horse battery staple")
    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "correct horse" not in password_hash


def test_password_verifies_and_a_wrong_one_returns_false_without_raising():
    password_hash = hash_password("s3cret-pass")
    assert verify_password("s3cret-pass", password_hash) is True
    assert verify_password("s3cret-pasS", password_hash) is False
    assert verify_password("", password_hash) is False


def test_a_corrupt_stored_hash_is_a_failed_login_not_a_crash():
    assert verify_password("anything", "not-a-hash") is False
    assert verify_password("anything", "$argon2id$v=19$m=19456,t=2,p=1$broken") is False


def test_the_same_password_hashes_differently_each_time():
    assert hash_password("same") != hash_password("same")


def test_current_hashes_need_no_rehash_but_weaker_ones_do():
    assert needs_rehash(hash_password("pw")) is False
    weak = "$argon2id$v=19$m=8192,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$KVFFeAVNZ2sm5fWz6FG7Vx3E8ZyOGfZrKx9Xsjm5b4M"
    assert needs_rehash(weak) is True


def test_dummy_hash_uses_current_parameters_so_unknown_users_cost_the_same():
    assert needs_rehash(DUMMY_PASSWORD_HASH) is False
    assert verify_dummy("whatever the attacker typed") is False


# -- API keys ------------------------------------------------------------------------------------------


def test_generated_key_has_the_documented_shape_and_its_own_prefix():
    plaintext, prefix, key_hash = generate_api_key(PEPPER)
    scheme, key_prefix, secret = plaintext.split("_", 2)
    assert scheme == "ogp"
    assert key_prefix == prefix and len(prefix) == 8
    assert len(secret) >= 32
    assert parse_prefix(plaintext) == prefix
    assert len(key_hash) == 64 and plaintext not in key_hash


def test_generated_keys_are_unique():
    keys = {generate_api_key(PEPPER).plaintext for _ in range(200)}
    assert len(keys) == 200


def test_key_hash_is_hmac_sha256_under_the_pepper():
    plaintext = generate_api_key(PEPPER).plaintext
    expected = hmac.new(PEPPER.encode(), plaintext.encode(), hashlib.sha256).hexdigest()
    assert hash_api_key(plaintext, PEPPER) == expected
    assert hash_api_key(plaintext, SecretStr(PEPPER)) == expected  # settings hand over a SecretStr
    assert hash_api_key(plaintext, "another-pepper") != expected


def test_key_verifies_only_with_the_same_key_and_pepper():
    plaintext, _, key_hash = generate_api_key(PEPPER)
    assert verify_api_key(plaintext, key_hash, PEPPER) is True
    assert verify_api_key(plaintext + "x", key_hash, PEPPER) is False
    assert verify_api_key(plaintext, key_hash, "another-pepper") is False


def test_secret_may_contain_underscores_and_dashes():
    plaintext = format_api_key("abcd1234", "a_b-c" * 8)
    assert parse_prefix(plaintext) == "abcd1234"


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "ogp_abcd1234",
        "ogp_abcd1234_tooshort",
        "xyz_abcd1234_" + "s" * 40,
        "ogp_ABCD1234_" + "s" * 40,  # prefixes are lowercase
        "ogp_abc1234_" + "s" * 40,  # 7-character prefix
        "ogp_abcd1234_" + "s" * 40 + "!",
        "ogp_abcd1234_" + "s" * 500,
    ],
)
def test_malformed_keys_are_rejected_before_any_lookup(presented):
    with pytest.raises(MalformedApiKey):
        parse_prefix(presented)


def test_an_empty_pepper_is_refused():
    with pytest.raises(ValueError):
        hash_api_key("ogp_abcd1234_" + "s" * 40, "")


# -- access tokens ---------------------------------------------------------------------------------------------

SIGNING_KEY = "unit-test-signing-key-0123456789-abcdef"


def _tokens() -> TokenService:
    return TokenService(SIGNING_KEY, "ogp-test", "ogp-test-api", access_ttl=900, refresh_ttl=3600)


def test_a_verified_token_is_not_verified_again_while_it_lasts():
    tokens = _tokens()
    issued = tokens.issue_access(7, is_admin=False)
    with patch("ogp.security.tokens.jwt.decode", wraps=jwt.decode) as decode:
        first, again = tokens.verify(issued.token, ACCESS), tokens.verify(issued.token, ACCESS)
    assert first == again == issued.claims and decode.call_count == 1


def test_a_remembered_token_is_refused_from_its_expiry_on_and_as_another_type():
    tokens = _tokens()
    issued = tokens.issue_access(7, is_admin=False)
    assert tokens.verify(issued.token, ACCESS).user_id == 7
    with pytest.raises(InvalidToken):
        tokens.verify(issued.token, REFRESH)
    with patch("ogp.security.tokens.time.time", return_value=issued.claims.expires_at), pytest.raises(InvalidToken):
        tokens.verify(issued.token, ACCESS)
    # Forgotten once expired: a later look verifies it afresh (and PyJWT refuses it as expired in its turn).
    assert issued.token not in tokens._verified


def test_a_forged_token_is_never_remembered_and_the_memory_is_bounded():
    tokens = _tokens()
    forged = _tokens().issue_access(7, is_admin=True).token[:-4] + "AAAA"
    for _ in range(2):
        with pytest.raises(InvalidToken):
            tokens.verify(forged, ACCESS)
    assert not tokens._verified
    with patch("ogp.security.tokens.VERIFIED_CACHE_SIZE", 3):
        issued = [tokens.issue_access(user_id, is_admin=False).token for user_id in range(5)]
        for token in issued:
            tokens.verify(token, ACCESS)
    assert list(tokens._verified) == issued[-3:]
