"""BM25 sparse vectors: Qdrant Edge's `Bm25` model, the one implementation used at ingest and at query time, for
the embedded store and a Qdrant server alike (docs/decisions.md).

Only term weights live here: documents get BM25's saturated, length-normalised term frequencies, queries their term
counts. IDF is applied by the engine (sparse vectors with the IDF modifier), so it follows the collection as
documents come and go.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import qdrant_edge as qe

# The sparse vector's name in a collection (the dense vector stays the unnamed default one).
SPARSE_VECTOR = "bm25"


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


class Bm25Encoder:
    """Token hashes and weights from one tokenizer (Qdrant's word tokenizer, English stemming and stopwords)."""

    def __init__(self, word_cache: int = 65_536) -> None:
        self._model = qe.Bm25()
        # A query's words repeat across queries (and a think query has hundreds): each is tokenized once.
        self._word_terms = lru_cache(maxsize=word_cache)(self._terms)

    def document(self, text: str) -> SparseVector:
        vector = self._model.embed_document(text)
        return SparseVector(list(vector.indices), list(vector.values))

    def query(self, texts: list[str]) -> SparseVector:
        """A bag of words over `texts`: each term weighted by how often it occurs in them (as Lucene/Anserini's
        bag-of-words query does, which the profiles' sparse variants were measured with). `embed_query` gives each
        distinct term of one text weight 1, so the texts are fed to it a whitespace-separated word at a time
        (the word tokenizer never joins words across whitespace) and the weights added up."""
        words = Counter(word for text in texts for word in text.split())
        counts: Counter[int] = Counter()
        for word, times in words.items():
            for index in self._word_terms(word):
                counts[index] += times
        indices = sorted(counts)
        return SparseVector(indices, [float(counts[i]) for i in indices])

    def _terms(self, word: str) -> tuple[int, ...]:
        return tuple(self._model.embed_query(word).indices)


@lru_cache(maxsize=1)
def bm25() -> Bm25Encoder:
    """The process's encoder (stateless: IDF is the engine's)."""
    return Bm25Encoder()


def sparse_text(title: str, text: str) -> str:
    """A document's text for BM25: `title + " " + text`, as BEIR indexes it (no profile markers such as `<emb>`)."""
    return f"{title} {text}" if title else text
