"""Identity over real HTTP, PostgreSQL and Redis: register, login, refresh rotation, logout, throttling."""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, text

from command_api.app import create_app
from ogp.settings import Settings
from tests.support.server import serve, serve_client
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

KEY = "test-signing-key-0123456789-abcdefghijklmnop"
# Longer than any burst of attempts on any machine: the counting test must not see its window close. (On a
# busy one, fifty attempts took over ten seconds.) The expiry test uses a window of its own.
LOGIN_WINDOW = 600


@pytest.fixture(scope="module")
def settings(db_url, redis_url, kafka_bootstrap) -> Settings:
    return Settings(
        environment="test",
        database_url=db_url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        jwt_signing_key=KEY,
        login_max_failures_per_user=10,
        login_window_seconds=LOGIN_WINDOW,
    )


@pytest.fixture(scope="module")
def api(settings):
    with serve_client(create_app(settings)) as client:
        yield client


def new_user(prefix: str = "u") -> dict:
    n = uuid.uuid4().int % 10**8
    return {
        "username": f"{prefix}{n}",
        "email": f"{prefix}{n}@Example.com",
        "phone": f"0812{n:08d}",
        "password": f"correct horse {n}",
    }


def register(api, user) -> httpx.Response:
    return api.post("/api/auth/register", json=user)


def login(api, user, identifier=None) -> httpx.Response:
    return api.post("/api/auth/login", json={"username": identifier or user["username"], "password": user["password"]})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- registration -------------------------------------------------------------------------------------


def test_register_opens_an_active_idr_account_with_zero_balance(api, db_url):
    user = new_user()
    response = register(api, user)
    assert response.status_code == 201, response.text
    body = response.json()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT a.balance, a.currency, a.account_status, u.phone, u.email, u.password "
                "FROM accounts a JOIN users u ON u.id = a.user_id WHERE a.id = :id"
            ),
            {"id": body["account_id"]},
        ).one()
    engine.dispose()
    assert (str(row.balance), row.currency, row.account_status) == ("0.00", "IDR", "ACTIVE")
    assert row.phone == "+62" + user["phone"][1:]  # normalised to E.164
    assert row.email == user["email"].lower()
    assert row.password.startswith("$argon2id$") and user["password"] not in row.password


@pytest.mark.parametrize(
    "field,transform",
    [
        ("username", str.upper),  # case-insensitive
        ("email", str.upper),
        ("phone", lambda p: "+62" + p[1:]),  # the same number in another notation
    ],
)
def test_register_clash_is_409_naming_the_field(api, field, transform):
    first = new_user()
    assert register(api, first).status_code == 201
    second = new_user()
    second[field] = transform(first[field])
    response = register(api, second)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["details"] == {"field": field}


@pytest.mark.parametrize(
    "change,code",
    [
        ({"password": "short"}, "validation_error"),
        ({"password": "SAMEASNAME"}, "weak_password"),
        ({"phone": "12"}, "validation_error"),
        ({"phone": "0000000000"}, "invalid_phone"),
        ({"email": "not-an-email"}, "validation_error"),
        ({"role": "admin"}, "validation_error"),  # unknown fields are refused
    ],
)
def test_register_rejects_bad_input_with_422_and_writes_nothing(api, db_url, change, code):
    user = new_user() | change
    if code == "weak_password":
        user["username"] = user["password"].lower()
    response = register(api, user)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM users WHERE username = :u"), {"u": user["username"]}).scalar() == 0
        )
    engine.dispose()


def test_oversized_body_is_413(api):
    response = api.post(
        "/api/auth/register", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_twenty_concurrent_registrations_of_one_username_make_exactly_one_user(api, db_url):
    base = new_user("race")

    def attempt(i: int) -> int:
        user = base | {"email": f"race{i}-{base['email']}", "phone": f"0813{uuid.uuid4().int % 10**8:08d}"}
        with httpx.Client(base_url=str(api.base_url), timeout=60) as client:
            return register(client, user).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(attempt, range(20)))
    assert sorted(codes) == [201] + [409] * 19
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM users WHERE username = :u"), {"u": base["username"]}).scalar() == 1
        )
        orphans = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM users u"
                " WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.user_id = u.id))"
                " + (SELECT count(*) FROM accounts a WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = a.user_id))"
            )
        ).scalar()
    engine.dispose()
    assert orphans == 0


# --- login, refresh, logout -----------------------------------------------------------------------------


