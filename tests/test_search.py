"""Hybrid search against the real model and embedded Qdrant: BM25 next to the dense vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models

from conftest import CountingProvider, captured_logs, engine_with, ingest
from ingestd.engine import Engine
from ingestd.errors import ModelMismatch
from ingestd.lexical import VECTOR, LexicalEncoder, encoding_model


def twin_notes(folder: Path, count: int = 12) -> dict[Path, str]:
    """Notes that say the same thing about different files and error codes, each with the query
    a user would type to find it: its error code and file. A sentence embedding places all of
    them next to each other; the words that tell them apart are what BM25 matches."""
    notes = {}
    for index in range(count):
        handler, code = f"handler_{index * 7 + 3}.py", f"E{4100 + index * 13}"
        path = folder / f"incident-{index}.md"
        path.write_text(
            "# Incident\n\nThe queue backed up again overnight. The billing worker in "
            f"src/billing/{handler} raised error {code} after the retry budget ran out.\n"
        )
        notes[path] = f"error {code} in {handler}"
    return notes


async def recreate_documents(
    tmp_path: Path, counting: CountingProvider, lexical: str | None = None, **config: Any
) -> str:
    """Replace the documents collection with one made as an older or other ingestd would."""
    async with engine_with(tmp_path, counting) as engine:
        name = engine.store.collections["documents"]
        metadata = {"ingestd_model": engine.provider.fingerprint}
        if lexical:
            metadata["ingestd_lexical"] = lexical
        await engine.store.client.delete_collection(name)
        await engine.store.client.create_collection(
            name,
            vectors_config=models.VectorParams(
                size=engine.provider.dimension, distance=models.Distance.COSINE
            ),
            metadata=metadata,
            **config,
        )
    return name


async def rank_of_each(engine: Engine, notes: dict[Path, str]) -> list[int | None]:
    ranks = []
    for path, query in notes.items():
        hits = await engine.search(query, "documents", None, 3)
        ranks.append(next((i for i, hit in enumerate(hits, 1) if hit["path"] == str(path)), None))
    return ranks


async def test_hybrid_ranks_the_exact_twin_first(tmp_path: Path, counting: CountingProvider) -> None:
    async with engine_with(tmp_path, counting) as engine:
        notes = twin_notes(engine.settings.watch.documents_dirs[0])
        for path in notes:
            assert (await ingest(engine, path)).status == "done"
        hybrid = await rank_of_each(engine, notes)
        engine.settings.store.search_mode = "dense"  # the store reads its section at each search
        dense = await rank_of_each(engine, notes)
    assert hybrid == [1] * len(notes), hybrid
    assert dense.count(1) < len(notes), f"dense alone already ranks every twin first: {dense}"


async def test_every_point_stores_its_bm25_vector(engine: Engine) -> None:
    path = engine.settings.watch.documents_dirs[0] / "note.md"
    path.write_text("# Cache\n\nThe zq7frobnicator cache evicts entries by age.\n")
    await ingest(engine, path)
    name = await engine.store.ensure_collection("documents")
    records, _ = await engine.store.client.scroll(name, with_vectors=True, limit=10)
    assert records
    for record in records:
        assert isinstance(record.vector, dict)
        assert len(record.vector[""]) == engine.provider.dimension  # type: ignore[arg-type]
        sparse = record.vector[VECTOR]
        assert isinstance(sparse, models.SparseVector) and sparse.indices
    hits = await engine.search("zq7frobnicator", "documents", None, 1)
    assert hits and hits[0]["path"] == str(path)


async def test_a_collection_without_bm25_is_searched_by_meaning(
    tmp_path: Path, counting: CountingProvider
) -> None:
    """A collection made before hybrid search: written and searched as before, and said so."""
    name = await recreate_documents(tmp_path, counting)
    with captured_logs("WARNING") as logs:
        async with engine_with(tmp_path, counting) as engine:
            path = engine.settings.watch.documents_dirs[0] / "old.md"
            path.write_text("# Old\n\nThe legacy collection still answers questions about deploys.\n")
            assert (await ingest(engine, path)).status == "done"
            hits = await engine.search("legacy collection deploys", "documents", None, 1)
            assert hits and hits[0]["path"] == str(path)
    warned = [line for line in logs if line.get("outcome") == "dense-only"]
    assert warned and warned[0]["collection"] == name


async def test_another_bm25_encoding_is_refused(tmp_path: Path, counting: CountingProvider) -> None:
    await recreate_documents(
        tmp_path,
        counting,
        sparse_vectors_config={VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        lexical="bm25:other",
    )
    with pytest.raises(ModelMismatch, match="bm25:other"):
        async with engine_with(tmp_path, counting):
            pass


async def test_a_query_with_no_words_searches_by_meaning(engine: Engine) -> None:
    """BM25 finds no term in "?!", so the search falls back to the dense ranking alone."""
    path = engine.settings.watch.documents_dirs[0] / "note.md"
    path.write_text("# Questions\n\nWhat is the answer to this?!\n")
    await ingest(engine, path)
    assert not engine.store.encoder.query("?! ...").indices
    hits = await engine.search("?! ...", "documents", None, 3)
    assert [hit["path"] for hit in hits] == [str(path)]


def test_bm25_vectors_leave_the_encoder_sorted_and_unchanged() -> None:
    """Sorted here, embedded Qdrant does not sort every point again in Python."""
    encoder = LexicalEncoder()
    text = "The zq7frobnicator cache evicts entries by age; see evict_by_age() in cache/lru.py."
    (vector,) = encoder.documents([text])
    assert len(vector.indices) > 5 and vector.indices == sorted(vector.indices)
    unsorted = next(iter(encoding_model().embed([text])))  # FastEmbed's own order
    expected = dict(zip(unsorted.indices.tolist(), unsorted.values.tolist(), strict=True))
    assert dict(zip(vector.indices, vector.values, strict=True)) == pytest.approx(expected)
