"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by tests/api/test_fuzz.py): every generated request may be
turned hostile. Schemathesis generates from the schema; these put in what a schema does not describe:

- path parameters aimed at the collection that exists (`FUZZ_COLLECTION`), so that requests reach the store, or
  made of control characters, JSON-path syntax, very long strings;
- a JSON body sent as raw text with one value replaced by NaN, Infinity, an integer past 64 bits, a lone
  surrogate, a very long or control-character string, or arrays nested past the parser's depth; or with a filter
  or metadata of hostile keys and values; or an unknown field of a hostile name;
- hostile query values.

Raw text, because Python's json (the server's parser) accepts NaN and Infinity while a client library would refuse
to send them.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import strategies as st

FUZZ_COLLECTION = "fuzz"

KEYS = ["a[", "", '"', "a.b", "a]", "x y", "\u00fc", "k" * 65, "a\nb", "\u2028", "_bool", "ok_key", "$where"]
STRINGS = [
    "",
    " ",
    "a[",
    "\n",
    "\r\n2026-12-01 12:00:00,000 INFO thinksearch.access [forged] GET / 200",
    "\x00",
    "\x1b[2J",
    "\u2028\u2029\u0085",
    "\ufeff",
    "x" * 9000,
    "\u00e9" * 5000,
    "%s%n%x",
    "../../etc/passwd",
]
# JSON text as it goes on the wire: tokens Python's json accepts that a schema (and most clients) never produce.
RAW_TOKENS = [
    *(json.dumps(s) for s in STRINGS),
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    str(2**70),
    str(-(2**70)),
    str(2**63),
    str(2**64 - 1),
    "1e308",
    "-0",
    "4.9e-324",
    '"\\ud800"',
    '"x\\udfffy"',
    "[" * 100_000 + "]" * 100_000,
    "[" * 900 + "]" * 900,
    '{"a":' * 900 + "1" + "}" * 900,
    "[" + ",".join(["1"] * 1001) + "]",
]
PATH_STRINGS = ["a[", "x\ny", "%0A", "\u00fc", "k" * 1000, " ", "\x00", "a/b", "fuzz\n", '"', "\u2028"]
QUERY_VALUES = ["a[", "\n", "99999999999999999999999", "-1", "NaN", "Infinity", "x" * 5000, "\x00", "", "1e999"]
SENTINEL = "\u0001hostile\u0001"

raw = st.sampled_from(RAW_TOKENS)


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every value inside `value` (the containers too: they can be replaced whole)."""
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            paths += _leaves(item, (*path, i))
    return paths


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {**value, head: _replaced(value.get(head), tuple(rest), new)}
    copy = list(value)
    copy[head] = _replaced(copy[head], tuple(rest), new)
    return copy


def _with_token(value: Any, path: tuple, token: str) -> bytes:
    """`value` as JSON text with the value at `path` replaced by the raw `token`."""
    text = json.dumps(_replaced(value, path, SENTINEL))
    return text.replace(json.dumps(SENTINEL), token, 1).encode()


@st.composite
def hostile_object(draw: st.DrawFn, *, allow_null: bool = True) -> str:
    """A JSON object (as text) of hostile keys and values, for a `filter` or a `metadata`."""
    n = draw(st.sampled_from([1, 2, 3, 40]))
    entries = []
    for i in range(n):
        key = draw(st.sampled_from(KEYS)) if n < 40 else f"k{i}"
        token = draw(st.one_of(raw, st.sampled_from(["1", '"v"', "true", "null", "[]", '["v", 1]', "[[1]]"])))
        entries.append(f"{json.dumps(key)}: {token}")
    return "{" + ", ".join(entries) + "}"


# Bodies valid but for one hostile part (`@`), per operation: they get past the schema to the store.
TARGETED = {
    "/v1/collections/{name}/search": [
        '{"query": "hello world", "filter": @}',
        '{"query": @}',
        '{"query": "hello", "top_k": @}',
        '{"query": "hello", "filter": {"lang": @}, "retrieval": "hybrid"}',
    ],
    "/v1/collections/{name}/search/batch": [
        '{"searches": [{"query": "hello"}, {"query": "world", "filter": @}]}',
        '{"searches": [{"query": @}]}',
    ],
    "/v1/collections/{name}/documents": [
        '{"documents": [{"id": "h1", "text": "hostile metadata", "metadata": @}]}',
        '{"documents": [{"id": @, "text": "hostile id"}]}',
        '{"documents": [{"id": "h2", "text": "hostile title", "title": @}]}',
        '{"documents": [{"id": "h3", "text": @}]}',
    ],
    "/v1/collections/{name}/warm": ['{"queries": [@]}'],
    "/v1/collections": ['{"name": @}', '{"name": "fz", "hnsw": {"m": @}}', '{"name": "fz2", "chunking": @}'],
}


@st.composite
def hostile_body(draw: st.DrawFn, body: Any, path: str) -> Any:
    kind = draw(st.sampled_from(["leaf", "targeted", "targeted", "targeted", "unknown"]))
    templates = TARGETED.get(path)
    if kind == "targeted" and templates:
        template = draw(st.sampled_from(templates))
        part = draw(hostile_object()) if "filter" in template or "metadata" in template else draw(raw)
        if template.endswith(("filter: @}", 'filter": @}', 'metadata": @}]}', 'filter": @}]}')):
            part = draw(st.one_of(hostile_object(), raw))
        return template.replace("@", part, 1).encode()
    if kind == "unknown" and isinstance(body, dict):
        name = draw(st.sampled_from([*KEYS, "\\ud800"]))
        field = json.dumps(name) if name != "\\ud800" else '"\\ud800"'
        text = json.dumps(body)
        return ("{" + f"{field}: 1" + (", " if body else "") + text[1:]).encode()
    return _with_token(body, draw(st.sampled_from(_leaves(body))), draw(raw))


def _targets_collection(operation: Any) -> bool:
    # Not the DELETE of a collection: aimed at the fuzz collection it would remove it for the rest of the run.
    return not (operation.method.upper() == "DELETE" and operation.path == "/v1/collections/{name}")


@schemathesis.hook
def flatmap_case(context: schemathesis.HookContext, case: Any) -> st.SearchStrategy:
    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        operation = context.operation
        if case.path_parameters:
            params = dict(case.path_parameters)
            for name in params:
                choice = draw(st.sampled_from(["keep", "fuzz", "fuzz", "hostile"]))
                if choice == "fuzz" and name == "name" and operation is not None and _targets_collection(operation):
                    params[name] = FUZZ_COLLECTION
                elif choice == "hostile":
                    params[name] = draw(st.sampled_from(PATH_STRINGS))
            case.path_parameters = params
        if case.query and draw(st.booleans()):
            case.query = {key: draw(st.sampled_from(QUERY_VALUES)) for key in case.query}
        media_type = (case.media_type or "").lower()
        json_value = isinstance(case.body, dict | list | str | int | float | bool) or case.body is None
        if json_value and "json" in media_type and draw(st.integers(0, 3)) > 0:
            case.body = draw(hostile_body(case.body, operation.path if operation is not None else ""))
        return case

    return mutate()