def test_full_flow_register_login_refresh_logout(api):
    user = new_user()
    assert register(api, user).status_code == 201
    for identifier in (user["username"], user["email"].upper(), "+62" + user["phone"][1:], user["phone"]):
        assert login(api, user, identifier).status_code == 200, identifier
    wrong = api.post("/api/auth/login", json={"username": user["username"], "password": "wrong password!"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
    nobody = api.post("/api/auth/login", json={"username": "no-such-user", "password": "whatever123"})
    assert nobody.status_code == 401

    tokens = login(api, user).json()
    assert tokens["token_type"] == "bearer" and 0 < tokens["expires_in"] <= 900
    assert api.get("/api/auth/me", headers=bearer(tokens["access_token"])).status_code == 200

    rotated = api.put("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["refresh_token"] != tokens["refresh_token"]

    out = api.request(
        "DELETE", "/api/auth/logout", json={"refresh_token": new["refresh_token"]}, headers=bearer(new["access_token"])
    )
    assert out.status_code == 204
    assert api.get("/api/auth/me", headers=bearer(new["access_token"])).status_code == 401
    assert api.put("/api/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 401
    # A fresh login still works after logout.
    assert login(api, user).status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(api):
    user = new_user()
    register(api, user)
    first = login(api, user).json()
    second = api.put("/api/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    third = api.put("/api/auth/refresh", json={"refresh_token": second["refresh_token"]}).json()

    reuse = api.put("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "token_reused"
    # Every descendant of that login is now dead too.
    assert api.put("/api/auth/refresh", json={"refresh_token": third["refresh_token"]}).status_code == 401
    # Another login's family is untouched.
    other = login(api, user).json()
    assert api.put("/api/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 200


def _forge(settings: Settings, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "1",
        "typ": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    key = overrides.pop("_key", KEY)
    alg = overrides.pop("_alg", "HS256")
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=alg)


def _alg_none(settings: Settings) -> str:
    import base64
    import json

    def b64(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return (
        b64({"alg": "none", "typ": "JWT"})
        + "."
        + b64(
            {
                "iss": settings.jwt_issuer,
                "aud": settings.jwt_audience,
                "sub": "1",
                "typ": "access",
                "jti": "x",
                "iat": now,
                "nbf": now,
                "exp": now + 600,
            }
        )
        + "."
    )


@pytest.mark.parametrize(
    "case",
    [
        "alg_none",
        "wrong_signature",
        "other_key",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "wrong_type",
        "refresh_as_access",
        "garbage",
    ],
)
def test_bad_access_tokens_are_401(api, settings, case):
    now = int(time.time())
    if case == "alg_none":
        token = _alg_none(settings)
    elif case == "wrong_signature":
        good = _forge(settings)
        token = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    elif case == "other_key":
        token = _forge(settings, _key="another-signing-key-0123456789-abcdefghij")
    elif case == "expired":
        token = _forge(settings, iat=now - 1000, nbf=now - 1000, exp=now - 10)
    elif case == "not_yet_valid":
        token = _forge(settings, nbf=now + 600, exp=now + 1200)
    elif case == "wrong_issuer":
        token = _forge(settings, iss="someone-else")
    elif case == "wrong_audience":
        token = _forge(settings, aud="another-audience")
    elif case == "wrong_type":
        token = _forge(settings, typ="id")
    elif case == "refresh_as_access":
        user = new_user()
        register(api, user)
        token = login(api, user).json()["refresh_token"]
    else:
        token = "not.a.jwt"
    response = api.get("/api/auth/me", headers=bearer(token))
    assert response.status_code == 401, (case, response.text)
    assert response.json()["error"]["code"] in {"invalid_token", "unauthorized"}


def test_access_token_as_refresh_token_is_401(api):
    user = new_user()
    register(api, user)
    tokens = login(api, user).json()
    assert api.put("/api/auth/refresh", json={"refresh_token": tokens["access_token"]}).status_code == 401


# --- throttling --------------------------------------------------------------------------------------------


def test_failed_logins_are_throttled_from_the_threshold(api, settings):
    user = new_user()
    register(api, user)
    codes = []
    for _ in range(50):
        response = api.post("/api/auth/login", json={"username": user["username"], "password": "wrong password!"})
        codes.append(response.status_code)
    threshold = settings.login_max_failures_per_user
    assert codes[:threshold] == [401] * threshold
    assert codes[threshold:] == [429] * (50 - threshold)
    limited = login(api, user)
    assert limited.status_code == 429, "the right password must not get through while limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= settings.login_window_seconds


def test_the_login_limit_expires_with_its_window(settings):
    window = 3
    quick = settings.model_copy(update={"login_max_failures_per_user": 1, "login_window_seconds": window})
    user = new_user()
    with serve(create_app(quick)) as url, httpx.Client(base_url=url, timeout=30) as api:
        register(api, user)
        wrong = {"username": user["username"], "password": "wrong password!"}
        # One failure limits; seeing a refusal proves the window was open when the server looked. (On a machine
        # so slow that the window closed between two attempts, the next failure simply opens a new one.)
        wait_until(
            lambda: api.post("/api/auth/login", json=wrong).status_code == 429, what="the user was limited", interval=0
        )
        # That window closes at the latest one window after the refusal; the last try starts after that.
        wait_until(
            lambda: login(api, user).status_code == 200, window, "the limit expired with its window", interval=0.25
        )


# --- no secrets in logs -----------------------------------------------------------------------------------------


def test_a_full_auth_flow_logs_no_password_token_or_hash(api, db_url, caplog):
    from ogp.logs import JsonFormatter

    caplog.set_level(logging.DEBUG)
    user = new_user()
    register(api, user)
    tokens = login(api, user).json()
    api.post("/api/auth/login", json={"username": user["username"], "password": "wrong password!"})
    rotated = api.put("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json()
    api.put("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})  # reuse: logs a warning path
    api.request(
        "DELETE",
        "/api/auth/logout",
        json={"refresh_token": rotated["refresh_token"]},
        headers=bearer(rotated["access_token"]),
    )
    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored_hash = conn.execute(
            text("SELECT password FROM users WHERE username = :u"), {"u": user["username"]}
        ).scalar()
    engine.dispose()
    formatter = JsonFormatter()
    output = "\n".join([formatter.format(r) for r in caplog.records] + [r.getMessage() for r in caplog.records])
    assert caplog.records, "expected some log output from the flow"
    secrets = [
        user["password"],
        "wrong password!",
        tokens["access_token"],
        tokens["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
        stored_hash,
    ]
    for secret in secrets:
        assert secret not in output
