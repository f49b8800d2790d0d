"""Kong's declarative config routes exactly the public operations of both APIs, with the right plugins."""

from __future__ import annotations

import re

import pytest
import yaml

from command_api.app import create_app as command_app
from ogp.settings import REPO_ROOT, Settings
from query_api.app import create_app as query_app

KONG = REPO_ROOT / "infra" / "kong" / "kong.yml"
PRIVATE = {"/health", "/ready"}  # probes: reached in the cluster, never through the gateway
AUTH_PLUGIN = {"HTTPBearer": "jwt", "APIKeyHeader": "key-auth"}


def _openapi_operations() -> set[tuple[str, str, str, str | None]]:
    """(service, method, exact path regex, auth plugin) of every public operation."""
    settings = Settings(environment="test")
    ops = set()
    for service, app in (("command-api", command_app(settings)), ("query-api", query_app(settings))):
        for path, methods in app.openapi()["paths"].items():
            if path in PRIVATE:
                continue
            for method, op in methods.items():
                schemes = [name for requirement in op.get("security") or [] for name in requirement]
                plugin = AUTH_PLUGIN[schemes[0]] if schemes else None
                ops.add((service, method.upper(), "~" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$", plugin))
    return ops


def _kong_routes() -> set[tuple[str, str, str, str | None]]:
    config = yaml.safe_load(KONG.read_text())
    routes = set()
    for service in config["services"]:
        for route in service["routes"]:
            plugins = [p["name"] for p in route.get("plugins", []) if p["name"] in AUTH_PLUGIN.values()]
            assert len(plugins) <= 1, route["name"]
            for method in route["methods"]:
                if method == "OPTIONS":
                    continue  # CORS preflight, answered by the cors plugin (preflight_continue: false)
                for path in route["paths"]:
                    routes.add((service["name"], method, path, plugins[0] if plugins else None))
    return routes


@pytest.fixture(scope="module")
def kong() -> dict:
    return yaml.safe_load(KONG.read_text())


def test_every_public_operation_is_routed_by_kong_with_its_auth_plugin():
    missing = _openapi_operations() - _kong_routes()
    assert not missing, f"operations Kong does not route (or routes without the right auth): {sorted(missing)}"


def test_kong_routes_nothing_that_does_not_exist():
    extra = _kong_routes() - _openapi_operations()
    assert not extra, f"Kong routes to operations the APIs do not have: {sorted(extra)}"


def test_kong_regex_paths_are_anchored_and_health_probes_are_not_public(kong):
    for service in kong["services"]:
        for route in service["routes"]:
            for path in route["paths"]:
                assert path.startswith("~/") and path.endswith("$"), path
                assert not re.match(path[1:], "/health") and not re.match(path[1:], "/ready")


def test_partner_consumers_are_rate_limited_as_documented(kong):
    limits = {
        c["username"]: next(p["config"]["minute"] for p in c["plugins"] if p["name"] == "rate-limiting")
        for c in kong["consumers"]
        if c.get("plugins")
    }
    assert limits == {"bank-indonesia": 100, "ojk": 200}
    for consumer in kong["consumers"]:
        for credential in consumer.get("keyauth_credentials", []) + consumer.get("jwt_secrets", []):
            secret = credential.get("key") if "keyauth_credentials" in consumer else credential["secret"]
            assert secret.startswith("{vault://"), "no secret in the file"


def test_cors_and_security_headers_are_global(kong):
    plugins = {p["name"]: p["config"] for p in kong["plugins"]}
    assert "*" not in plugins["cors"]["origins"]
    headers = {h.split(":", 1)[0] for h in plugins["response-transformer"]["add"]["headers"]}
    assert {"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options"} <= headers
