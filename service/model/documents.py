"""A document as clients send it, validated the same way on every path that writes one (the upsert route, bulk
lines, the worker reading its queue), and the size limits one document must keep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.settings import Settings

MetadataValue = str | int | float | bool
FilterValue = MetadataValue | list[MetadataValue]
SCALARS = (str, int, float, bool, type(None))


def is_scalar_or_scalar_list(value: Any, *, allow_null: bool) -> bool:
    scalars = SCALARS if allow_null else SCALARS[:-1]
    if isinstance(value, list):
        return all(isinstance(v, scalars) for v in value)
    return isinstance(value, scalars)


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    for key, v in value.items():
        if not is_scalar_or_scalar_list(v, allow_null=True):
            raise ValueError(f"'{key}' must be a scalar or a list of scalars")
    return value


# One readable error per bad entry, instead of one per member of a union type.
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NonBlank = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentIn(Strict):
    id: str = Field(min_length=1, max_length=512)
    text: NonBlank
    title: str = ""
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
