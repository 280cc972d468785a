"""Qdrant: embedded local mode under `state/` by default (in a child process of its own,
`embedded_qdrant.py`), a server when `QDRANT_URL` is set.

Point IDs are uuid5 of (file, generation, ordinal), so replaying any batch overwrites the same
points instead of adding duplicates. Each collection records the fingerprint of the model that
made its vectors; a different model is refused at start-up rather than mixed in silently.

Every point also carries a BM25 vector of its text (`lexical.py`), and SEARCH_MODE=hybrid fuses
the two rankings. A collection made before that has none: it is still written and searched, by
meaning only, and says so once in the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from qdrant_client import AsyncQdrantClient, models

from ingestd.embedded_qdrant import EmbeddedQdrant
from ingestd.errors import ModelMismatch
from ingestd.lexical import ENCODING, VECTOR, LexicalEncoder
from ingestd.logs import get_logger
from ingestd.settings import StoreSettings

log = get_logger("ingestd.store")

KINDS = ("conversations", "documents")
NAMESPACE = uuid.UUID("6f1c8a52-3b7e-4c1a-9a0e-5d2b7c9e4f10")
INDEXED = {
    "path": models.PayloadSchemaType.KEYWORD,
    "project": models.PayloadSchemaType.KEYWORD,
    "session": models.PayloadSchemaType.KEYWORD,
    "kind": models.PayloadSchemaType.KEYWORD,
    "generation": models.PayloadSchemaType.INTEGER,
    "ordinal": models.PayloadSchemaType.INTEGER,
}


def point_id(path: str, generation: int, ordinal: int) -> str:
    """uuid5 over the path's bytes, so names that are not valid UTF-8 still get stable IDs."""
    name = os.fsencode(path) + f"\x00{generation}\x00{ordinal}".encode()
    return str(uuid.UUID(bytes=hashlib.sha1(NAMESPACE.bytes + name).digest()[:16], version=5))


