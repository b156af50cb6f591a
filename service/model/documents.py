"""A document as clients send it, validated the same way on every path that writes one (the upsert route, bulk
lines, the worker reading its queue), and the size limits one document must keep."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.settings import Settings

MetadataValue = str | int | float | bool
FilterValue = MetadataValue | list[MetadataValue]
SCALARS = (str, int, float, bool, type(None))

# --- what metadata and filters may hold (docs/api.md, "Metadata and filters") ---
# A key becomes part of a Qdrant JSON path (`metadata.<key>`), so it is 1 to 64 of these characters: the path syntax
# (`.`, `[`, `]`, quotes, spaces) never appears in one. Fixed rules, not settings: the store depends on them.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEY_RULE = "1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"
MAX_VALUE_CHARS = 4096  # a string value of metadata or of a filter: keywords to match, not text
MAX_LIST_VALUES = 1000  # a metadata list, a filter's any-of list
MAX_FILTER_KEYS = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # Qdrant's integer payload type


def shown(text: str, limit: int = 40) -> str:
    """A client's string, quoted for an error message: cut short, control characters and lone surrogates escaped."""
    return json.dumps(text[:limit]) + ("..." if len(text) > limit else "")


def encodable(text: str) -> bool:
    """False for a string JSON can carry but UTF-8 cannot (a lone surrogate such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_problem(key: str) -> str | None:
    if KEY_PATTERN.fullmatch(key):
        return None
    return f"key {shown(key)} is not a valid key: use {KEY_RULE}"


def scalar_problem(value: Any, *, allow_null: bool) -> str | None:
    """Why `value` cannot be stored or matched as a scalar (None: it can)."""
    if value is None:
        return None if allow_null else "null is not a filter value"
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else "an integer must fit in 64 bits (signed)"
    if isinstance(value, float):
        return None if math.isfinite(value) else "a number must be finite (no NaN or Infinity)"
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            return f"a string value is at most {MAX_VALUE_CHARS} characters"
        return None if encodable(value) else "a string must be valid Unicode (no lone surrogates)"
    return "must be a string, number, boolean" + (" or null" if allow_null else "") + " (or a list of them)"


def entry_problem(key: str, value: Any, *, allow_null: bool, allow_empty_list: bool) -> str | None:
    """What is wrong with one metadata or filter entry, as a message that names its key (None: nothing)."""
    if problem := key_problem(key):
        return problem
    if isinstance(value, list):
        if not value and not allow_empty_list:
            return f"{shown(key)} must be a value or a non-empty list of values"
        if len(value) > MAX_LIST_VALUES:
            return f"{shown(key)}: a list holds at most {MAX_LIST_VALUES} values"
        for i, item in enumerate(value):
            if isinstance(item, list | dict):
                return f"{shown(key)}[{i}]: a list holds scalars only (no nested lists or objects)"
            if problem := scalar_problem(item, allow_null=allow_null):
                return f"{shown(key)}[{i}]: {problem}"
        return None
    if problem := scalar_problem(value, allow_null=allow_null):
        return f"{shown(key)}: {problem}"
    return None


def is_scalar_or_scalar_list(value: Any, *, allow_null: bool) -> bool:
    scalars = SCALARS if allow_null else SCALARS[:-1]
    if isinstance(value, list):
        return all(isinstance(v, scalars) for v in value)
    return isinstance(value, scalars)


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    for key, v in value.items():
        if problem := entry_problem(key, v, allow_null=True, allow_empty_list=True):
            raise ValueError(problem)
    return value


# One readable error per bad entry, instead of one per member of a union type.
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]


def _valid_unicode(value: str) -> str:
    if not encodable(value):
        raise ValueError("must be valid Unicode (no lone surrogates)")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NonBlank = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
# Any other free text (a title): pydantic checks a str for lone surrogates only when it has a length limit.
Text = Annotated[str, AfterValidator(_valid_unicode)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentIn(Strict):
    id: str = Field(min_length=1, max_length=512)
    text: NonBlank
    title: Text = ""
    metadata: Metadata = Field(default_factory=dict)


def document_violation(doc: DocumentIn, settings: Settings) -> tuple[str, str] | None:
    """The first size limit one document breaks, as (field, message); shared by the upsert and the bulk path."""
    if len(doc.text) > settings.max_text_chars:
        return "text", f"longer than {settings.max_text_chars} characters"
    if len(doc.title) > settings.max_text_chars:
        return "title", f"longer than {settings.max_text_chars} characters"
    if len(json.dumps(doc.metadata).encode()) > settings.max_metadata_bytes:
        return "metadata", f"larger than {settings.max_metadata_bytes} bytes"
    return None


# --- as stored and found ---


@dataclass(frozen=True)
class StoredDocument:
    id: str
    text: str
    title: str
    metadata: dict[str, Any]
    chunk: int | None = None  # index of this chunk of document `id` in a chunked collection; None: not chunked


@dataclass(frozen=True)
class Hit:
    document: StoredDocument
    score: float
