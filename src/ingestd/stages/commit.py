"""The commit stage: what Qdrant acknowledged advances the ledger, and a settled pass is recorded.

A file's record only ever moves after its points are stored, so a kill at any instant leaves a
ledger that lags Qdrant and never leads it: the next pass re-acknowledges what is already
stored (by digest) and embeds nothing twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from ingestd.ledger import Ledger, ResumePoint, Status
from ingestd.logs import get_logger
from ingestd.metrics import Metrics
from ingestd.stages.items import FileJob, Outcome, Pending, StoredBatch, reason_label
from ingestd.store_gateway import StoreGateway
from ingestd.system import release_memory, rss_mb

log = get_logger("ingestd.stages.commit")
TRIM_INTERVAL = 5.0  # gc + malloc_trim after a file, at most this often (and after big files)
BIG_PASS = 1 << 20  # bytes read: a pass this large trims memory after it in any case


class CommitStage:
    """Acknowledges stored chunks in the ledger and records each pass once it has settled."""

    def __init__(
        self,
        ledger: Ledger,
        gateway: StoreGateway,
        inbox: asyncio.Queue[StoredBatch],
        metrics: Metrics,
    ) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.inbox = inbox
        self.metrics = metrics
        self.jobs: dict[str, FileJob] = {}
        self._none_open = asyncio.Event()
        self._none_open.set()
        self.totals: Counter[str] = Counter()
        self.last_error: str | None = None
        self._completions: set[asyncio.Task[None]] = set()
        self._last_trim = 0.0

    # --- passes --------------------------------------------------------------------------
    def open(self, job: FileJob) -> None:
        self.jobs[job.key] = job
        self._none_open.clear()
        self.metrics.files_pending.set(len(self.jobs))

    async def all_closed(self) -> None:
        """Until no pass is open: each has been recorded, or released as pending."""
        await self._none_open.wait()

    async def run(self) -> None:
        while True:
            self.commit(await self.inbox.get())

    def commit(self, batch: StoredBatch) -> None:
        """One ledger transaction for the whole batch: per file, its last chunk's resume point."""
        progress: dict[str, tuple[ResumePoint, int]] = {}
        for item in batch.items:
            job, chunk = item.job, item.chunk
            resume = chunk.resume
            job.chunks = max(job.chunks, chunk.ordinal + 1)
            progress[job.key] = (ResumePoint(resume.offset, resume.ordinal, resume.line), job.chunks)
        live = {key: point for key, point in progress.items() if key in self.jobs}
        if live:
            self.ledger.acknowledged(live)  # a failed write logs and lags, which is safe
        for item in batch.items:
            self._count(item, batch.reused)
        for job in {id(item.job): item.job for item in batch.items}.values():
            self.settle(job)

    def _count(self, item: Pending, reused: bool) -> None:
        job = item.job
        job.acked += 1
        job.redactions += int(item.chunk.meta.get("redactions", 0) or 0)
        if reused:
            job.reused += 1
            self.metrics.chunks_reused.inc()
            return
        job.embedded += 1
        self.totals["chunks_embedded"] += 1  # as stored, so a big file's progress shows
        self.metrics.chunks_embedded.inc()
        self.metrics.tokens_embedded.inc(item.chunk.tokens)

    def settle(self, job: FileJob) -> None:
        """Record the pass once reading has ended and every emitted chunk is acknowledged."""
        if job.settled and job.outcome is None and self.jobs.get(job.key) is job:
            job.outcome = Outcome(job.key, job.kind, "finishing")
            task = asyncio.create_task(self._complete(job), name=f"complete:{job.key}")
            self._completions.add(task)
            task.add_done_callback(self._completions.discard)

    async def _complete(self, job: FileJob) -> None:
        """Every await comes before the ledger changes, so a completion cancelled at shutdown
        leaves the file pending (resumable), never half `done`."""
        try:
            if job.interrupted and job.failure is None:
                self.ledger.abandoned(job.key)
                job.outcome = Outcome(job.key, job.kind, Status.PENDING, "interrupted")
            elif job.failure is not None:
                self.ledger.failed(job.key, job.kind, job.failure.status, job.failure.reason)
                self._finish(job, job.failure.status, job.failure.reason)
            else:
                await self._record_done(job)
        except asyncio.CancelledError:
            job.outcome = Outcome(job.key, job.kind, Status.PENDING, "interrupted")
            raise
        except Exception as exc:  # the record is unchanged: the next pass finishes the file
            reason = f"recording the pass failed: {type(exc).__name__}: {exc}"
            job.outcome = Outcome(job.key, job.kind, Status.PENDING, reason)
            log.exception("file.error", path=job.key, error=reason, outcome="pending")
        finally:
            self._close(job)

    async def _record_done(self, job: FileJob) -> None:
        final = job.final
        assert final is not None  # a pass without failure or interruption read to the end
        record = job.record
        if not job.fresh:
            # A resumed pass may have produced fewer chunks than an earlier, different
            # version of the file: drop any of this generation beyond the end.
            await self.gateway.delete_file(job.kind, job.key, record.generation, final.chunks)
        redactions = job.redactions
        if not job.fresh and (job.redactions or record.redactions):
            # A resumed pass re-counts its re-opened chunk: ask Qdrant for the true total.
            redactions = await self.gateway.file_total(job.kind, job.key, "redactions")
        job.record = self.ledger.done(job.key, replace(final, redactions=redactions))
        self._finish(job, Status.DONE, None)

    def release(self, job: FileJob) -> None:
        """The pass was stopped before it could settle: the file stays pending, its record keeps
        every acknowledged chunk's resume point."""
        job.reading = False
        if job.outcome is None:
            job.outcome = Outcome(job.key, job.kind, Status.PENDING, "interrupted")
            if self.jobs.get(job.key) is job:
                self.ledger.abandoned(job.key)
            self._close(job)

    def _close(self, job: FileJob) -> None:
        if self.jobs.get(job.key) is job:
            self.jobs.pop(job.key)
            self.metrics.files_pending.set(len(self.jobs))
            if not self.jobs:
                self._none_open.set()
        job.done.set()

    async def stop(self, grace: float) -> None:
        """Completions get `grace` seconds, then are cancelled: with the store down they would
        retry forever, and a cancelled completion leaves its file pending for the next run."""
        completions = list(self._completions)
        if completions:
            _, late = await asyncio.wait(completions, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for job in list(self.jobs.values()):  # chunks no stage will acknowledge now
            self.release(job)

    # --- outcomes ------------------------------------------------------------------------
    def _finish(self, job: FileJob, status: Status, reason: str | None) -> None:
        seconds = time.monotonic() - job.started
        chunks = job.record.chunks if status == Status.DONE else job.chunks
        job.outcome = Outcome(job.key, job.kind, status, reason, chunks, job.embedded, job.reused, seconds)
        self.count_outcome(job.key, job.kind, status, reason)
        now = time.monotonic()
        if now - self._last_trim >= TRIM_INTERVAL or job.bytes_read > BIG_PASS:
            release_memory()
            self._last_trim = now
        fields: dict[str, Any] = {
            "path": job.key,
            "kind": job.kind,
            "outcome": str(status),
            "chunks": chunks,
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
        if status == Status.DONE:
            log.info("file.ingested", **fields)
        else:
            log.warning(f"file.{status}", **fields)

    def count_outcome(self, key: str, kind: str, status: Status, reason: str | None) -> None:
        self.totals[status] += 1
        self.metrics.files.labels(kind, status).inc()
        if status != Status.DONE:
            self.metrics.failures.labels(reason_label(reason)).inc()
            self.last_error = f"{key}: {reason}"