def payload_path(path: str) -> str:
    """The path as payloads hold it (and filters match it): names that are not UTF-8 keep their
    bytes as `\\xNN` escapes, since a lone surrogate cannot be stored as JSON."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def path_key(stored: str) -> str:
    """The state's key for a payload path: the inverse of payload_path. A UTF-8 name that
    literally contains such an escape is ambiguous; the name that exists on disk wins."""
    key = _ESCAPED_BYTE.sub(lambda match: chr(0xDC00 + int(match.group(1), 16)), stored)
    if key != stored and os.path.lexists(stored) and not os.path.lexists(key):
        return stored
    return key


@dataclass(slots=True)
class Hit:
    score: float
    payload: dict[str, Any]


def _file_filter(path: str, generation: int | None = None, ordinal_from: int | None = None) -> models.Filter:
    match = models.MatchValue(value=payload_path(path))
    must: list[models.Condition] = [models.FieldCondition(key="path", match=match)]
    if generation is not None:
        must.append(models.FieldCondition(key="generation", match=models.MatchValue(value=generation)))
    if ordinal_from is not None:
        must.append(models.FieldCondition(key="ordinal", range=models.Range(gte=ordinal_from)))
    return models.Filter(must=must)


class VectorStore:
    def __init__(
        self,
        settings: StoreSettings,
        fingerprint: str,
        slug: str,
        dimension: int,
        *,
        log_level: str = "INFO",
        log_format: str = "auto",
    ) -> None:
        self.settings = settings
        self.embedded_logs = (log_level, log_format)  # for the embedded Qdrant's child process
        self.fingerprint = fingerprint
        self.dimension = dimension
        self.collections = {kind: f"{settings.collection_prefix}-{kind}-{slug}" for kind in KINDS}
        self.server = settings.qdrant_url is not None
        self._client: AsyncQdrantClient | None = None
        self._embedded: EmbeddedQdrant | None = None
        self._ready: set[str] = set()
        self._lexical: set[str] = set()  # collections that hold BM25 vectors
        self._encoder: LexicalEncoder | None = None

    @property
    def encoder(self) -> LexicalEncoder:
        """Built by ensure_collection for the first collection with BM25 vectors: every caller
        of this property has ensured its collection first."""
        if self._encoder is None:
            raise RuntimeError("no collection with BM25 vectors has been ensured")
        return self._encoder

    @property
    def location(self) -> str:
        return self.settings.qdrant_url or str(self.settings.qdrant_local_path)

    @property
    def client(self) -> AsyncQdrantClient:
        if self._client is None:
            if self.server:
                key = self.settings.qdrant_api_key
                self._client = AsyncQdrantClient(
                    url=self.settings.qdrant_url,
                    api_key=key.get_secret_value() if key else None,
                    timeout=int(self.settings.qdrant_timeout_seconds),
                )
            else:
                self.settings.qdrant_local_path.mkdir(parents=True, exist_ok=True)
                self._embedded = EmbeddedQdrant(self.settings.qdrant_local_path, *self.embedded_logs)
                self._client = cast(AsyncQdrantClient, self._embedded)  # forwards every method
        return self._client

    async def ensure_collections(self) -> None:
        for kind in KINDS:
            await self.ensure_collection(kind)

    async def ensure_collection(self, kind: str) -> str:
        name = self.collections[kind]
        if name in self._ready:
            return name
        if await self.client.collection_exists(name):
            info = await self.client.get_collection(name)
            metadata = info.config.metadata or {}
            recorded = metadata.get("ingestd_model")
            if recorded is not None and recorded != self.fingerprint:
                raise ModelMismatch(
                    f"collection {name} holds vectors of {recorded}, but the configured model is "
                    f"{self.fingerprint}; set COLLECTION_PREFIX to start a new collection, or "
                    "restore the original model settings"
                )
            if VECTOR in (info.config.params.sparse_vectors or {}):
                encoding = metadata.get("ingestd_lexical")
                if encoding != ENCODING:
                    raise ModelMismatch(
                        f"collection {name} holds BM25 vectors encoded as {encoding}, this version "
                        f"encodes {ENCODING}; set COLLECTION_PREFIX to start a new collection"
                    )
                self._lexical.add(name)
            else:
                log.warning(
                    "store.dense_only",
                    reason="made before hybrid search, it has no BM25 vectors: searched by meaning only",
                    path=self.location,
                    collection=name,
                    outcome="dense-only",
                )
            params = info.config.params.vectors
            size = params.size if isinstance(params, models.VectorParams) else None
            if size is not None and size != self.dimension:
                raise ModelMismatch(
                    f"collection {name} has {size}-dimensional vectors, the model makes {self.dimension}"
                )
        else:
            await self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=self.dimension, distance=models.Distance.COSINE),
                sparse_vectors_config={VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                metadata={"ingestd_model": self.fingerprint, "ingestd_lexical": ENCODING},
            )
            self._lexical.add(name)
            if self.server:
                for field, schema in INDEXED.items():
                    await self.client.create_payload_index(name, field, field_schema=schema, wait=True)
        if self._embedded is not None:
            await self._embedded.tune(name)
        if name in self._lexical and self._encoder is None:
            # Off the loop and before the first batch: building it scans every Unicode code
            # point for punctuation (~0.5 s).
            self._encoder = await asyncio.to_thread(LexicalEncoder)
        self._ready.add(name)
        return name

    async def upsert(self, kind: str, points: list[models.PointStruct]) -> None:
        """Points come with their dense vector; the BM25 one is added here from the payload's text."""
        name = await self.ensure_collection(kind)
        bare = [point for point in points if isinstance(point.vector, list)]
        if name in self._lexical and bare:
            texts = [str((point.payload or {}).get("text", "")) for point in bare]
            for point, sparse in zip(bare, self.encoder.documents(texts), strict=True):
                dense = cast(list[float], point.vector)
                point.vector = {"": dense, VECTOR: sparse}
        await self.client.upsert(name, points=points, wait=True)

    async def delete_file(
        self, kind: str, path: str, generation: int | None = None, ordinal_from: int | None = None
    ) -> None:
        name = await self.ensure_collection(kind)
        selector = models.FilterSelector(filter=_file_filter(path, generation, ordinal_from))
        await self.client.delete(name, points_selector=selector, wait=True)

    async def stored_digests(self, kind: str, ids: Iterable[str]) -> dict[str, str]:
        """Digest of each stored point's text, for the IDs that exist."""
        name = await self.ensure_collection(kind)
        records = await self.client.retrieve(name, ids=list(ids), with_payload=["digest"], with_vectors=False)
        return {str(record.id): str((record.payload or {}).get("digest")) for record in records}

    async def search(
        self, kind: str, vector: list[float], query: str, limit: int, project: str | None = None
    ) -> list[Hit]:
        """Hybrid: the top candidates by meaning and by BM25, fused by reciprocal rank, so a
        score is rank-based, not a cosine. A query with no words to match searches by meaning."""
        name = await self.ensure_collection(kind)
        query_filter = None
        if project:
            query_filter = models.Filter(
                should=[
                    models.FieldCondition(key="project", match=models.MatchValue(value=project)),
                    models.FieldCondition(key="project_name", match=models.MatchValue(value=project)),
                ]
            )
        sparse = None
        if self.settings.search_mode == "hybrid" and name in self._lexical:
            sparse = self.encoder.query(query)
        if sparse is not None and sparse.indices:
            candidates = max(20, 4 * limit)
            response = await self.client.query_points(
                name,
                prefetch=[
                    models.Prefetch(query=vector, filter=query_filter, limit=candidates),
                    models.Prefetch(query=sparse, using=VECTOR, filter=query_filter, limit=candidates),
                ],
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            )
        else:
            response = await self.client.query_points(
                name, query=vector, limit=limit, query_filter=query_filter, with_payload=True
            )
        return [Hit(score=point.score, payload=point.payload or {}) for point in response.points]

    async def count(self, kind: str) -> int:
        name = await self.ensure_collection(kind)
        return (await self.client.count(name, exact=True)).count

    async def file_total(self, kind: str, path: str, field: str) -> int:
        """Sum of a numeric payload field over one file's points."""
        name = await self.ensure_collection(kind)
        total, offset = 0, None
        while True:
            records, offset = await self.client.scroll(
                name, scroll_filter=_file_filter(path), limit=512, offset=offset, with_payload=[field]
            )
            total += sum(int((record.payload or {}).get(field) or 0) for record in records)
            if offset is None:
                return total

    async def scroll_all(self, kind: str, fields: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """Every point's ID and chosen payload fields (for tests and state rebuilds)."""
        name = await self.ensure_collection(kind)
        out: list[tuple[str, dict[str, Any]]] = []
        offset: Any = None
        while True:
            records, offset = await self.client.scroll(
                name, limit=512, offset=offset, with_payload=fields, with_vectors=False
            )
            out.extend((str(record.id), record.payload or {}) for record in records)
            if offset is None:
                return out

    async def ping(self) -> bool:
        try:
            await self.client.get_collections()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = self._embedded = None
            self._ready.clear()
            self._lexical.clear()
