"""Process logging for ``pulsebeam serve``: one line per event, plain or JSON.

Records may carry ``project``, ``group``, ``peer`` and ``conn`` (passed with ``extra=``); the
JSON form puts them in fields. Nothing here logs tokens, SDPs or secrets, and a filter masks
anything shaped like a compact JWS or an ``sk_`` secret in case a message ever carries one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

__all__ = ["configure_logging"]

CONTEXT_FIELDS = ("project", "group", "peer", "conn", "node", "replaced")
_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+|sk_[0-9a-f]{64}|v=0\r?\n\S+"
)


def redact(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{name}={record.__dict__[name]}"
            for name in CONTEXT_FIELDS
            if record.__dict__.get(name) is not None
        )
        return f"{text} [{context}]" if context else text


def configure_logging(*, json_lines: bool, level: str = "INFO") -> None:
    """Route every logger to stderr in the chosen format (replaces existing root handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(_RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "hypercorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
