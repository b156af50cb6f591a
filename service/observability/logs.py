"""Logging setup: plain text for a terminal (the default of `make run`), or one JSON object per line for log
pipelines (`LOG_FORMAT=json`). Every record carries the request id; a request's access line carries its fields."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from service.observability.context import RequestIdLogFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# C0 controls (CR, LF, ESC, ...), DEL, C1 controls, and the Unicode line and paragraph separators: whatever a terminal
# or a log viewer may take for the end of a line or the start of an escape sequence.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\x0a`): one line, whatever a client sent."""
    return _CONTROLS.sub(_escape, text)


class TextFormatter(logging.Formatter):
    """Each record is one line that starts with its timestamp: control characters in the message are escaped, and
    a traceback's lines (which may quote what a client sent) are indented, so no line can pass for a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escape_controls(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: json.dumps escapes every control character (and all non-ASCII) itself."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    handler.addFilter(RequestIdLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our middleware logs one line per request with its id; uvicorn's own access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
