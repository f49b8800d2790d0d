"""Structured JSON logs with correlation ids; secrets are redacted before anything is written."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

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


def redact(text: str) -> str:
    """``text`` with tokens, keys, hashes and passwords masked."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if cid := (getattr(record, "correlation_id", None) or correlation_id.get()):
            entry["correlation_id"] = cid
        for key in (
            "transaction_id",
            "account_id",
            "user_id",
            "partition",
            "offset",
            "trace_id",
            "service",
            "retry_after",
        ):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stderr as redacted JSON lines."""
    root = logging.getLogger()
    # Replace only our own handler (idempotent), leaving others (pytest's capture, say) in place.
    root.handlers[:] = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.getLevelName(level):
        root.setLevel(level)
    # httpx logs every request at INFO: a supervisor probing /health every 2 s would drown its own lines.
    for noisy in ("aiokafka", "kafka", "httpx"):
        logging.getLogger(noisy).setLevel("WARNING")
