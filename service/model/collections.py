"""A collection as the domain sees it: its layout, fixed at creation, and what describing one tells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChunkingParams:
    """Per-collection chunking of long documents, fixed at creation (tokens of the embedder's tokenizer)."""

    max_tokens: int
    overlap: int

    def as_meta(self) -> dict[str, int]:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap}

    @classmethod
    def from_meta(cls, value: Any) -> ChunkingParams | None:
        return cls(int(value["max_tokens"]), int(value["overlap"])) if isinstance(value, dict) else None


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    count: int
    dimension: int
    distance: str
    embedder: str
    profile: str
    sparse: bool = False  # has a BM25 sparse vector beside the dense one
    chunking: ChunkingParams | None = None


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters of a collection, fixed at creation (Qdrant's defaults: m=16, ef_construct=100)."""

    m: int
    ef_construct: int
