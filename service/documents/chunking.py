"""Long documents: split into token windows of the embedder (chunked collections), or counted as truncated.

The embedder reads a bounded number of tokens (all-MiniLM-L6-v2: 256 word pieces, two of them its [CLS] and
[SEP]) and silently drops the rest. A collection created with `chunking` stores a document longer than
`max_tokens` as overlapping chunks, each embedded on its own with the document's title in front, each a point that
carries its parent's id (see service/clients/vectorstore.py). Without chunking, a document past the window is
embedded from its beginning only, and counted (job `truncated`, metric) so the loss is visible.

Tokens are counted with the in-process model's own tokenizer. A remote embedder's tokenizer is not at hand, so
there a documented approximation is used (`ApproximateTokens`), with the window from EMBEDDER_MAX_TOKENS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from service.model.collections import ChunkingParams
from service.model.documents import StoredDocument
from service.model.profiles import ThinkProfile

SPECIAL_TOKENS = 2  # [CLS] and [SEP] (or the model's equivalents): part of the window, never of the text
MIN_BODY_TOKENS = 16  # a chunk's text gets at least this many tokens whatever the title takes


class Tokens(Protocol):
    window: int  # text tokens the embedder reads (its special tokens excluded)

    def offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character span of every token of every text."""


class TokenizerTokens:
    """The model's own (fast, Rust) tokenizer, without its truncation: counts what the model would read."""

    def __init__(self, tokenizer: Any, window: int) -> None:
        from tokenizers import Tokenizer

        # A copy of the backend: the model's instance may carry truncation/padding settings of its own.
        self._tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.window = window

    def offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [e.offsets for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]


_WORDS = re.compile(r"\w+|[^\w\s]")
APPROX_PIECE_CHARS = 6


class ApproximateTokens:
    """For a remote embedder: every punctuation mark is a token, and every word one token per started 6
    characters. English word pieces average about 1.3 per word; this errs towards more tokens (smaller chunks,
    nothing cut off) for long words."""

    def __init__(self, window: int) -> None:
        self.window = window

    def offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        out = []
        for text in texts:
            spans = []
            for m in _WORDS.finditer(text):
                for start in range(m.start(), m.end(), APPROX_PIECE_CHARS):
                    spans.append((start, min(start + APPROX_PIECE_CHARS, m.end())))
            out.append(spans)
        return out


def make_chunker(embedder: Any, profile: ThinkProfile, remote_max_tokens: int) -> Chunker:
    return Chunker(make_tokens(embedder, remote_max_tokens), profile)


def make_tokens(embedder: Any, remote_max_tokens: int) -> Tokens:
    tokenizer = getattr(embedder, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "backend_tokenizer"):
        return TokenizerTokens(tokenizer, int(embedder.max_tokens) - SPECIAL_TOKENS)
    return ApproximateTokens(remote_max_tokens - SPECIAL_TOKENS)


@dataclass
class Prepared:
    documents: list[StoredDocument]  # what to write: the documents, or their chunks (chunk set)
    texts: list[str]  # what to embed, one per entry of `documents`
    truncated: set[str] = field(default_factory=set)  # ids of documents embedded only up to the window


class Chunker:
    def __init__(self, tokens: Tokens, profile: ThinkProfile) -> None:
        self.tokens = tokens
        self.profile = profile

    def prepare(self, documents: list[StoredDocument], chunking: ChunkingParams | None) -> Prepared:
        """CPU work (tokenizing): call it off the event loop."""
        if chunking is None:
            texts = [self.profile.document_text(d.title, d.text) for d in documents]
            return Prepared(documents, texts, self._past_window(documents, texts))
        prepared = Prepared([], [])
        for d in documents:
            for i, text in enumerate(self.split(d, chunking)):
                prepared.documents.append(replace(d, chunk=i))
                prepared.texts.append(text)
        return prepared

    def _past_window(self, documents: list[StoredDocument], texts: list[str]) -> set[str]:
        # A token covers at least one character: a text no longer than the window in characters fits.
        long = [(d.id, t) for d, t in zip(documents, texts, strict=True) if len(t) > self.tokens.window]
        if not long:
            return set()
        counts = self.tokens.offsets([t for _, t in long])
        return {i for (i, _), spans in zip(long, counts, strict=True) if len(spans) > self.tokens.window}

    def split(self, document: StoredDocument, chunking: ChunkingParams) -> list[str]:
        """The texts to embed for a document's chunks: windows of its text, each with the title in front."""
        whole = self.profile.document_text(document.title, document.text)
        max_tokens = min(chunking.max_tokens, self.tokens.window)
        if len(whole) <= max_tokens:  # fits whatever the tokenizer says (see _past_window)
            return [whole]
        frame, spans = self.tokens.offsets([self.profile.document_text(document.title, ""), document.text])
        body = max(max_tokens - len(frame), MIN_BODY_TOKENS)  # what the title (and profile suffix) leave
        if len(spans) <= body:
            return [whole]
        step = body - min(chunking.overlap, body // 2)
        chunks = []
        for start in range(0, len(spans), step):
            end = min(start + body, len(spans))
            piece = document.text[spans[start][0] : spans[end - 1][1]]
            chunks.append(self.profile.document_text(document.title, piece))
            if end == len(spans):
                break
        return chunks
