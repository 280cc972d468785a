"""The store stage: embedded batches become Qdrant points; an acknowledged batch goes to commit.

Points of one batch are upserted per kind with `wait=True`, so when the call returns Qdrant has
applied them, and only then does the batch move on to the ledger.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from qdrant_client import models

from ingestd.stages.items import EmbeddedBatch, Pending, StoredBatch
from ingestd.store import payload_path, point_id
from ingestd.store_gateway import StoreGateway


class StoreStage:
    """Upserts each embedded batch, by kind, then hands it to the commit stage."""

    def __init__(
        self,
        gateway: StoreGateway,
        fingerprint: str,
        inbox: asyncio.Queue[EmbeddedBatch],
        outbox: asyncio.Queue[StoredBatch],
    ) -> None:
        self.gateway = gateway
        self.fingerprint = fingerprint
        self.inbox = inbox
        self.outbox = outbox

    async def run(self) -> None:
        while True:
            stored = await self._store(await self.inbox.get())
            if stored.items:
                await self.outbox.put(stored)

    async def _store(self, batch: EmbeddedBatch) -> StoredBatch:
        live = [
            (item, vector) for item, vector in zip(batch.items, batch.vectors, strict=True) if item.job.live
        ]
        by_kind: dict[str, list[models.PointStruct]] = {}
        for item, vector in live:
            by_kind.setdefault(item.job.kind, []).append(self._point(item, vector))
        files = sorted({item.job.key for item, _ in live})
        for kind, points in by_kind.items():
            started = time.monotonic()
            await self.gateway.call("upsert", files, partial(self.gateway.store.upsert, kind, points))
            self.gateway.metrics.upsert_seconds.observe(time.monotonic() - started)
        return StoredBatch([item for item, _ in live])

    def _point(self, item: Pending, vector: list[float]) -> models.PointStruct:
        job, chunk = item.job, item.chunk
        generation = job.record.generation
        payload: dict[str, Any] = {
            **chunk.meta,
            **(job.identity.payload(chunk.meta) if job.identity else {}),
            "path": payload_path(job.key),
            "kind": job.kind,
            "generation": generation,
            "ordinal": chunk.ordinal,
            "offset": chunk.start,
            "end": chunk.end,
            "tokens": chunk.tokens,
            "digest": chunk.digest,
            "text": chunk.text,
            "model": self.fingerprint,
        }
        return models.PointStruct(
            id=point_id(job.key, generation, chunk.ordinal), vector=vector, payload=payload
        )
