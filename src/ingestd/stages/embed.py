"""The embed stage: chunks from every file are batched, looked up in the cache, and embedded.

Batches are capped by count and by (count x longest chunk), which is what ONNX Runtime's
memory peak follows. `provider.concurrency` batches run at once with one more queued behind,
so the model never waits for the loop; results leave in the order they came. Failures are the
retry policy's to judge; this stage only decides whose fault a failure is.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from ingestd.embed_cache import EmbeddingCache
from ingestd.embedding import EmbeddingProvider
from ingestd.errors import EmbeddingSignal, Fatal, GaveUp
from ingestd.ledger import Status
from ingestd.logs import concerning, get_logger
from ingestd.metrics import Metrics
from ingestd.retry import RetryPolicy
from ingestd.stages.items import EmbeddedBatch, FileJob, Pending

log = get_logger("ingestd.stages.embed")
LINGER_SECONDS = 0.02  # how long a batch may wait for more chunks while the model is busy
Vectors = list[list[float] | None]  # None where the chunk's file failed for good
Embedded = tuple[Vectors, int]  # and how many the model made (not the cache)


class EmbedStage:
    def __init__(
        self,
        provider: EmbeddingProvider,
        cache: EmbeddingCache | None,
        policy: RetryPolicy,
        batch_size: int,
        batch_max_tokens: int,
        halt_pause: float,
        inbox: asyncio.Queue[Pending],
        outbox: asyncio.Queue[EmbeddedBatch],
        metrics: Metrics,
        settle: Callable[[FileJob], None],
    ) -> None:
        self.provider = provider
        self.cache = cache
        self.policy = policy
        self.first_try = RetryPolicy(1, policy.backoff)  # a mixed batch's: then split by file
        self.batch_size = batch_size
        self.batch_max_tokens = batch_max_tokens
        self.halt_pause = halt_pause
        self.inbox = inbox
        self.outbox = outbox
        self.metrics = metrics
        self.settle = settle
        self.halted: str | None = None  # why all embedding stopped (credentials refused)
        self.last_work = time.monotonic()
        self._carry: Pending | None = None

    async def run(self) -> None:
        inflight: deque[tuple[list[Pending], asyncio.Task[Embedded]]] = deque()
        depth = self.provider.concurrency + 1
        try:
            while True:
                if inflight and (len(inflight) >= depth or (self.inbox.empty() and self._carry is None)):
                    await self._forward(*inflight[0])  # still held, so a stop meanwhile cancels it
                    inflight.popleft()
                    continue
                linger = bool(inflight) or self.provider.fills_batches_when_idle
                taken = await self._next_batch(linger)
                batch = [item for item in taken if item.job.live]
                if batch:
                    inflight.append((batch, asyncio.create_task(self._embed(batch), name="embed-batch")))
        finally:
            # All of them: one left running would reach the embedding cache after the engine
            # has closed it.
            tasks = [task for _, task in inflight]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _next_batch(self, linger: bool) -> list[Pending]:
        """With `linger`, waiting briefly so small files share a batch: lingering while the
        model is busy costs it nothing, while an idle local model would only wait too."""
        first = self._carry or await self.inbox.get()
        self._carry = None
        batch, longest = [first], first.chunk.tokens
        deadline = time.monotonic() + (LINGER_SECONDS if linger else 0.0)
        while len(batch) < self.batch_size:
            try:
                item = self.inbox.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        item = await self.inbox.get()
                except TimeoutError:
                    break
            if (len(batch) + 1) * max(longest, item.chunk.tokens) > self.batch_max_tokens:
                self._carry = item
                break
            batch.append(item)
            longest = max(longest, item.chunk.tokens)
        self.metrics.queue_depth.set(self.inbox.qsize())
        return batch

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
            await self.outbox.put(EmbeddedBatch([item for item, _ in kept], [vector for _, vector in kept]))

    async def _embed(self, batch: list[Pending]) -> Embedded:
        """Vectors from the cache where the same text was embedded before, the rest fresh."""
        if self.cache is None:
            return await self._embed_fresh(batch), len(batch)
        digests = [item.chunk.digest for item in batch]  # a hash each: computed once here
        cached = await asyncio.to_thread(self.cache.get_many, list(dict.fromkeys(digests)))
        missing = [index for index, digest in enumerate(digests) if digest not in cached]
        self.metrics.cache_hits.inc(len(batch) - len(missing))
        self.metrics.cache_misses.inc(len(missing))
        fresh = await self._embed_fresh([batch[index] for index in missing]) if missing else []
        vectors: Vectors = [cached.get(digest) for digest in digests]
        new: dict[str, list[float]] = {}
        for index, vector in zip(missing, fresh, strict=True):
            vectors[index] = vector
            if vector is not None:
                new[digests[index]] = vector
        await asyncio.to_thread(self.cache.put_many, new)
        return vectors, len(missing)

    async def _embed_fresh(self, batch: list[Pending]) -> Vectors:
        """A batch of several files gets one try before it is split by file, so that only the
        file at fault is retried and quarantined, and the others are not held back meanwhile."""
        jobs = list(dict.fromkeys(item.job for item in batch))
        if len(jobs) == 1:
            return await self._embed_one_file(batch)
        try:
            return list(await self._with_policy(batch, self.first_try))
        except GaveUp:
            pass
        results: dict[int, list[float] | None] = {}
        for job in jobs:
            own = [item for item in batch if item.job is job]
            for item, vector in zip(own, await self._embed_one_file(own), strict=True):
                results[id(item)] = vector
        return [results[id(item)] for item in batch]

    async def _embed_one_file(self, batch: list[Pending]) -> Vectors:
        try:
            return list(await self._with_policy(batch, self.policy))
        except GaveUp as exc:
            return self._quarantine(batch, exc)

    async def _with_policy(self, batch: list[Pending], policy: RetryPolicy) -> list[list[float]]:
        """The policy's verdict; credentials refused halt all embedding, in a loop (not a
        recursion, which grew the stack by a frame every pause)."""
        while True:
            try:
                return await policy.run(
                    self._embed_texts, batch, partial(self._log_retry, batch), plan=self._requests
                )
            except Fatal as exc:
                await self._halt(exc, batch)

    def _requests(self, batch: list[Pending]) -> list[range]:
        """The provider's own requests: a failed one is retried alone."""
        return self.provider.plan_requests([item.chunk.text for item in batch])

    def _quarantine(self, batch: list[Pending], error: GaveUp) -> Vectors:
        job = batch[0].job
        job.fail(Status.QUARANTINED, f"embedding failed after {error.attempts} attempts: {error.signal}")
        self.settle(job)
        return [None] * len(batch)

    async def _embed_texts(self, batch: list[Pending]) -> list[list[float]]:
        started = time.monotonic()
        files = ",".join(dict.fromkeys(item.job.key for item in batch))
        with concerning(files):  # the provider's own log lines name the files
            vectors = await self.provider.embed_documents([item.chunk.text for item in batch])
        self.metrics.embed_seconds.observe(time.monotonic() - started)
        self.metrics.model_loaded.set(1 if self.provider.loaded else 0)
        self.last_work = time.monotonic()
        if self.halted is not None:
            log.info("embed.resumed", path=batch[0].job.key, outcome="resumed")
            self.halted = None
        return vectors

    def _log_retry(self, batch: list[Pending], attempt: int, delay: float, signal: EmbeddingSignal) -> None:
        self.metrics.retries.labels("embed").inc()
        for key in dict.fromkeys(item.job.key for item in batch):
            log.warning(
                "embed.retry",
                path=key,
                attempt=attempt,
                delay_s=round(delay, 2),
                error=str(signal)[:200],
                outcome="retrying",
            )

    async def _halt(self, exc: Fatal, batch: list[Pending]) -> None:
        """Credentials refused: files stay pending, and the batch is tried again after a pause."""
        if self.halted is None:
            self.halted = str(exc)
            log.error("embed.halted", path=batch[0].job.key, reason=str(exc), outcome="halted")
        await asyncio.sleep(self.halt_pause)
