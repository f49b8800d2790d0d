"""The logs an on-call engineer reads, after a whole customer story has gone through every service as `ogp up`
runs them (the same command lines, uvicorn included, each process writing its own log file, at DEBUG): every
line is one JSON object, request-handling lines carry their trace and correlation ids, and nothing anywhere
names the customer, her e-mail, her phone, her card or her virtual account."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra.local.process import ManagedProcess, free_port
from infra.local.services import Service, services
from ogp.db.migrate import upgrade
from ogp.settings import Settings
from tests.support.infra import create_database
from tests.support.ledger import recreate_topics
from tests.support.processes import worker_env
from tests.support.waiting import eventually, wait_until
from tests.support.wallet import has_balance, signed_up

pytestmark = pytest.mark.e2e
KEY = "e2e-logs-signing-key-0123456789-abcdefghijklmn"
SERVER_KEY = "SB-Mid-server-e2e-logs"
CARD = "4811 1111 1111 1114"  # Midtrans's sandbox Visa


@dataclass
class Stack:
    """Every service of `ogp up`, each a process with its own log file in ``run_dir``."""

    settings: Settings
    run_dir: Path
    running: list[tuple[Service, ManagedProcess, str]]

    def url(self, name: str) -> str:
        return next(s.url for s, _, _ in self.running if s.name == name and s.url)

    def stop(self) -> None:
        for _, process, _ in reversed(self.running):
            process.stop(timeout=30)

    def log_lines(self) -> Iterator[tuple[str, str]]:
        """(service, line) for every line every process wrote."""
        for log in sorted(self.run_dir.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                yield log.stem, line


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(postgres_admin_url, private_kafka, redis_url):
    db = create_database(postgres_admin_url, f"logs_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    settings = Settings(
        environment="test",
        database_url=db,
        kafka_bootstrap_servers=private_kafka,
        redis_url=redis_url,
        jwt_signing_key=KEY,
        MIDTRANS_SERVER_KEY=SERVER_KEY,
        command_api_port=free_port(),
        query_api_port=free_port(),
        midtrans_sim_port=free_port(),
        midtrans_confirm_status=True,
        log_level="DEBUG",  # the processor's and projectors' per-message lines too
    )
    asyncio.run(recreate_topics(private_kafka, settings))
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-logs-"))
    env = worker_env(
        settings,
        OGP_JWT_SIGNING_KEY=KEY,
        MIDTRANS_SERVER_KEY=SERVER_KEY,
        OGP_COMMAND_API_PORT=str(settings.command_api_port),
        OGP_QUERY_API_PORT=str(settings.query_api_port),
        OGP_MIDTRANS_SIM_PORT=str(settings.midtrans_sim_port),
        OGP_MIDTRANS_CONFIRM_STATUS="true",
        OGP_LOG_LEVEL="DEBUG",
        OGP_HEALTH_HOST=settings.host,
    )
    stack = Stack(settings, run_dir, [])
    try:
        for service in services(settings):
            health = f"{service.url}/health"
            extra = {}
            if service.is_worker:
                port = free_port(settings.host)
                health, extra = f"http://{settings.host}:{port}/health", {"OGP_HEALTH_PORT": str(port)}
            process = ManagedProcess(service.name, run_dir)
            process.start(service.argv, env={**env, **extra})
            stack.running.append((service, process, health))
        for service, process, health in stack.running:
            wait_until(
                lambda url=health: _healthy(url),
                what=lambda name=service.name, proc=process: f"{name} answered /health; its log:\n{proc.tail()}",
            )
        yield stack
    finally:
        stack.stop()


def test_a_customer_story_leaves_json_logs_with_trace_ids_and_none_of_her_personal_data(stack):
    commands = httpx.Client(base_url=stack.url("command-api"), timeout=30)
    queries = httpx.Client(base_url=stack.url("query-api"), timeout=30)
    sim = httpx.Client(base_url=stack.url("midtrans-sim"), timeout=30)
    n = uuid.uuid4().int % 10**8
    siti = {
        "username": f"SitiNurhaliza{n}",
        "email": f"siti.nurhaliza.{n}@example.co.id",
        "phone": f"0812{n:08d}",
        "password": f"Siti's own secret {n}",
    }

    # Siti signs up (her first try has a phone that is no phone), then tries a wrong password by e-mail and by
    # phone before logging in by phone.
    refused = commands.post("/api/auth/register", json={**siti, "phone": "12345"})
    assert refused.status_code == 422, refused.text
    registered = commands.post("/api/auth/register", json=siti)
    assert registered.status_code == 201, registered.text
    again = commands.post("/api/auth/register", json={**siti, "username": f"{siti['username']}x"})
    assert again.status_code == 409, again.text
    for who in (siti["email"], siti["phone"]):
        wrong = commands.post("/api/auth/login", json={"username": who, "password": "not her password"})
        assert wrong.status_code == 401, wrong.text
    login = commands.post("/api/auth/login", json={"username": siti["phone"], "password": siti["password"]})
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    siti.update(registered.json(), auth=auth)
    assert commands.get("/api/auth/me", headers=auth).status_code == 200

    # She tops up by card, by BCA virtual account and by Mandiri bill; Midtrans notifies, the ledger credits.
    paid_with = {}
    for method, channel, amount in (
        ("CREDIT_CARD", "credit_card", 150000),
        ("BCA_VA", "bca_va", 250000),
        ("MANDIRI_BILL", "echannel", 100000),
    ):
        created = commands.post(
            "/api/payment/wallet/topup", json={"amount": amount, "payment_method": method}, headers=auth
        )
        assert created.status_code == 201, created.text
        paid = sim.post(f"/_sim/orders/{created.json()['order_id']}/pay", json={"channel": channel})
        paid_with[channel] = paid.raise_for_status().json()
    va_number = paid_with["bca_va"]["va_numbers"][0]["va_number"]
    bill_key = paid_with["echannel"]["bill_key"]
    eventually(lambda: has_balance(queries, siti, "500000.00"))

    # A forged notification (her VA payload, a wrong signature) is refused.
    forged = {**paid_with["bca_va"], "signature_key": "0" * 128}
    assert commands.post("/payments/webhook", json=forged).status_code == 401

    # She sends Budi 50,000 by his phone number, writing her own details into the description; a transfer to a
    # number nobody has and one of a negative amount are refused.
    budi = signed_up(commands, "budi")
    note = f"from {siti['email']} / {siti['phone']}, card {CARD}, VA {va_number}"
    headers = {**auth, "Prefer": "wait=10"}
    sent = commands.post(
        "/api/payment/transfer",
        json={"to": budi["phone"], "amount": "50000.00", "description": note},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert sent.status_code in (200, 202), sent.text
    nobody = commands.post(
        "/api/payment/transfer",
        json={"to": "081199999999", "amount": "1000.00", "description": note},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert nobody.status_code in (404, 422), nobody.text
    negative = commands.post(
        "/api/payment/transfer",
        json={"to": budi["phone"], "amount": "-5.00", "description": note},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert negative.status_code == 422, negative.text
    eventually(lambda: has_balance(queries, budi, "50000.00"))

    # She reads her history (and asks for a transaction that is not hers, with a broken cursor too).
    eventually(lambda: _history_has(queries, auth, 4))
    assert queries.get(f"/api/payment/transactions/{uuid.uuid4()}", headers=auth).status_code == 404
    assert queries.get("/api/payment/transactions", params={"cursor": "not-a-cursor"}, headers=auth).status_code in (
        400,
        422,
    )

    # Every process stops, so its shutdown lines are in its log too; then the logs are read whole.
    stack.stop()
    lines = list(stack.log_lines())
    services_logged = {service for service, _ in lines}
    assert {"command-api", "query-api", "midtrans-sim", "ledger-processor", "projector-history"} <= services_logged

    entries = []
    for service, line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"{service} wrote a line that is not JSON: {line!r}")
        assert isinstance(entry, dict) and entry.get("service"), f"{service}: {line}"
        entries.append((service, entry))

    phone_digits = siti["phone"][1:]  # 812…, inside every spelling: 0812…, +62812…, 62812…
    forbidden = {
        "name": siti["username"].lower(),
        "e-mail": siti["email"].lower(),
        "e-mail (URL-encoded)": siti["email"].replace("@", "%40").lower(),
        "phone": phone_digits,
        "card": CARD.replace(" ", ""),
        "card (grouped)": CARD,
        "VA number": va_number,
        "bill key": bill_key,
    }
    for service, line in lines:
        for what, value in forbidden.items():
            assert value not in line.lower(), f"{service} logged her {what}: {line}"

    # Lines written while handling a request carry its trace, its span and its correlation id.
    handled = [
        e
        for s, e in entries
        if s in ("command-api", "query-api") and e["logger"].startswith(("command_api", "query_api"))
    ]
    assert len(handled) >= 5, handled
    for entry in handled:
        assert re.fullmatch(r"[0-9a-f]{32}", entry.get("trace_id", "")), entry
        assert re.fullmatch(r"[0-9a-f]{16}", entry.get("span_id", "")), entry
        assert entry.get("correlation_id"), entry
    # uvicorn's own lines came through the same formatter (its access log stays off, as `ogp up` asks), and
    # DEBUG reached the workers.
    assert any(e["logger"] == "uvicorn.error" for s, e in entries if s == "command-api")
    assert not [e for _, e in entries if e["logger"] == "uvicorn.access"]
    assert any(e["level"] == "DEBUG" and e.get("transaction_id") for s, e in entries if s == "ledger-processor")


def _history_has(queries: httpx.Client, auth: dict, count: int) -> None:
    items = queries.get("/api/payment/transactions", params={"limit": 100}, headers=auth).json()["items"]
    assert len(items) >= count, items
