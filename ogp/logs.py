"""Structured JSON logs, one object a line, that an on-call engineer can filter and join to traces.

Every line carries the time, level, logger, service and message; inside a request or a span also the
correlation id and the OpenTelemetry ``trace_id``/``span_id``. Whatever a record holds (message, arguments,
extra fields, exception text) passes through :func:`scrub` on its way out: credentials and personal data
(e-mail addresses, phone numbers, names, card numbers, virtual-account numbers) are masked there and nowhere
else, while what operators look things up by (transaction, order and account ids, UUIDs, amounts, offsets,
partitions, timestamps, trace ids) is kept.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

from opentelemetry import trace

from ogp.settings import get_settings

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# -- what is masked ---------------------------------------------------------------------------------------------

# Anything that looks like a credential is masked, whatever logger wrote it.
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "***"),  # JWTs
    (re.compile(r"ogp_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{16,}"), "***"),  # our API keys
    (re.compile(r"\$argon2(?:id|i|d)\$[^\s\"']+"), "***"),  # password hashes
    (
        re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|authorization)(\"?\s*[:=]\s*\"?)([^\s\",}]+)"),
        r"\1\2***",
    ),
    (re.compile(r"(?i)(postgres(?:ql)?(?:\+\w+)?://[^:/\s]+:)[^@\s]+@"), r"\1***@"),
]

# Fields whose value is personal whatever it looks like: what we hold of a user (users: username, email,
# phone; Midtrans's customer_details: first_name, last_name, email, phone) and the payment identifiers that
# lead back to one (virtual-account numbers, Mandiri bill keys, convenience-store payment codes, card numbers).
_PERSONAL_KEYS = frozenset(
    {
        "name",
        "full_name",
        "first_name",
        "last_name",
        "customer_name",
        "username",
        "user_name",
        "email",
        "phone",
        "phone_number",
        "msisdn",
        "address",
        "billing_address",
        "shipping_address",
        "card_number",
        "va_number",
        "va_numbers",
        "permata_va_number",
        "bill_key",
        "payment_code",
    }
)
_SECRET_KEYS = frozenset(
    {"password", "passwd", "secret", "token", "access_token", "refresh_token", "api_key", "authorization"}
)
# Fields an operator looks things up by: never rewritten, even when a value happens to look like a number
# above (an offset of 6281234567 is an offset).
_KEPT_KEYS = frozenset(
    {
        "ts",
        "level",
        "logger",
        "service",
        "trace_id",
        "span_id",
        "correlation_id",
        "transaction_id",
        "order_id",
        "payment_id",
        "event_id",
        "account_id",
        "user_id",
        "partition",
        "offset",
        "amount",
        "retry_after",
    }
)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes, standing alone (not inside a UUID, a hex id or a longer
# number); masked only when the Luhn check passes, as every card number does (an epoch in milliseconds rarely).
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?!-?\w)")
# Indonesian mobile numbers: +62 8…, 62 8…, 08… with 8 to 11 digits after the 8, separators allowed.
_PHONE = re.compile(r"(?<![\w+.-])\(?(?:\+62[\s-]?|62[\s-]?|0)\(?8(?:\)?[\s.-]?\d){8,11}(?!-?\w)")
# A long digit run right after words that name a VA number, a bill key or a payment code.
_PAYMENT_CODE = re.compile(
    r"(?i)\b((?:va|virtual[ _]account|bill[ _]key|payment[ _]code)(?:[ _]?(?:number|no|num))?\b\W{1,4})(\d[\d -]{4,}\d)"
)


def _keyed_pattern() -> re.Pattern[str]:
    keys = "|".join(sorted(_PERSONAL_KEYS, key=len, reverse=True))
    # key=value, "key": value, 'key': value, key: value; the value quoted, a list, or one bare token.
    return re.compile(
        rf"""(?i)(?P<q>["']?)\b(?P<key>{keys})\b(?P=q)(?P<sep>\s*[:=]\s*)"""
        r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\[[^\]]*\]|[^\s,;&)}\]]+)"""
    )


_KEYED = _keyed_pattern()


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    if not _luhn(digits):
        return match.group()
    # Like Midtrans's masked_card: the issuer's 6 digits and the last 4 are not secret; the rest is.
    return f"{digits[:6]}{'*' * (len(digits) - 10)}{digits[-4:]}"


def _keyed(match: re.Match[str]) -> str:
    value = match.group("value")
    if match.group("key").lower() == "name" and not match.group("q") and "=" not in match.group("sep"):
        return match.group()  # "topic name: ogp.commands" is prose, not a person's name
    masked = f"{value[0]}***{value[0]}" if value[0] in "\"'" else "[***]" if value[0] == "[" else "***"
    return f"{match.group('q')}{match.group('key')}{match.group('q')}{match.group('sep')}{masked}"


def redact(text: str) -> str:
    """``text`` with credentials and personal data masked (the free-text half of :func:`scrub`)."""
    # Each pattern runs only where it could match: most lines have no '@', no '=' and few digits, and a
    # DEBUG line per command must stay cheap.
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if ":" in text or "=" in text:
        text = _KEYED.sub(_keyed, text)
    if "@" in text or "%40" in text:
        text = _EMAIL.sub("[email]", text)
    digits = sum(map(str.isdigit, text))
    if digits >= 13:
        text = _CARD.sub(_card, text)
    if digits >= 6:
        text = _PAYMENT_CODE.sub(r"\1***", text)
    if digits >= 9:
        text = _PHONE.sub("[phone]", text)
    return text


def scrub(value: Any, key: str | None = None) -> Any:
    """``value`` (found under ``key``) with credentials and personal data masked, structure kept."""
    name = key.lower().replace("-", "_") if key else None
    if name in _KEPT_KEYS:
        return value
    if name in _SECRET_KEYS or name in _PERSONAL_KEYS:
        return "***" if value not in (None, "") else value
    if value is None or isinstance(value, bool | float | Decimal):
        return value
    if isinstance(value, int):
        text = str(value)  # a phone or card number may arrive as an int
        masked = redact(text)
        return value if masked == text else masked
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    return redact(str(value))


# -- the line ---------------------------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came in through ``extra=`` and is written out.
# uvicorn's color_message repeats the message with terminal colours.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, service, msg, correlation and trace ids, extras, exc."""

    def __init__(self, service: str | None = None):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if self.service:
            entry["service"] = self.service
        entry["msg"] = _message(record)
        if cid := (getattr(record, "correlation_id", None) or correlation_id.get()):
            entry["correlation_id"] = cid
        # Read at format time: the span current where the line was written (a request's, a batch's).
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key == "correlation_id" or key.startswith("_"):
                continue
            # An extra named like a field above (the processor's own "service", say) is kept beside it.
            entry[f"extra_{key}" if key in entry else key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(scrub(entry), default=str)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the format: still one JSON line, not a traceback
        return f"{record.msg!s} (unformattable arguments)"


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """A crash's traceback as one JSON line rather than raw text on stderr."""
    logging.getLogger("uncaught").critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def configure_logging(service: str, level: str | None = None) -> None:
    """Send every logger's records (uvicorn's and Python warnings included) to stderr as masked JSON lines;
    ``level`` defaults to ``OGP_LOG_LEVEL``."""
    level = level or get_settings().log_level
    root = logging.getLogger()
    # Replace only our own handler (idempotent), leaving others (pytest's capture, say) in place.
    root.handlers[:] = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.getLevelName(level):
        root.setLevel(level)
    # httpx logs every request at INFO: a supervisor probing /health every 2 s would drown its own lines.
    for noisy in ("aiokafka", "kafka", "httpx"):
        logging.getLogger(noisy).setLevel("WARNING")
    # uvicorn gives its loggers plain-text handlers of their own; through ours instead, its lines are JSON too.
    # An access log that is off (--no-access-log: no handlers, not propagating) stays off: uvicorn writes one
    # whenever the logger has any handler, its ancestors' included.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if logger.handlers or logger.propagate:
            logger.handlers.clear()
            logger.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
