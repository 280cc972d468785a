"""The chunk stage: units are redacted, packed into chunks with the model's tokenizer, and sent on.

A resumed pass re-reads text that may already be stored; its chunks are first checked against
what Qdrant holds (by point ID and text digest) and acknowledged without embedding, up to the
first one that differs. Fresh chunks go to the embed stage's bounded queue: that bound is the
backpressure that keeps a fast reader from filling memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ingestd.chunker import Chunk, Packer
from ingestd.logs import get_logger
from ingestd.metrics import Metrics
from ingestd.parsers.documents import MARKDOWN
from ingestd.parsers.units import Unit
from ingestd.protocols import TokenCounter
from ingestd.settings import ChunkSettings
from ingestd.stages.items import FileJob, Pending, StoredBatch
from ingestd.store import point_id
from ingestd.store_gateway import StoreGateway

log = get_logger("ingestd.stages.chunk")
BIG_UNIT = 64 * 1024  # characters: a unit this long is tokenised off the event loop
Redactor = Callable[[str], tuple[str, int]]
# Metadata the assistant tools generate (uuids, ISO times, roles): no secret fits their shapes,
# and redacting them cost more than half as much as a line's text.
TOOL_IDENTIFIERS = frozenset({"uuid", "timestamp", "role", "session", "agent_id"})


class ChunkStage:
    def __init__(
        self,
        settings: ChunkSettings,
        counter: Callable[[], TokenCounter],
        redactor: Redactor | None,
        gateway: StoreGateway,
        verify_batch: int,
        outbox: asyncio.Queue[Pending],
        commits: asyncio.Queue[StoredBatch],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.counter = counter  # called per file: a CLI command that reads nothing loads no tokenizer
        self.redactor = redactor
        # Metadata strings repeat line after line (a session's cwd and branch, a heading).
        self._redact_meta = lru_cache(maxsize=1024)(redactor) if redactor else None
        self.gateway = gateway
        self.verify_batch = verify_batch
        self.outbox = outbox
        self.commits = commits
        self.metrics = metrics
        self._unverified: dict[FileJob, list[Chunk]] = {}  # resumed passes still being checked

    def packer(self, job: FileJob) -> Packer:
        return Packer(
            self.counter(),
            self.settings.chunk_max_tokens,
            self.settings.chunk_overlap_tokens,
            markdown=job.target.path.suffix.lower() in MARKDOWN,
            first_ordinal=job.record.resume_ordinal,
        )

    def begin(self, job: FileJob) -> None:
        if not job.fresh:
            self._unverified[job] = []

    async def feed(self, job: FileJob, packer: Packer, unit: Unit) -> None:
        if len(unit.text) > BIG_UNIT:
            chunks = await asyncio.to_thread(self._pack, packer, unit)
        else:
            chunks = self._pack(packer, unit)
        for chunk in chunks:
            await self.emit(job, chunk)

    def _pack(self, packer: Packer, unit: Unit) -> list[Chunk]:
        return packer.feed(self._redact(unit))

    async def end(self, job: FileJob, packer: Packer) -> Chunk | None:
        """The open trailing chunk, emitted; then what is left to verify is checked."""
        tail = packer.flush()
        if tail is not None:
            await self.emit(job, tail)
        await self._verify(job)
        self._unverified.pop(job, None)
        return tail

    def drop(self, job: FileJob) -> None:
        """Reading stopped early: chunks still waiting to be verified will never be acknowledged."""
        job.emitted -= len(self._unverified.pop(job, ()))

    async def emit(self, job: FileJob, chunk: Chunk) -> None:
        """Counted as emitted once handed on: a read cancelled while the queue is full must not
        count a chunk that no stage will ever acknowledge."""
        if not job.live:
            return
        waiting = self._unverified.get(job)
        if waiting is not None:
            waiting.append(chunk)
            job.emitted += 1
            if len(waiting) >= self.verify_batch:
                await self._verify(job)
            return
        await self.outbox.put(Pending(job, chunk))
        job.emitted += 1
        self.metrics.queue_depth.set(self.outbox.qsize())

    async def _verify(self, job: FileJob) -> None:
        """Acknowledge chunks Qdrant already holds with the same text; embed from the first miss."""
        chunks = self._unverified.get(job)
        if not chunks:
            return
        self._unverified[job] = []
        handed = 0
        try:
            generation = job.record.generation
            ids = [point_id(job.key, generation, chunk.ordinal) for chunk in chunks]
            stored = await self.gateway.stored_digests(job.kind, job.key, ids)
            held = 0
            while held < len(chunks) and stored.get(ids[held]) == chunks[held].digest:
                held += 1
            if held:
                reused = StoredBatch([Pending(job, chunk) for chunk in chunks[:held]], reused=True)
                await self.commits.put(reused)
                handed = held
            if held < len(chunks):
                self._unverified.pop(job, None)  # from the first miss on, everything is embedded
                for chunk in chunks[held:]:
                    await self.outbox.put(Pending(job, chunk))
                    handed += 1
        finally:
            job.emitted -= len(chunks) - handed  # cancelled midway: those will never be acknowledged

    def _redact(self, unit: Unit) -> Unit:
        """Secrets out of the text and of string metadata (a heading, an HTML title) alike."""
        if self.redactor is None or self._redact_meta is None:
            return unit
        unit.text, count = self.redactor(unit.text)
        cleaned: dict[str, Any] = {}
        for key, value in unit.meta.items():
            if isinstance(value, str) and key not in TOOL_IDENTIFIERS:
                clean, found = self._redact_meta(value)
                if found:
                    cleaned[key], count = clean, count + found
        if count:  # a new dict: units of one HTML file share their meta dict
            redactions = int(unit.meta.get("redactions") or 0) + count
            unit.meta = {**unit.meta, **cleaned, "redactions": redactions}
        return unit
