"""NDJSON read as a stream: lines split from arbitrary byte chunks, each validated on its own.

Memory stays bounded by the longest allowed line: a line past that limit is skipped up to its newline and
reported, never buffered whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from pydantic import ValidationError

from service.model.documents import DocumentIn, document_violation
from service.settings import Settings


@dataclass(frozen=True)
class Accepted:
    line: int
    document: DocumentIn


@dataclass(frozen=True)
class Rejected:
    line: int
    id: str | None
    error: str


def max_line_bytes(settings: Settings) -> int:
    """The longest line a valid document can take: text and title at their limit, fully \\u-escaped, plus metadata."""
    return 6 * (2 * settings.max_text_chars + 512) + 6 * settings.max_metadata_bytes + 4096


async def split_lines(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number from 1, raw line) for every non-blank line; raw is None for a line longer than `limit`."""
    buffer = bytearray()
    number = 0
    skipping = False  # inside a line already reported as too long
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not skipping:
                buffer += piece
                if len(buffer) > limit:
                    skipping = True
                    buffer.clear()
            if end < 0:
                break
            number += 1
            if skipping:
                yield number, None
            elif buffer.strip():
                yield number, bytes(buffer)
            buffer.clear()
            skipping = False
            start = end + 1
    if skipping or buffer.strip():
        number += 1
        yield number, None if skipping else bytes(buffer)


def parse_line(number: int, raw: bytes | None, settings: Settings, limit: int) -> Accepted | Rejected:
    if raw is None:
        return Rejected(number, None, f"line longer than {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(number, None, f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return Rejected(number, None, f"invalid JSON: {exc}")
    except RecursionError:  # arrays or objects nested past the parser's depth: a bad line, not a dead upload
        return Rejected(number, None, "invalid JSON: nested too deeply")
    if not isinstance(obj, dict):
        return Rejected(number, None, "a line must be a JSON object (one document)")
    raw_id = obj.get("id")
    # Kept in the job's errors, which are served as JSON: a lone surrogate (\ud800) could not be encoded.
    doc_id = raw_id[:512].encode("utf-8", "backslashreplace").decode() if isinstance(raw_id, str) else None
    try:
        doc = DocumentIn.model_validate(obj)
    except ValidationError as exc:
        reasons = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)[:3])
        return Rejected(number, doc_id, reasons)
    if violation := document_violation(doc, settings):
        field, message = violation
        return Rejected(number, doc.id, f"{field}: {message}")
    return Accepted(number, doc)


def _where(loc: tuple) -> str:
    """A field's place for an error, e.g. "metadata"; a name the client made up (an unknown field) is cut short and
    freed of what JSON cannot carry, since job errors are served as JSON."""
    where = ".".join(map(str, loc)) or "document"
    where = where if len(where) <= 100 else where[:100] + "..."
    return where.encode("utf-8", "backslashreplace").decode()
