"""Line splitting and per-line validation, on byte streams cut at awkward places."""

from __future__ import annotations

import asyncio

from service.ingest.ndjson import Accepted, Rejected, parse_line, split_lines
from service.settings import Settings


async def _collect(chunks: list[bytes], limit: int) -> list[tuple[int, bytes | None]]:
    async def stream():
        for c in chunks:
            yield c

    return [item async for item in split_lines(stream(), limit)]


def test_lines_split_across_chunks_keep_their_numbers():
    data = b'{"a":1}\n\n  \n{"b":2}\r\n{"c":3}'
    for size in (1, 2, 3, 7, 100):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        got = asyncio.run(_collect(chunks, 1000))
        assert got == [(1, b'{"a":1}'), (4, b'{"b":2}\r'), (5, b'{"c":3}')], size


def test_a_line_over_the_limit_is_reported_not_buffered():
    data = b'{"ok":1}\n' + b"x" * 5000 + b'\n{"ok":2}\n' + b"y" * 5000
    got = asyncio.run(_collect([data[i : i + 64] for i in range(0, len(data), 64)], 100))
    assert got == [(1, b'{"ok":1}'), (2, None), (3, b'{"ok":2}'), (4, None)]


def test_each_kind_of_bad_line_has_its_reason():
    settings = Settings(max_text_chars=50, max_metadata_bytes=30)
    cases = {
        b"\xff\xfe{}": "invalid UTF-8",
        b'{"id": "a", "text": "x"': "invalid JSON",
        b"[1, 2]": "JSON object",
        b'{"text": "no id"}': "id",
        b'{"id": "", "text": "empty id"}': "id",
        b'{"id": "b", "text": "   "}': "blank",
        b'{"id": "c", "text": "' + b"z" * 51 + b'"}': "text: longer than 50",
        b'{"id": "d", "text": "ok", "title": "' + b"t" * 51 + b'"}': "title: longer than 50",
        b'{"id": "e", "text": "ok", "metadata": {"k": "' + b"m" * 40 + b'"}}': "metadata: larger than 30",
        b'{"id": "f", "text": "ok", "metadata": {"k": {"nested": 1}}}': "metadata",
        b'{"id": "g", "text": "ok", "extra": 1}': "extra",
    }
    for raw, reason in cases.items():
        result = parse_line(7, raw, settings, 10_000)
        assert isinstance(result, Rejected), raw
        assert result.line == 7 and reason in result.error, (raw, result.error)
    assert parse_line(3, b'{"id": "c", "text": "' + b"z" * 51 + b'"}', settings, 10_000).id == "c"
    good = parse_line(9, b'{"id": "h", "text": "ok", "title": "T", "metadata": {"k": [1, 2]}}', settings, 1000)
    assert isinstance(good, Accepted) and good.document.id == "h" and good.line == 9
