"""BM25 term vectors for each chunk, so that a search also matches the words it contains.

A sentence embedding model blurs what makes a chunk unique: two transcript lines that differ
only in a file name, a function or an error code land next to each other, and at tens of
thousands of chunks the right one drops out of the top five. Qdrant ranks these sparse vectors
with its own IDF (`modifier=idf`), and search fuses both rankings (RRF).

FastEmbed's `Bm25` does the tokenising, stemming and hashing. It has no weights; given its
stopwords it reads nothing from its model directory, so no hub download is attempted. The
encoding is fixed (not a setting), because a collection must never mix two encodings:
`ENCODING` is recorded in each collection's metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastembed.sparse.bm25 import Bm25
from fastembed.sparse.sparse_embedding_base import SparseEmbedding
from qdrant_client import models

VECTOR = "bm25"
# Chunks are at most a few hundred words; the length norm is tuned to the 64-token default.
_AVERAGE_WORDS = 48.0
ENCODING = f"fastembed-bm25:snowball-english:k1.2:b0.75:avg{_AVERAGE_WORDS:g}:no-stopwords"


def encoding_model() -> Bm25:
    """FastEmbed's `Bm25` exactly as `ENCODING` names it, built in this one place so that the
    encoder and any check against FastEmbed's raw output use the same parameters.

    No stopword list: IDF already gives "the" next to no weight, and a fixed empty list keeps
    the encoding the same wherever the hub can or cannot be reached."""
    return Bm25(
        "Qdrant/bm25",
        avg_len=_AVERAGE_WORDS,
        stopwords=set(),
        specific_model_path=str(Path(__file__).parent),
    )


class LexicalEncoder:
    """Sparse vectors in the order Qdrant keeps them, for chunks and for queries."""

    def __init__(self) -> None:
        self._bm25 = encoding_model()

    def documents(self, texts: list[str]) -> list[models.SparseVector]:
        return [_sparse(each) for each in self._bm25.embed(texts, batch_size=max(1, len(texts)))]

    def query(self, text: str) -> models.SparseVector:
        return _sparse(next(iter(self._bm25.query_embed(text))))


def _sparse(embedding: SparseEmbedding) -> models.SparseVector:
    """Indices in ascending order, as Qdrant keeps them: embedded Qdrant otherwise sorts each
    point itself, through Python lists (150 µs a point, a sixth of the loop's CPU per chunk)."""
    order = np.argsort(embedding.indices, kind="stable")
    return models.SparseVector(
        indices=embedding.indices[order].tolist(), values=embedding.values[order].tolist()
    )
