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


# --- hostile lines (docs/api.md, "Metadata and filters"): each one rejected with its line number, none fatal ---

HOSTILE_LINES = {
    # Nested past Python's recursion limit: json.loads raises RecursionError, not ValueError.
    b"[" * 100_000 + b"]" * 100_000: "nested too deeply",
    b'{"id": "n", "text": "x", "metadata": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}": "nested too deeply",
    # Within the parser's depth, but not metadata.
    b'{"id": "n2", "text": "x", "metadata": {"k": ' + b"[" * 500 + b"]" * 500 + b"}}": "metadata",
    # Keys that are Qdrant JSON-path syntax, or empty, or too long.
    b'{"id": "p1", "text": "poison", "metadata": {"a[": "v"}}': 'key "a["',
    b'{"id": "p2", "text": "poison", "metadata": {"": "v"}}': 'key ""',
    b'{"id": "p3", "text": "poison", "metadata": {"a.b": "v"}}': 'key "a.b"',
    b'{"id": "p4", "text": "poison", "metadata": {"a\\"b": "v"}}': "not a valid key",
    b'{"id": "p5", "text": "poison", "metadata": {"' + b"k" * 65 + b'": "v"}}': "not a valid key",
    b'{"id": "p6", "text": "poison", "metadata": {"a\\nb": "v"}}': "not a valid key",
    # Numbers Qdrant cannot hold.
    b'{"id": "i1", "text": "x", "metadata": {"n": ' + str(2**70).encode() + b"}}": "64 bits",
    b'{"id": "i2", "text": "x", "metadata": {"n": ' + str(-(2**63) - 1).encode() + b"}}": "64 bits",
    b'{"id": "f1", "text": "x", "metadata": {"n": NaN}}': "finite",
    b'{"id": "f2", "text": "x", "metadata": {"n": Infinity}}': "finite",
    b'{"id": "f3", "text": "x", "metadata": {"n": [1, -Infinity]}}': "finite",
    b'{"id": "f4", "text": "x", "metadata": {"n": 1e999}}': "finite",
    # Strings and lists over their caps, lists of lists, strings UTF-8 cannot encode.
    b'{"id": "s1", "text": "x", "metadata": {"s": "' + b"v" * 4097 + b'"}}': "at most 4096 characters",
    b'{"id": "l1", "text": "x", "metadata": {"l": [' + b",".join([b"1"] * 1001) + b"]}}": "at most 1000 values",
    b'{"id": "l2", "text": "x", "metadata": {"l": [[1]]}}': "scalars only",
    b'{"id": "u1", "text": "x", "metadata": {"s": "\\ud800"}}': "valid Unicode",
    b'{"id": "u2", "text": "x", "title": "\\udfff"}': "title",
}


def test_hostile_lines_are_rejected_with_their_line_number():
    settings = Settings(_env_file=None)
    for raw, reason in HOSTILE_LINES.items():
        result = parse_line(11, raw, settings, 10_000_000)
        assert isinstance(result, Rejected), raw[:80]
        assert result.line == 11 and reason in result.error, (raw[:80], result.error)
        assert len(result.error) < 1000
        result.error.encode("utf-8")  # served as JSON in the job: always encodable


def test_a_rejected_lines_id_and_reason_are_always_encodable():
    """A job's errors are served as JSON: an id or an unknown field's name with a lone surrogate must not make
    GET /v1/jobs/{id} fail."""
    settings = Settings(_env_file=None)
    bad_id = parse_line(1, b'{"id": "\\ud800x", "text": "t"}', settings, 10_000)
    assert isinstance(bad_id, Rejected) and bad_id.id == "\\ud800x" and "id" in bad_id.error
    bad_field = parse_line(2, b'{"id": "ok", "text": "t", "\\udfff' + b"f" * 500 + b'": 1}', settings, 10_000)
    assert isinstance(bad_field, Rejected) and bad_field.id == "ok"
    for result in (bad_id, bad_field):
        (result.id or "").encode("utf-8")
        result.error.encode("utf-8")
    assert len(bad_field.error) < 300


def test_valid_edge_values_are_accepted():
    settings = Settings(_env_file=None)
    line = (
        b'{"id": "ok", "text": "t", "metadata": {"a-b_C9": 1, "' + b"k" * 64 + b'": "v", "min": '
        + str(-(2**63)).encode()
        + b', "max": '
        + str(2**63 - 1).encode()
        + b', "f": 1e308, "s": "' + b"v" * 4096 + b'", "l": [' + b",".join([b"1"] * 1000) + b'], "n": null,'
        b' "mixed": ["x", 1, true, 1.5, null], "empty": [], "ctl": "a\\u0000b"}}'
    )
    good = parse_line(1, line, settings, 10_000_000)
    assert isinstance(good, Accepted), getattr(good, "error", None)
    assert good.document.metadata["max"] == 2**63 - 1
