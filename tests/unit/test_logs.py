"""What a log line carries (ogp/logs.py): JSON with the service, correlation and trace ids; personal data masked
by the one scrubbing step, and what operators look things up by left alone."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from ogp.logs import JsonFormatter, configure_logging, correlation_id, redact, scrub

MASKED = [
    # e-mail addresses, as typed and URL-encoded
    ("registered dewi.lestari+wallet@example.co.id", "registered [email]"),
    ("GET /users?q=dewi%40example.com", "GET /users?q=[email]"),
    # Indonesian mobile numbers in every usual spelling
    ("phone +6281234567890", "phone [phone]"),
    ("phone 6281234567890", "phone [phone]"),
    ("phone 081234567890", "phone [phone]"),
    ("phone 0812-3456-7890", "phone [phone]"),
    ("phone 0812.3456.7890", "phone [phone]"),
    ("phone +62 812 3456 7890", "phone [phone]"),
    ("phone +62-812-3456-789", "phone [phone]"),
    ("call (0812) 3456 7890 now", "call [phone] now"),
    ("phone 0812345678.", "phone [phone]."),
    # card numbers: issuer digits and the last four kept, as in Midtrans's masked_card
    ("card 4811111111111114", "card 481111******1114"),
    ("card 4811 1111 1111 1114", "card 481111******1114"),
    ("card 4811-1111-1111-1114 declined", "card 481111******1114 declined"),
    ("amex 378282246310005", "amex 378282*****0005"),
    # VA numbers, bill keys and payment codes: by their key, in any of the usual notations, and after their name
    ("va_number=12345678901", "va_number=***"),
    ("{'va_numbers': [{'bank': 'bca', 'va_number': '12345678901'}]}", "{'va_numbers': [***]}"),
    ('{"bill_key": "123456789012", "biller_code": "70012"}', '{"bill_key": "***", "biller_code": "70012"}'),
    ("permata_va_number: 1234567890123456", "permata_va_number: ***"),
    ('"payment_code": "12345678901234"', '"payment_code": "***"'),
    ("paid to VA 8808123456789", "paid to VA ***"),
    ("virtual account no. 8808 1234 5678", "virtual account no. ***"),
    # names: by the keys that hold one (ours: username; Midtrans's customer_details: first_name, last_name)
    (
        "{'first_name': 'Dewi Lestari', 'last_name': 'Putri', 'email': 'd@x.io', 'phone': '+6281234567890'}",
        "{'first_name': '***', 'last_name': '***', 'email': '***', 'phone': '***'}",
    ),
    ("customer_name=Dewi user_id=5", "customer_name=*** user_id=5"),
    ('"username": "dewi_lestari"', '"username": "***"'),
    ("full_name='Dewi Lestari'", "full_name='***'"),
    ("name=Dewi", "name=***"),
    # secrets, as before
    ("password=hunter2 and token: abc", "password=*** and token: ***"),
    ("postgresql+psycopg://ogp:s3cret@db/ogp", "postgresql+psycopg://ogp:***@db/ogp"),
]

KEPT = [
    "transaction 3f2b8c1e-0812-4567-8901-081234567890 posted",  # a UUID with phone-like groups
    "uuid 08123456-7890-4123-8456-081234567890",
    "trace 0812345678901234abcdef0123456789 span 0812345678901234",  # hex ids with long digit runs
    "trace 08123456789012340812345678901234",
    "order TOPUP-081234567890 and ORDER_6281234567890",  # order ids that embed numbers
    "offset 12345 partition 3 lag 0",
    "amount 150000.00 balance 20000000.00",
    "took 0.81234567 s",
    "at 2024-08-12T10:00:00.123+00:00",
    "epoch 1712345678901",  # 13 digits, but no card: the Luhn check fails
    "approval_code 1234567890123",
    "masked_card 481111-1114",  # already masked by Midtrans
    "topic name: ogp.commands",  # the word "name" in prose
    "biller_code 70012, bank bca, gross_amount 150000.00",
    "user_id=42 account_id=8c0e6f0a-5a9e-4b4e-9d55-7b1f7d0c2a11",
]


@pytest.mark.parametrize(("raw", "masked"), MASKED)
def test_personal_data_and_secrets_are_masked(raw, masked):
    assert redact(raw) == masked


@pytest.mark.parametrize("raw", KEPT)
def test_what_operators_look_things_up_by_is_kept(raw):
    assert redact(raw) == raw


def test_structured_fields_are_masked_by_their_key_and_ids_are_kept_whatever_they_look_like():
    fields = {
        "phone": "0812",  # masked by key, however short
        "customer_details": {"first_name": "Dewi", "email": "d@x.io", "city": "Bandung"},
        "va_numbers": [{"bank": "bca", "va_number": "12345678901"}],
        "contact": 6281234567890,  # a phone number that arrived as an int
        "note": "reach me at dewi@example.com",
        "refresh_token": "abc",
        "offset": 6281234567,
        "order_id": "081234567890",
        "amount": "4811111111111114",
        "count": 3,
    }
    assert scrub(fields) == {
        "phone": "***",
        "customer_details": {"first_name": "***", "email": "***", "city": "Bandung"},
        "va_numbers": "***",
        "contact": "[phone]",
        "note": "reach me at [email]",
        "refresh_token": "***",
        "offset": 6281234567,
        "order_id": "081234567890",
        "amount": "4811111111111114",
        "count": 3,
    }


def record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("command_api.identity.service", logging.INFO, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_the_message_its_arguments_the_extra_fields_and_the_exception_are_all_masked():
    try:
        raise ValueError("duplicate key (email)=(dewi@example.com), phone +6281234567890")
    except ValueError:
        exc_info = sys.exc_info()
    line = JsonFormatter("command-api").format(
        record(
            "registered %s with %s",
            "dewi@example.com",
            "0812-3456-7890",
            exc_info=exc_info,
            username="dewi_lestari",
            details={"card": "4811 1111 1111 1114"},
            order_id="ORDER-1",
            partition=3,
        )
    )
    entry = json.loads(line)
    assert entry["msg"] == "registered [email] with [phone]"
    assert entry["username"] == "***" and entry["details"] == {"card": "481111******1114"}
    assert entry["order_id"] == "ORDER-1" and entry["partition"] == 3
    assert "ValueError" in entry["exc"] and "[email]" in entry["exc"] and "[phone]" in entry["exc"]
    for leaked in ("dewi@example.com", "6281234567890", "3456-7890", "dewi_lestari", "1111 1111"):
        assert leaked not in line


def test_a_line_carries_the_service_the_correlation_id_and_the_current_span():
    formatter = JsonFormatter("query-api")
    outside = json.loads(formatter.format(record("idle")))
    assert outside["service"] == "query-api" and outside["msg"] == "idle"
    assert "trace_id" not in outside and "span_id" not in outside and "correlation_id" not in outside

    span = NonRecordingSpan(SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1)))
    token = correlation_id.set("req-0123456789")
    try:
        with trace.use_span(span):
            inside = json.loads(formatter.format(record("handled")))
    finally:
        correlation_id.reset(token)
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert inside["span_id"] == "b7ad6b7169203331"
    assert inside["correlation_id"] == "req-0123456789"


def test_a_record_s_own_correlation_id_wins_and_a_clashing_extra_is_kept_beside_the_field():
    entry = json.loads(JsonFormatter("ledger-processor").format(record("x", correlation_id="cmd-1", service="h:1:ab")))
    assert entry["correlation_id"] == "cmd-1"
    assert entry["service"] == "ledger-processor" and entry["extra_service"] == "h:1:ab"


def test_arguments_that_do_not_fit_the_format_still_make_one_json_line():
    entry = json.loads(JsonFormatter().format(record("%d items", "many")))
    assert entry["msg"] == "%d items (unformattable arguments)"


@pytest.fixture
def configured(monkeypatch):
    """configure_logging("command-api") writing to a buffer; the process's logging restored afterwards."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn_error = logging.getLogger("uvicorn.error")
    # As uvicorn's own dictConfig leaves it: a plain-text handler, not propagating, at INFO (a test server run
    # earlier in this process at log_level="warning" leaves it at WARNING).
    uvicorn_error.addHandler(logging.StreamHandler(buffer))
    uvicorn_error.propagate = False
    monkeypatch.setattr(uvicorn_error, "level", logging.INFO)
    access = logging.getLogger("uvicorn.access")
    access.propagate = False  # as uvicorn leaves it under --no-access-log: no handlers, not propagating
    logging.captureWarnings(False)  # an earlier test may have left it on, and then turning it on does nothing
    configure_logging("command-api", "INFO")
    yield buffer
    logging.captureWarnings(False)
    root.handlers[:], root.level = handlers, level
    uvicorn_error.handlers.clear()
    access.propagate = True


def test_uvicorn_lines_python_warnings_and_crashes_are_json_lines_too(configured):
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 4242)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API for dewi@example.com", DeprecationWarning, stacklevel=1)
    try:
        raise RuntimeError("boom for +6281234567890")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    lines = configured.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [e["logger"] for e in entries] == ["uvicorn.error", "py.warnings", "uncaught"]
    assert all(e["service"] == "command-api" for e in entries)
    assert entries[0]["msg"] == "Started server process [4242]"
    assert "[email]" in entries[1]["msg"] and "RuntimeError" in entries[2]["exc"]
    assert "dewi@example.com" not in configured.getvalue() and "6281234567890" not in configured.getvalue()


def test_an_access_log_turned_off_stays_off(configured):
    # uvicorn writes access lines whenever its access logger has a handler, its ancestors' included: ours must
    # not become one.
    access = logging.getLogger("uvicorn.access")
    assert not access.propagate
    access.info('127.0.0.1:5000 - "GET / HTTP/1.1" 200')
    assert configured.getvalue() == ""
