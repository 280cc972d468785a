"""read → plan → chunk → embed → store → commit, for one file at a time per reader.

Readers stream a file from its resume point (read), decide first whether to skip, append or
rewrite it (plan), and pack its units into chunks (chunk). Chunks of all files meet in one
bounded queue (backpressure) that the embed stage batches; an embedded batch is stored while
the next is embedded; a stored batch advances the ledger (commit). A file is `done` once every
chunk it produced is acknowledged, so a kill at any instant loses nothing and, on restart, the
chunks already in Qdrant are verified by digest instead of embedded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from ingestd.discovery import Target
from ingestd.embed_cache import EmbeddingCache
from ingestd.embedding import EmbeddingProvider
from ingestd.errors import DocumentError, StageCrashed
from ingestd.ledger import FileRecord, Ledger, Status
from ingestd.logs import concerning, get_logger
from ingestd.metrics import Metrics
from ingestd.pipeline_status import PipelineStatus
from ingestd.policies import FilePolicies
from ingestd.reader import FINGERPRINT_BYTES, fingerprint
from ingestd.retry import Backoff, RetryPolicy
from ingestd.settings import Settings
from ingestd.stages.chunk import ChunkStage, Redactor
from ingestd.stages.commit import CommitStage
from ingestd.stages.embed import EmbedStage
from ingestd.stages.items import EmbeddedBatch, FileJob, Outcome, Pending, StoredBatch, stat_signature
from ingestd.stages.plan import Plan, decide, observe
from ingestd.stages.read import FileReader
from ingestd.stages.store import StoreStage
from ingestd.store import VectorStore
from ingestd.store_gateway import StoreGateway
from ingestd.supervision import Supervisor

__all__ = ["FileJob", "Outcome", "Pipeline"]
log = get_logger("ingestd.pipeline")
STOP_GRACE = 3.0  # seconds stop() gives the work in flight to be stored and committed
LAST_COMPLETIONS = 0.5  # seconds the last completions get when the drain used the whole grace
COMMIT_QUEUE = 8  # stored batches waiting for their ledger transaction


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        provider: EmbeddingProvider,
        store: VectorStore,
        ledger: Ledger,
        metrics: Metrics | None = None,
        redactor: Redactor | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        embed = settings.embed
        self.ledger = ledger
        self.metrics = metrics = metrics or Metrics()
        backoff = Backoff(embed.retry_backoff_seconds, embed.retry_backoff_max_seconds)
        self.gateway = StoreGateway(store, backoff, settings.store.qdrant_timeout_seconds, metrics)
        chunks: asyncio.Queue[Pending] = asyncio.Queue(maxsize=settings.ops.queue_max_chunks)
        embedded: asyncio.Queue[EmbeddedBatch] = asyncio.Queue(maxsize=1)
        commits: asyncio.Queue[StoredBatch] = asyncio.Queue(maxsize=COMMIT_QUEUE)
        self._chunks = chunks
        self.commit = CommitStage(ledger, self.gateway, commits, metrics)
        self.reader = FileReader(settings.read)
        self.chunker = ChunkStage(
            settings.chunk, lambda: provider.counter, redactor, self.gateway, embed.embed_batch_size,
            chunks, commits, metrics,
        )  # fmt: skip
        self.policy = RetryPolicy(embed.retry_max_attempts, backoff)  # searches use it too
        self.embedder = EmbedStage(
            provider,
            cache,
            self.policy,
            embed.embed_batch_size,
            embed.embed_batch_max_tokens,
            embed.retry_backoff_max_seconds,
            chunks,
            embedded,
            metrics,
            self.commit.settle,
        )
        self.storer = StoreStage(self.gateway, provider.fingerprint, embedded, commits)
        purge = {
            "documents": settings.store.documents_purge_on_delete,
            "conversations": settings.store.conversations_purge_on_delete,
        }
        self.policies = FilePolicies(ledger, self.gateway, purge, metrics)
        self._stages = Supervisor()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._stages.add("embed-stage", self.embedder.run())
        self._stages.add("store-stage", self.storer.run())
        self._stages.add("commit-stage", self.commit.run())

    @property
    def stages(self) -> tuple[asyncio.Task[None], ...]:
        """The stage tasks, for a supervisor to watch: if one dies, nothing more is embedded."""
        return self._stages.tasks

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Let what was read land, then cancel the stages.

        Every chunk already read (queued, being embedded, being stored) gets `grace` seconds to
        be stored and committed, so a stop re-embeds nothing next time; what is still in flight
        then is simply not recorded, and replayed idempotently by the next pass.
        """
        deadline = time.monotonic() + grace
        if self._stages.tasks and self._stages.crashed() is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.commit.all_closed()
        # A stage that died has been reported by whoever watched it (daemon, import).
        await self._stages.stop()
        await self.commit.stop(max(deadline - time.monotonic(), LAST_COMPLETIONS))

    async def settled(self, job: FileJob) -> None:
        """Until the job has settled, or was left pending by `stop`. Raises StageCrashed if a
        stage dies first: that job would never settle, and the caller would wait for good."""
        crashed = await self._stages.wait_first_crash(job.done)
        if crashed is not None:
            error = crashed.exception()
            raise StageCrashed(
                f"{crashed.get_name()} stopped ({error!r}); {job.key} stays pending"
            ) from error

    def status(self) -> PipelineStatus:
        totals, jobs = self.commit.totals, self.commit.jobs
        halted = self.embedder.halted
        store_error = None if self.gateway.available else self.gateway.last_error
        return PipelineStatus(
            files_in_flight=len(jobs),
            chunks_queued=self._chunks.qsize(),
            store_available=self.gateway.available,
            embedding_halted=halted,
            last_error=halted or store_error or self.commit.last_error or self.gateway.last_error,
            last_work=self.embedder.last_work,
            oldest_queued_at=min((job.queued_at for job in jobs.values()), default=None),
            files_done=totals[Status.DONE],
            files_finished=sum(n for status, n in totals.items() if status != "chunks_embedded"),
            chunks_embedded=totals["chunks_embedded"],
        )

    def job(self, key: str) -> FileJob | None:
        """The pass in flight over `key`, if any (the daemon waits for it to requeue a change)."""
        return self.commit.jobs.get(key)

    # --- one file ------------------------------------------------------------------------
    async def ingest(self, target: Target) -> FileJob | Outcome:
        """Start a pass over the file; returns its job, or the outcome when nothing is to do."""
        if target.key in self.commit.jobs:
            return Outcome(target.key, target.kind, "busy")
        try:
            info = os.stat(target.real)
        except FileNotFoundError:
            return await self.policies.remove(target.key)
        except OSError as exc:
            return self.policies.skip(target.key, target.kind, f"cannot stat: {exc.strerror}")
        record = self.ledger.get(target.key)
        seen = await asyncio.to_thread(observe, target, record, info)
        plan = decide(record, seen, target.kind)
        if plan is Plan.UNCHANGED:
            return Outcome(target.key, target.kind, "unchanged")
        begun = await self._begin(target, record, plan, info)
        if isinstance(begun, Outcome):
            return begun
        job = FileJob(target=target, record=begun, fresh=plan is not Plan.RESUME)
        self.commit.open(job)
        self.chunker.begin(job)
        await self._read(job)
        return job

    async def _begin(
        self, target: Target, record: FileRecord | None, plan: Plan, info: os.stat_result
    ) -> FileRecord | Outcome:
        """The record this pass starts from, written to the ledger before any chunk is sent."""
        if plan is Plan.REWRITE and record is not None:
            await self.gateway.delete_file(target.kind, target.key)
            record = FileRecord(kind=target.kind, generation=record.generation + 1, attempts=record.attempts)
            log.info("file.rewritten", path=target.key, outcome="re-ingest", generation=record.generation)
        elif record is None or plan is Plan.NEW:
            record = FileRecord(kind=target.kind)
        record.size, record.mtime_ns, record.ctime_ns, record.inode = stat_signature(info)
        record.status, record.reason = Status.PENDING, None
        if plan is not Plan.RESUME:
            record.head_len = min(FINGERPRINT_BYTES, info.st_size)
            try:
                record.head_fp = await asyncio.to_thread(fingerprint, target.real, 0, record.head_len)
            except FileNotFoundError:
                return await self.policies.remove(target.key)
            except OSError as exc:  # EACCES above all: stat needs no read permission, open does
                reason = "permission denied" if isinstance(exc, PermissionError) else "cannot read"
                return self.policies.skip(
                    target.key, target.kind, f"{reason}: {exc.strerror or exc}", Status.FAILED
                )
        self.ledger.begin(target.key, record)
        return record

    async def _read(self, job: FileJob) -> None:
        try:
            with concerning(job.key):  # a parser's own warnings (pypdf's) name the file
                await self._chunk(job)
        except DocumentError as exc:
            job.fail(Status.SKIPPED, str(exc))
        except (FileNotFoundError, IsADirectoryError):
            job.fail(Status.FAILED, "file disappeared while being read")
        except PermissionError:
            job.fail(Status.FAILED, "permission denied")
        except OSError as exc:
            job.fail(Status.FAILED, f"read error: {exc.strerror or exc}")
        except BaseException:
            # Cancelled (shutdown) or a bug: what was already read still lands within the
            # stop's grace, and the file stays pending, never done.
            job.interrupted = True
            self._end_reading(job)
            raise
        self._end_reading(job)

    def _end_reading(self, job: FileJob) -> None:
        self.chunker.drop(job)
        job.reading = False
        self.commit.settle(job)

    async def _chunk(self, job: FileJob) -> None:
        packer = self.chunker.packer(job)
        async for unit in self.reader.units(job):
            await self.chunker.feed(job, packer, unit)
            if not job.live:
                return  # quarantined meanwhile: nothing more of it is wanted
        tail = await self.chunker.end(job, packer)
        if job.live:
            chunks = packer.ordinal + (1 if tail is not None else 0)
            job.final = await self.reader.finish(job, chunks, resumable=tail is None)
            self.reader.warn_if_changed(job)
