"""read → parse → chunk → embed → store → commit, for one file at a time per reader.

Readers stream a file from its resume point and put chunks on one bounded queue (backpressure);
an embed stage takes batches across files, capped by count and by tokens, and hands them to an
upsert stage, so embedding batch N+1 overlaps storing batch N. A chunk's file record advances
only in the upsert stage, after Qdrant has acknowledged it; a file is `done` once every chunk it
produced is acknowledged. Chunks of a file that was interrupted are first checked against what
Qdrant already holds, so a restart re-embeds nothing that was stored.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import models

from ingestd.chunker import Chunk, Packer
from ingestd.discovery import Target
from ingestd.embed_cache import EmbeddingCache
from ingestd.embedding import EmbeddingError, EmbeddingProvider
from ingestd.logs import concerning, get_logger
from ingestd.metrics import Metrics
from ingestd.parsers.claude import RenderOptions
from ingestd.parsers.documents import (
    MARKDOWN,
    PDF,
    WHOLE_FILE,
    DocumentError,
    SectionBuilder,
    decoded_units,
    html_units,
    pdf_units,
    sniff_text,
)
from ingestd.parsers.transcripts import FileIdentity, TranscriptParser
from ingestd.parsers.units import Unit
from ingestd.pipeline_status import PipelineStatus
from ingestd.reader import FINGERPRINT_BYTES, Line, fingerprint, head_and_tail, read_lines
from ingestd.settings import Settings
from ingestd.state import FileRecord, StateStore, Status
from ingestd.store import ModelMismatch, VectorStore, payload_path, point_id
from ingestd.supervision import first_crash
from ingestd.system import release_memory, rss_mb

log = get_logger("ingestd.pipeline")
T = TypeVar("T")
BIG_LINE = 64 * 1024  # lines above this are parsed and tokenised off the event loop
TRIM_INTERVAL = 5.0  # gc + malloc_trim after a file, at most this often (and after big files)
LINGER_SECONDS = 0.02  # how long a batch may wait for more chunks while the model is busy
STOP_GRACE = 3.0  # seconds stop() lets completions finish before cancelling them (store down)
Redactor = Callable[[str], tuple[str, int]]
# Metadata the assistant tools generate (uuids, ISO times, roles): no secret fits their shapes,
# and redacting them cost more than half as much as a line's text (108 against 183 µs).
TOOL_IDENTIFIERS = frozenset({"uuid", "timestamp", "role", "session", "agent_id"})


class StageCrashed(RuntimeError):
    """A pipeline stage ended; nothing more is embedded or stored until a restart."""


@dataclass(slots=True)
class Outcome:
    path: str
    kind: str
    status: str
    reason: str | None = None
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0


@dataclass(eq=False)
class FileJob:
    """One pass over one file; completes when every chunk it produced is acknowledged."""

    target: Target
    record: FileRecord
    fresh: bool  # started from nothing (no chunk of this generation can exist yet)
    started: float = field(default_factory=time.monotonic)
    queued_at: float = field(default_factory=time.monotonic)  # the daemon sets its queue time
    emitted: int = 0
    acked: int = 0
    embedded: int = 0
    reused: int = 0
    redactions: int = 0
    reading: bool = True
    verifying: bool = False
    failure: tuple[str, str] | None = None  # (status, reason)
    final: dict[str, Any] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None
    bytes_read: int = 0
    identity: FileIdentity | None = None  # a transcript's project and session, for its payloads

    @property
    def key(self) -> str:
        return self.target.key

    @property
    def settled(self) -> bool:
        return not self.reading and self.acked >= self.emitted


# A batch's vectors (None where a file failed for good) and how many the model made (not the cache).
Embedded = tuple[list[list[float] | None], int]


@dataclass(slots=True)
class Pending:
    job: FileJob
    chunk: Chunk


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        provider: EmbeddingProvider,
        store: VectorStore,
        state: StateStore,
        metrics: Metrics | None = None,
        redactor: Redactor | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.store = store
        self.state = state
        self.metrics = metrics or Metrics()
        self.redactor = redactor
        # Metadata strings repeat line after line (a session's cwd and branch, a heading).
        self._redact_meta = lru_cache(maxsize=1024)(redactor) if redactor else None
        self.cache = cache
        self.options = RenderOptions(
            tool_result_max_chars=settings.tool_result_max_chars,
            include_thinking=settings.include_thinking,
            include_images=settings.include_images,
        )
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=settings.queue_max_chunks)
        self.upserts: asyncio.Queue[tuple[list[Pending], list[list[float]]]] = asyncio.Queue(maxsize=1)
        self.jobs: dict[str, FileJob] = {}
        self.store_available = True
        self.halted: str | None = None  # set when the provider refuses all work (bad credentials)
        self.last_error: str | None = None
        self.last_work = time.monotonic()
        self.totals: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._completions: set[asyncio.Task[None]] = set()
        self._last_trim = 0.0
        self._carry: Pending | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._embed_stage(), name="embed-stage"),
            asyncio.create_task(self._upsert_stage(), name="upsert-stage"),
        ]

    def status(self) -> PipelineStatus:
        totals = self.totals
        return PipelineStatus(
            files_in_flight=len(self.jobs),
            chunks_queued=self.queue.qsize(),
            store_available=self.store_available,
            embedding_halted=self.halted,
            last_error=self.last_error,
            last_work=self.last_work,
            oldest_queued_at=min((job.queued_at for job in self.jobs.values()), default=None),
            files_done=totals["done"],
            files_finished=sum(n for status, n in totals.items() if status != "chunks_embedded"),
            chunks_embedded=totals["chunks_embedded"],
        )

    def job(self, key: str) -> FileJob | None:
        """The pass in flight over `key`, if any (the daemon waits for it to requeue a change)."""
        return self.jobs.get(key)

    @property
    def stages(self) -> tuple[asyncio.Task[None], ...]:
        """The stage tasks, for a supervisor to watch: if one dies, nothing more is embedded."""
        return tuple(self._tasks)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Cancel the stages: an in-flight batch is either acknowledged or simply not recorded.

        Completions get `grace` seconds, then are cancelled: with the store down they would
        retry forever, and a cancelled completion leaves its file pending for the next run.
        """
        for task in self._tasks:
            task.cancel()
        # A stage that died has been reported by whoever watched it (daemon, import).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        completions = list(self._completions)
        if completions:
            _, late = await asyncio.wait(completions, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for job in list(self.jobs.values()):  # chunks no stage will acknowledge now
            self._abandon(job)

    async def settled(self, job: FileJob) -> None:
        """Until the job has settled, or was left pending by `stop`. Raises StageCrashed if a
        stage dies first: that job would never settle, and the caller (the import command)
        would wait for good."""
        crashed = await first_crash(self._tasks, job.done)
        if crashed is not None:
            error = crashed.exception()
            raise StageCrashed(
                f"{crashed.get_name()} stopped ({error!r}); {job.key} stays pending"
            ) from error

    # --- one file ------------------------------------------------------------------------
    async def ingest(self, target: Target) -> FileJob | Outcome:
        """Start a pass over the file; returns its job, or the outcome when nothing is to do."""
        if target.key in self.jobs:
            return Outcome(target.key, target.kind, "busy")
        try:
            info = os.stat(target.real)
        except FileNotFoundError:
            return await self.remove(target.key)
        except OSError as exc:
            return self._skip(target, f"cannot stat: {exc.strerror}")
        record = self.state.get(target.key)
        plan = await asyncio.to_thread(self._plan, target, record, info)
        if plan == "unchanged":
            return Outcome(target.key, target.kind, "unchanged")
        if plan == "rewrite":
            assert record is not None
            await self._with_store_retry(
                "delete", [target.key], lambda: self.store.delete_file(target.kind, target.key)
            )
            record.restart(record.generation + 1)
            record.status, record.reason = "pending", None
            log.info("file.rewritten", path=target.key, outcome="re-ingest", generation=record.generation)
        if record is None or plan == "new":
            record = FileRecord(kind=target.kind)
        fresh = plan in ("new", "rewrite")
        record.size, record.mtime_ns, record.ctime_ns, record.inode = _signature(info)
        record.status = "pending"
        if fresh:
            record.head_len = min(FINGERPRINT_BYTES, info.st_size)
            try:
                record.head_fp = await asyncio.to_thread(fingerprint, target.real, 0, record.head_len)
            except FileNotFoundError:
                return await self.remove(target.key)
            except OSError as exc:  # EACCES above all: stat needs no read permission, open does
                reason = "permission denied" if isinstance(exc, PermissionError) else "cannot read"
                return self._skip(target, f"{reason}: {exc.strerror or exc}", "failed")
        self.state.put(target.key, record)
        job = FileJob(target=target, record=record, fresh=fresh)
        job.verifying = not fresh
        self.jobs[target.key] = job
        self.metrics.files_pending.set(len(self.jobs))
        try:
            with concerning(job.key):  # a parser's own warnings (pypdf's) name the file
                await self._read(job)
        except DocumentError as exc:
            self._fail(job, "skipped", str(exc))
        except (FileNotFoundError, IsADirectoryError):
            self._fail(job, "failed", "file disappeared while being read")
        except PermissionError:
            self._fail(job, "failed", "permission denied")
        except OSError as exc:
            self._fail(job, "failed", f"read error: {exc.strerror or exc}")
        except BaseException:  # cancelled (shutdown) or a bug: the file stays pending, never done
            self._abandon(job)
            raise
        job.reading = False
        self._maybe_complete(job)
        return job

    def _plan(self, target: Target, record: FileRecord | None, info: os.stat_result) -> str:
        """new, unchanged, resume or rewrite: the heart of append handling."""
        if record is None:
            return "new"
        if record.reingest:  # an explicit retry: everything again, under a new generation
            return "rewrite"
        if record.status != "pending" and record.signature() == _signature(info):
            return "unchanged"
        if record.status in ("skipped", "failed", "deleted", "forgotten"):
            return "rewrite"
        whole_file = target.path.suffix.lower() in WHOLE_FILE
        # A pending file's offset is still 0: its resume point is what it must not shrink below.
        shrunk = info.st_size < max(record.offset, record.resume_offset, record.head_len)
        if whole_file or shrunk:
            return "resume" if whole_file and record.status == "pending" else "rewrite"
        try:
            if fingerprint(target.real, 0, record.head_len) != record.head_fp:
                return "rewrite"
            if target.kind == "documents" and record.offset and not _ends_line(target.real, record.offset):
                return "rewrite"  # the unterminated last line it had may have grown
            if record.status != "pending":
                # Documents: the whole prefix (see head_and_tail); transcripts only append.
                tail_start = 0 if target.kind == "documents" else max(0, record.offset - FINGERPRINT_BYTES)
                if fingerprint(target.real, tail_start, record.offset - tail_start) != record.tail_fp:
                    return "rewrite"
        except OSError:
            return "rewrite"
        return "resume"

    async def _read(self, job: FileJob) -> None:
        target, record = job.target, job.record
        suffix = target.path.suffix.lower()
        packer = Packer(
            self.provider.counter,
            self.settings.chunk_max_tokens,
            self.settings.chunk_overlap_tokens,
            markdown=suffix in MARKDOWN,
            first_ordinal=record.resume_ordinal,
        )
        if target.kind == "conversations":
            consumed = await self._read_transcript(job, packer)
        else:
            consumed = await self._read_document(job, packer, suffix)
        tail = packer.flush()
        if tail is not None:
            await self._emit(job, tail)
        await self._flush_verification(job)
        if job.failure is None:
            head_len, head_fp, tail_fp = await asyncio.to_thread(
                head_and_tail, target.real, consumed, target.kind == "documents"
            )
            job.final = {"offset": consumed, "head_len": head_len, "head_fp": head_fp, "tail_fp": tail_fp}
            self._check_unchanged(job)
            if tail is None:
                job.final.update(resume_offset=consumed, resume_ordinal=packer.ordinal)
            job.final["chunks"] = packer.ordinal + (1 if tail is not None else 0)

    async def _read_transcript(self, job: FileJob, packer: Packer) -> int:
        target, record = job.target, job.record
        parser = TranscriptParser(target.path, target.root, self.options)
        job.identity = parser.identity
        if record.resume_offset > 0:
            first = await asyncio.to_thread(_first_line, target.real, self.settings.max_line_bytes)
            parser.prime(first)
        consumed = record.resume_offset
        reported = 0
        async for line in read_lines(
            target.real,
            record.resume_offset,
            record.resume_line,
            self.settings.read_block_bytes,
            self.settings.max_line_bytes,
        ):
            if line.data is not None and len(line.data) > BIG_LINE:
                chunks = await asyncio.to_thread(self._parse_and_pack, parser, packer, line)
            else:
                chunks = self._parse_and_pack(parser, packer, line)
            for chunk in chunks:
                await self._emit(job, chunk)
            for issue in parser.issues[reported:]:
                log.warning(
                    "line.skipped", path=target.key, line=issue.line, reason=issue.reason, outcome="skipped"
                )
            reported = len(parser.issues)
            consumed = line.end
            job.bytes_read = consumed - record.resume_offset
        job.counts.update(parser.counts)
        return consumed

    def _parse_and_pack(self, parser: TranscriptParser, packer: Packer, line: Line) -> list[Chunk]:
        unit = parser.parse(line)
        return [] if unit is None else packer.feed(self._redact(unit))

    async def _read_document(self, job: FileJob, packer: Packer, suffix: str) -> int:
        target, record = job.target, job.record
        head = await asyncio.to_thread(_head, target.real)
        if not head.strip(b" \t\r\n\x0b\x0c") and suffix not in PDF:
            raise DocumentError("empty file (no text)")
        encoding = sniff_text(head, suffix)
        if encoding != "utf-8" or suffix in WHOLE_FILE:
            size = os.path.getsize(target.real)
            if size > self.settings.document_max_bytes:
                raise DocumentError(f"file of {size} bytes exceeds DOCUMENT_MAX_BYTES for this format")
            units = await asyncio.to_thread(self._whole_file_units, target.real, suffix, encoding)
            for unit in units:
                for chunk in packer.feed(self._redact(unit)):
                    await self._emit(job, chunk)
            if not units:
                raise DocumentError("no extractable text")
            return size
        sections = SectionBuilder(suffix)
        if sections.markdown and record.resume_offset > 0:
            # Heading and code-fence state at the resume point come from the lines before it.
            await asyncio.to_thread(_skim, sections, target.real, record.resume_offset)
        consumed = record.resume_offset
        async for line in read_lines(
            target.real,
            record.resume_offset,
            record.resume_line,
            self.settings.read_block_bytes,
            self.settings.max_line_bytes,
            include_partial=True,
        ):
            for unit in sections.feed(line):
                for chunk in packer.feed(self._redact(unit)):
                    await self._emit(job, chunk)
            consumed = line.end
            job.bytes_read = consumed - record.resume_offset
        for unit in sections.flush():
            for chunk in packer.feed(self._redact(unit)):
                await self._emit(job, chunk)
        return consumed

    def _whole_file_units(self, path: Path, suffix: str, encoding: str) -> list[Unit]:
        data = path.read_bytes()
        if suffix in PDF:
            return list(pdf_units(data))
        if encoding != "utf-8":
            return list(decoded_units(data, encoding))
        return list(html_units(data))

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

    # --- chunks out ----------------------------------------------------------------------
    async def _emit(self, job: FileJob, chunk: Chunk) -> None:
        if job.failure is not None:
            return
        job.emitted += 1
        if job.verifying:
            job.final.setdefault("verify", []).append(chunk)
            if len(job.final["verify"]) >= self.settings.embed_batch_size:
                await self._flush_verification(job)
            return
        await self.queue.put(Pending(job, chunk))
        self.metrics.queue_depth.set(self.queue.qsize())

    async def _flush_verification(self, job: FileJob) -> None:
        """Acknowledge chunks Qdrant already holds with the same text; embed from the first miss."""
        chunks: list[Chunk] = job.final.pop("verify", [])
        if not chunks:
            return
        record = job.record
        ids = [point_id(job.key, record.generation, chunk.ordinal) for chunk in chunks]
        stored = await self._with_store_retry(
            "verify", [job.key], lambda: self.store.stored_digests(job.target.kind, ids)
        )
        for chunk, pid in zip(chunks, ids, strict=True):
            if job.verifying and stored.get(pid) == chunk.digest:
                job.reused += 1
                self.metrics.chunks_reused.inc()
                self._acknowledge(job, chunk)
            else:
                job.verifying = False
                await self.queue.put(Pending(job, chunk))

    # --- embed stage ---------------------------------------------------------------------
    async def _next_batch(self, linger: bool) -> list[Pending]:
        """Up to EMBED_BATCH_SIZE chunks; with `linger`, waiting briefly so small files share a
        batch. Lingering while the model is busy costs it nothing; a local model that is idle
        would only wait too, so then the batch is what is queued.

        Padding makes a batch cost (count x longest chunk), which is what ONNX Runtime's memory
        peak follows, so that product is capped by EMBED_BATCH_MAX_TOKENS too.
        """
        first = self._carry or await self.queue.get()
        self._carry = None
        batch, longest = [first], first.chunk.tokens
        deadline = time.monotonic() + (LINGER_SECONDS if linger else 0.0)
        while len(batch) < self.settings.embed_batch_size:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        item = await self.queue.get()
                except TimeoutError:
                    break
            if (len(batch) + 1) * max(longest, item.chunk.tokens) > self.settings.embed_batch_max_tokens:
                self._carry = item
                break
            batch.append(item)
            longest = max(longest, item.chunk.tokens)
        self.metrics.queue_depth.set(self.queue.qsize())
        return batch

    async def _embed_stage(self) -> None:
        """`provider.concurrency` batches at a time and one more queued behind them: while the
        model works, the next batch is looked up in the cache and a finished one is handed to
        the upsert stage, so the model never waits for the loop. Results leave in order."""
        inflight: deque[tuple[list[Pending], asyncio.Task[Embedded]]] = deque()
        depth = self.provider.concurrency + 1
        try:
            while True:
                if inflight and (len(inflight) >= depth or (self.queue.empty() and self._carry is None)):
                    await self._forward(*inflight[0])  # still held, so a stop meanwhile cancels it
                    inflight.popleft()
                    continue
                linger = bool(inflight) or self.provider.fills_batches_when_idle
                taken = await self._next_batch(linger)
                batch = [item for item in taken if item.job.failure is None]
                if batch:
                    inflight.append((batch, asyncio.create_task(self._embed(batch), name="embed-batch")))
        finally:
            # All of them: one left running would reach the embedding cache after the engine
            # has closed it.
            tasks = [task for _, task in inflight]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _forward(self, batch: list[Pending], task: asyncio.Task[Embedded]) -> None:
        vectors, fresh = await task
        kept = [(item, vector) for item, vector in zip(batch, vectors, strict=True) if vector is not None]
        log.debug(
            "batch.embedded",
            path=batch[0].job.key,
            files=len({item.job.key for item in batch}),
            chunks=len(batch),
            fresh=fresh,
            outcome="embedded",
        )
        if kept:
            await self.upserts.put(([item for item, _ in kept], [vector for _, vector in kept]))

    async def _embed(self, batch: list[Pending]) -> Embedded:
        """Vectors for the batch, from the cache where the same text was embedded before, and
        how many the model made."""
        if self.cache is None:
            return await self._embed_fresh(batch), len(batch)
        digests = [item.chunk.digest for item in batch]  # a hash each: computed once here
        cached = await asyncio.to_thread(self.cache.get_many, list(dict.fromkeys(digests)))
        missing = [index for index, digest in enumerate(digests) if digest not in cached]
        self.metrics.cache_hits.inc(len(batch) - len(missing))
        self.metrics.cache_misses.inc(len(missing))
        fresh = await self._embed_fresh([batch[index] for index in missing]) if missing else []
        vectors: list[list[float] | None] = [cached.get(digest) for digest in digests]
        new: dict[str, list[float]] = {}
        for index, vector in zip(missing, fresh, strict=True):
            vectors[index] = vector  # None where the file failed for good
            if vector is not None:
                new[digests[index]] = vector
        await asyncio.to_thread(self.cache.put_many, new)
        return vectors, len(missing)

    async def _embed_fresh(self, batch: list[Pending]) -> list[list[float] | None]:
        """Vectors for the batch; None where a file's embedding failed for good (quarantined)."""
        try:
            return list(await self._embed_texts(batch))
        except EmbeddingError as exc:
            if await self._halt_if_fatal(exc, batch):
                return await self._embed_fresh(batch)
            jobs = list(dict.fromkeys(item.job for item in batch))
            if len(jobs) == 1:
                return await self._embed_one_file(batch, exc, attempt=1)
            # Several files: find the one at fault instead of failing them all.
            results: dict[int, list[float] | None] = {}
            for job in jobs:
                own = [item for item in batch if item.job is job]
                for item, vector in zip(own, await self._embed_one_file(own, exc, attempt=0), strict=True):
                    results[id(item)] = vector
            return [results[id(item)] for item in batch]

    async def _embed_one_file(
        self, batch: list[Pending], error: EmbeddingError, attempt: int
    ) -> list[list[float] | None]:
        job = batch[0].job
        while True:
            if attempt > 0:
                if not error.retryable or attempt >= self.settings.retry_max_attempts:
                    self._fail(job, "quarantined", f"embedding failed after {attempt} attempts: {error}")
                    return [None] * len(batch)
                delay = self._backoff(attempt)
                self.metrics.retries.labels("embed").inc()
                log.warning(
                    "embed.retry",
                    path=job.key,
                    attempt=attempt,
                    delay_s=round(delay, 2),
                    error=str(error)[:200],
                    outcome="retrying",
                )
                await asyncio.sleep(delay)
            try:
                return list(await self._embed_texts(batch))
            except EmbeddingError as exc:
                if await self._halt_if_fatal(exc, batch):
                    continue
                error, attempt = exc, attempt + 1

    async def _embed_texts(self, batch: list[Pending]) -> list[list[float]]:
        started = time.monotonic()
        files = ",".join(dict.fromkeys(item.job.key for item in batch))
        with concerning(files):  # the provider's own log lines (retries, splits) name the files
            vectors = await self.provider.embed_documents([item.chunk.text for item in batch])
        self.metrics.embed_seconds.observe(time.monotonic() - started)
        self.metrics.model_loaded.set(1 if self.provider.loaded else 0)
        self.last_work = time.monotonic()
        return vectors

    async def _halt_if_fatal(self, exc: EmbeddingError, batch: list[Pending]) -> bool:
        """Credentials refused: stop all embedding (files stay pending) until the key changes."""
        if not getattr(exc, "fatal", False):
            return False
        if self.halted is None:
            self.halted = str(exc)
            self.last_error = str(exc)
            log.error("embed.halted", path=batch[0].job.key, reason=str(exc), outcome="halted")
        await asyncio.sleep(self.settings.retry_backoff_max_seconds)
        return True

    # --- upsert stage --------------------------------------------------------------------
    async def _upsert_stage(self) -> None:
        while True:
            batch, vectors = await self.upserts.get()
            live = [
                (item, vector)
                for item, vector in zip(batch, vectors, strict=True)
                if item.job.failure is None
            ]
            by_kind: dict[str, list[models.PointStruct]] = {}
            for item, vector in live:
                by_kind.setdefault(item.job.target.kind, []).append(self._point(item, vector))
            files = sorted({item.job.key for item, _ in live})
            for kind, points in by_kind.items():
                started = time.monotonic()
                await self._with_store_retry("upsert", files, partial(self.store.upsert, kind, points))
                self.metrics.upsert_seconds.observe(time.monotonic() - started)
            for item, _ in live:
                item.job.embedded += 1
                self.totals["chunks_embedded"] += 1  # as stored, so a big file's progress shows
                self.metrics.chunks_embedded.inc()
                self.metrics.tokens_embedded.inc(item.chunk.tokens)
                self._acknowledge(item.job, item.chunk)

    def _point(self, item: Pending, vector: list[float]) -> models.PointStruct:
        job, chunk = item.job, item.chunk
        record = job.record
        payload: dict[str, Any] = {
            **chunk.meta,
            **(job.identity.payload(chunk.meta) if job.identity else {}),
            "path": payload_path(job.key),
            "kind": job.target.kind,
            "generation": record.generation,
            "ordinal": chunk.ordinal,
            "offset": chunk.start,
            "end": chunk.end,
            "tokens": chunk.tokens,
            "digest": chunk.digest,
            "text": chunk.text,
            "model": self.provider.fingerprint,
        }
        return models.PointStruct(
            id=point_id(job.key, record.generation, chunk.ordinal), vector=vector, payload=payload
        )

    async def _with_store_retry(
        self, operation: str, files: list[str], call: Callable[[], Awaitable[T]]
    ) -> T:
        """Qdrant being down is never a file's fault: retry forever, backing off, logging each try."""
        attempt, named = 0, files[:10] or ["-"]
        while True:
            try:
                with concerning(",".join(named)):  # qdrant-client's own warnings name them too
                    async with asyncio.timeout(self.settings.qdrant_timeout_seconds):
                        result = await call()
            except (asyncio.CancelledError, ModelMismatch):
                raise  # a collection of another model is a configuration error, not an outage
            except Exception as exc:
                attempt += 1
                self.store_available = False
                self.metrics.store_up.set(0)
                self.last_error = f"store {operation}: {type(exc).__name__}: {str(exc)[:160]}"
                self.metrics.retries.labels(operation).inc()
                delay = self._backoff(attempt)
                for path in named:
                    log.warning(
                        "store.retry",
                        path=path,
                        operation=operation,
                        attempt=attempt,
                        delay_s=round(delay, 2),
                        error=self.last_error,
                        outcome="retrying",
                    )
                await asyncio.sleep(delay)
                continue
            if not self.store_available:
                log.info(
                    "store.recovered",
                    path=files[0] if files else "-",
                    operation=operation,
                    attempts=attempt,
                    outcome="ok",
                )
            self.store_available = True
            self.metrics.store_up.set(1)
            return result

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = min(
            self.settings.retry_backoff_max_seconds, self.settings.retry_backoff_seconds * 2 ** (attempt - 1)
        )
        return random.uniform(ceiling / 2, ceiling)

    # --- commit --------------------------------------------------------------------------
    def _acknowledge(self, job: FileJob, chunk: Chunk) -> None:
        """Qdrant holds this chunk (and every earlier one of the file): advance the record."""
        record = job.record
        record.resume_offset = chunk.resume.offset
        record.resume_ordinal = chunk.resume.ordinal
        record.resume_line = chunk.resume.line
        record.chunks = max(record.chunks, chunk.ordinal + 1)
        job.redactions += int(chunk.meta.get("redactions", 0) or 0)
        job.acked += 1
        self.state.mark_dirty()
        self._maybe_complete(job)

    def _maybe_complete(self, job: FileJob) -> None:
        if job.settled and not job.done.is_set() and job.key in self.jobs and job.outcome is None:
            job.outcome = Outcome(job.key, job.target.kind, "finishing")
            task = asyncio.create_task(self._complete(job))
            self._completions.add(task)
            task.add_done_callback(self._completions.discard)

    async def _complete(self, job: FileJob) -> None:
        """Record the pass: every await comes before the record changes, so a completion
        cancelled at shutdown leaves the file pending (resumable), never half `done`."""
        try:
            if job.failure is not None:
                self._record_failure(job, *job.failure)
            else:
                await self._record_done(job)
        except asyncio.CancelledError:
            job.outcome = Outcome(job.key, job.target.kind, "pending", "interrupted")
            raise
        except Exception as exc:  # the record is unchanged: the next pass finishes the file
            reason = f"recording the pass failed: {type(exc).__name__}: {exc}"
            job.outcome = Outcome(job.key, job.target.kind, "pending", reason)
            log.exception("file.error", path=job.key, error=reason, outcome="pending")
        finally:
            self.jobs.pop(job.key, None)
            self.metrics.files_pending.set(len(self.jobs))
            job.done.set()

    async def _record_done(self, job: FileJob) -> None:
        record = job.record
        if not job.fresh and "chunks" in job.final:
            # A resumed pass may have produced fewer chunks than an earlier, different
            # version of the file: drop any of this generation beyond the end.
            await self._with_store_retry(
                "delete",
                [job.key],
                lambda: self.store.delete_file(
                    job.target.kind, job.key, record.generation, job.final["chunks"]
                ),
            )
        redactions = job.redactions
        if not job.fresh and (job.redactions or record.redactions):
            # A resumed pass re-counts its re-opened chunk: ask Qdrant for the true total.
            redactions = await self._with_store_retry(
                "count", [job.key], lambda: self.store.file_total(job.target.kind, job.key, "redactions")
            )
        for key in ("offset", "head_len", "head_fp", "tail_fp", "resume_offset", "resume_ordinal", "chunks"):
            if key in job.final:
                setattr(record, key, job.final[key])
        record.status, record.reason, record.attempts = "done", None, 0
        record.redactions = redactions
        self.state.put(job.key, record)
        self._finish(job, "done", None)

    def _record_failure(self, job: FileJob, status: str, reason: str) -> None:
        record = job.record
        record.status, record.reason = status, reason  # type: ignore[assignment]
        record.attempts += 1
        self.state.put(job.key, record)
        self._finish(job, status, reason)

    def _abandon(self, job: FileJob) -> None:
        """The read or the pipeline was stopped: drop the job's queued chunks, keep the file
        pending (its record keeps every acknowledged chunk's resume point)."""
        job.reading = False
        if job.failure is None:
            job.failure = ("pending", "interrupted")
        job.final.pop("verify", None)
        if job.outcome is None:
            job.outcome = Outcome(job.key, job.target.kind, "pending", "interrupted")
            if self.jobs.get(job.key) is job:
                self.jobs.pop(job.key)
                self.metrics.files_pending.set(len(self.jobs))
            job.done.set()

    def _finish(self, job: FileJob, status: str, reason: str | None) -> None:
        seconds = time.monotonic() - job.started
        job.outcome = Outcome(
            job.key, job.target.kind, status, reason, job.record.chunks, job.embedded, job.reused, seconds
        )
        self.totals[status] += 1
        self.metrics.files.labels(job.target.kind, status).inc()
        if status != "done":
            self.metrics.failures.labels(_reason_label(reason)).inc()
            self.last_error = f"{job.key}: {reason}"
        now = time.monotonic()
        if now - self._last_trim >= TRIM_INTERVAL or job.bytes_read > 1 << 20:
            release_memory()
            self._last_trim = now
        fields: dict[str, Any] = {
            "path": job.key,
            "kind": job.target.kind,
            "outcome": status,
            "chunks": job.record.chunks,
            "embedded": job.embedded,
            "reused": job.reused,
            "seconds": round(seconds, 3),
            "chunks_per_s": round(job.embedded / seconds, 1) if seconds > 0 else None,
            "rss_mb": rss_mb(),
        }
        if job.counts:
            fields["lines"] = dict(job.counts)
        if job.redactions:
            fields["redactions"] = job.redactions
        if reason:
            fields["reason"] = reason
        (log.info if status == "done" else log.warning)(
            "file.ingested" if status == "done" else f"file.{status}", **fields
        )

    def _fail(self, job: FileJob, status: str, reason: str) -> None:
        if job.failure is None:
            job.failure = (status, reason)
            job.final.pop("verify", None)
            job.acked = job.emitted  # nothing more will be acknowledged; settle now
            self._maybe_complete(job)

    def _skip(self, target: Target, reason: str, status: Status = "skipped") -> Outcome:
        record = self.state.get(target.key) or FileRecord(kind=target.kind)
        record.status, record.reason = status, reason
        record.attempts += 1
        self.state.put(target.key, record)
        log.warning(f"file.{status}", path=target.key, kind=target.kind, reason=reason, outcome=status)
        return Outcome(target.key, target.kind, status, reason)

    def _check_unchanged(self, job: FileJob) -> None:
        """A file that changed while it was read is logged; its record keeps the signature seen
        before the read, so the next pass (file event or reconcile scan) looks at it again."""
        try:
            now = _signature(os.stat(job.target.real))
        except OSError:
            return
        if now != job.record.signature():
            # Growth is normal for a live transcript (appended to while read); anything else warns.
            grew = job.target.kind == "conversations" and now[0] >= job.record.size
            (log.debug if grew else log.warning)(
                "file.changed_while_reading",
                path=job.key,
                kind=job.target.kind,
                reason="changed while being read; read again on the next pass",
                size_before=job.record.size,
                size_now=now[0],
                outcome="re-read later",
            )

    # --- refusals, deletions, forgetting -------------------------------------------------
    def refuse(self, key: str, kind: str, reason: str) -> Outcome:
        """Record a path refused before reading (FIFO, outside link, …), logging it once."""
        record = self.state.get(key)
        if record is not None and record.status == "skipped" and record.reason == reason:
            return Outcome(key, kind, "unchanged")
        record = record or FileRecord(kind=kind)
        record.status, record.reason = "skipped", reason
        self.state.put(key, record)
        self.metrics.failures.labels(_reason_label(reason)).inc()
        log.warning("file.skipped", path=key, kind=kind, reason=reason, outcome="skipped")
        return Outcome(key, kind, "skipped", reason)

    async def remove(self, key: str) -> Outcome:
        """The file is gone: purge or keep its points according to the kind's policy."""
        record = self.state.get(key)
        if record is None or record.status == "deleted":
            return Outcome(key, record.kind if record else "?", "unchanged")
        purge = (
            self.settings.documents_purge_on_delete
            if record.kind == "documents"
            else self.settings.conversations_purge_on_delete
        )
        if purge:
            await self._with_store_retry("delete", [key], lambda: self.store.delete_file(record.kind, key))
            self.state.remove(key)
        else:
            record.status, record.reason = "deleted", "file deleted; points kept"
            self.state.put(key, record)
        outcome = "purged" if purge else "kept"
        log.info("file.deleted", path=key, kind=record.kind, outcome=outcome, chunks=record.chunks)
        return Outcome(key, record.kind, "deleted", outcome)

    async def forget(self, key: str) -> Outcome:
        record = self.state.get(key)
        if record is None:
            raise KeyError(key)
        await self._with_store_retry("delete", [key], lambda: self.store.delete_file(record.kind, key))
        record.status, record.reason = "forgotten", "forgotten on request"
        self.state.put(key, record)
        log.info("file.forgotten", path=key, kind=record.kind, outcome="forgotten")
        return Outcome(key, record.kind, "forgotten")


def _signature(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def _reason_label(reason: str | None) -> str:
    return (reason or "unknown").split("(")[0].split(":")[0].strip()[:40]


def _ends_line(path: Path, offset: int) -> bool:
    with path.open("rb") as handle:
        handle.seek(offset - 1)
        return handle.read(1) == b"\n"


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(8192)


def _skim(sections: SectionBuilder, path: Path, end: int) -> None:
    """Replay the lines before `end` into the builder's heading and fence state (no text kept)."""
    with path.open("rb") as handle:
        position = 0
        for data in handle:
            position += len(data)
            if position > end:
                return
            sections.replay(data.decode("utf-8", "replace"))


def _first_line(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.readline(min(limit, 1 << 20))
