"""The supervisor: start everything, keep it running, stop cleanly on SIGTERM or SIGINT.

Readers take paths from the work queue, the pipeline embeds and stores, the watcher feeds the
queue, and small loops report progress, unload an idle model and watch memory. On a signal
intake stops at once, the in-flight batch is either acknowledged or dropped unrecorded (it is
replayed idempotently next time), the state is written, and the process exits 0. After an
idle unload it stops the same way with `next_mode` set, and the CLI re-executes the process as
its small dormant image (ingestd.dormant).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from ingestd.engine import Engine
from ingestd.health import Handler, HealthServer, announce, hand_over, withdraw
from ingestd.logs import get_logger, mask
from ingestd.pipeline import FileJob, Outcome
from ingestd.settings import Settings
from ingestd.supervision import cancel_and_wait, first_crash, set_within
from ingestd.system import STOP_SIGNALS, release_memory, rss_mb
from ingestd.watcher import Watcher
from ingestd.workqueue import WorkQueue

log = get_logger("ingestd.daemon")
MEMORY_CHECK_SECONDS = 5.0
SHUTDOWN_GRACE = 7.0  # seconds for the in-flight batch before it is abandoned (10 s budget)
HEALTH_PING_TIMEOUT = 3.0  # seconds; the container's health check gives up after 5
ACTION_READY_WAIT = 20.0  # seconds an API call waits for start-up before it is tried anyway


class Daemon:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.queue = WorkQueue()
        self.watcher = Watcher(settings, self.queue, self.engine.state, metrics=self.engine.metrics)
        self.engine.metrics.bind(
            files_queued=lambda: len(self.queue),
            backlog_age=self.backlog_age,
            model_loaded=lambda: self.engine.provider.loaded,
            store_up=lambda: self.engine.pipeline.store_available,
        )
        self.health = HealthServer(
            settings.health_host,
            settings.health_port,
            self.health_report,
            self.engine.metrics.exposition,
            self._actions(),
        )
        self.stopping = asyncio.Event()
        self.intake = asyncio.Event()  # cleared while memory is being recovered
        self.intake.set()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._busy_since: float | None = None
        self._done_files = 0
        self._requeues: dict[str, asyncio.Task[None]] = {}
        self._taken: dict[Path, float] = {}  # paths readers hold, with the time they were queued
        self.next_mode: str | None = None  # "dormant" when an idle stop should re-execute small
        self._last_call = 0.0  # monotonic time of the last API call

    # --- run -----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        # Lock before announcing: a second daemon must fail before it overwrites daemon.json.
        self.engine.state.lock("daemon")
        await self.health.start()
        announce(self.settings, self.health.bound_port)
        log.info(
            "daemon.starting",
            path=str(self.settings.state_dir),
            outcome="starting",
            store=self.engine.store.location,
            model=self.engine.provider.fingerprint,
            roots=[f"{kind}:{root}" for kind, root in self.engine.roots],
            health_port=self.health.bound_port,
        )
        try:
            # The store may be down for a long time (open waits for it): a signal still stops us.
            opening = asyncio.create_task(self.engine.open("daemon"), name="engine-open")
            stop = asyncio.create_task(self.stopping.wait(), name="stop-wait")
            await asyncio.wait({opening, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not opening.done():
                await cancel_and_wait(opening)
                return 0
            opening.result()
            # Watch first, then scan: a file created in between is seen by one or the other.
            self._tasks = [*self.watcher.start()]
            await asyncio.sleep(0.2)
            await self.watcher.reconcile()
            self._tasks += [
                *(
                    asyncio.create_task(self._reader(n), name=f"reader-{n}")
                    for n in range(self.settings.file_concurrency)
                ),
                asyncio.create_task(self.watcher.reconcile_forever(), name="reconcile"),
                asyncio.create_task(self._progress_loop(), name="progress"),
                asyncio.create_task(self._idle_loop(), name="idle-unload"),
                asyncio.create_task(self._memory_loop(), name="memory"),
            ]
            self.ready.set()
            log.info(
                "daemon.ready", path=str(self.settings.state_dir), queued=len(self.queue), outcome="ready"
            )
            return await self._supervise()
        finally:
            await self._shutdown()

    async def _supervise(self) -> int:
        """Until a stop is asked for; exit code 1 when a long-lived task dies of an error.

        A dead stage or reader would leave the daemon up but stalled for good. Exiting lets the
        container restart it, and the state file resumes every file where it was.
        """
        crashed = await first_crash([*self._tasks, *self.engine.pipeline.stages], self.stopping)
        if crashed is None:
            return 0
        error = crashed.exception()
        log.error(
            "daemon.task_crashed",
            path=str(self.settings.state_dir),
            task=crashed.get_name(),
            error=f"{type(error).__name__}: {error}",
            outcome="exiting",
            exc_info=error,
        )
        self.request_stop(f"{crashed.get_name()} crashed")
        return 1

    def request_stop(self, why: str = "request") -> None:
        if not self.stopping.is_set():
            log.info("daemon.stopping", path=str(self.settings.state_dir), signal=why, outcome="stopping")
            self.stopping.set()

    def _on_signal(self, name: str) -> None:
        """A stop beats an idle stop that is under way: the process exits, it does not go dormant."""
        self.next_mode = None
        self.request_stop(name)

    def _on_hup(self) -> None:
        log.warning(
            "daemon.sighup",
            path=str(self.settings.state_dir),
            outcome="ignored",
            reason="configuration is read at start-up only; restart ingestd to apply changes",
        )

    async def _shutdown(self) -> None:
        started = time.monotonic()
        self.watcher.stop()
        tasks = [*self._tasks, *self._requeues.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            # Give the batch being embedded or stored a moment to be acknowledged.
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await self._quiesce()
        if self.next_mode is not None:
            # Held through exec(): no instant in which a CLI command could open the store.
            hand_over(self.health, self.engine.state)
        await self.engine.close()
        await self.health.stop()
        if self.next_mode is None:
            withdraw(self.settings.state_dir)
        log.info(
            "daemon.stopped",
            path=str(self.settings.state_dir),
            seconds=round(time.monotonic() - started, 2),
            outcome=self.next_mode or "stopped",
        )

    async def _quiesce(self) -> None:
        pipeline = self.engine.pipeline
        while pipeline.upserts.qsize() > 0:  # noqa: ASYNC110 - a queue has no "empty" event to await
            await asyncio.sleep(0.05)

    # --- work ----------------------------------------------------------------------------
    async def _reader(self, _: int) -> None:
        while True:
            await self.intake.wait()
            path, queued_at = await self.queue.take()
            self._busy_since = self._busy_since or time.monotonic()
            self._taken[path] = queued_at
            try:
                result = await self.engine.submit(path)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the daemon never dies on input
                log.exception(
                    "file.error", path=str(path), error=f"{type(exc).__name__}: {exc}", outcome="failed"
                )
                continue
            finally:
                self._taken.pop(path, None)
            if isinstance(result, FileJob):
                result.queued_at = min(result.queued_at, queued_at)
            if isinstance(result, Outcome) and result.status == "busy":
                job = self.engine.pipeline.jobs.get(result.path)
                if job is not None and result.path not in self._requeues:
                    # Changed again while in flight: look once more when this pass settles.
                    self._requeues[result.path] = asyncio.create_task(self._requeue_after(job, path))
            elif isinstance(result, FileJob):
                self._done_files += 1

    async def _requeue_after(self, job: FileJob, path: Path) -> None:
        await job.done.wait()
        self._requeues.pop(job.key, None)
        self.queue.put(path)

    # --- housekeeping --------------------------------------------------------------------
    async def _progress_loop(self) -> None:
        """A progress line every PROGRESS_LOG_SECONDS while busy; idle, only a heartbeat.

        Busy means files queued or in flight, or files or chunks finished since the last tick,
        so the last burst of work is always reported once after it ends.
        """
        interval = self.settings.progress_log_seconds
        heartbeat = self.settings.heartbeat_seconds
        tick = interval if interval > 0 else min(heartbeat, 60.0) if heartbeat > 0 else 60.0
        pipeline = self.engine.pipeline
        last_chunks, last_files = pipeline.totals["chunks_embedded"], self._files_finished()
        last_tick = last_beat = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            chunks, files = pipeline.totals["chunks_embedded"], self._files_finished()
            busy = bool(len(self.queue) or pipeline.jobs or chunks != last_chunks or files != last_files)
            due_beat = not busy and heartbeat > 0 and now - last_beat >= heartbeat
            if (busy and interval > 0) or due_beat:
                log.info(
                    "progress" if busy else "heartbeat",
                    path=str(self.settings.state_dir),
                    outcome="busy" if busy else "idle",
                    files_done=pipeline.totals["done"],
                    files_finished=files,
                    chunks_done=chunks,
                    files_per_s=round((files - last_files) / max(now - last_tick, 1e-3), 2),
                    chunks_per_s=round((chunks - last_chunks) / max(now - last_tick, 1e-3), 1),
                    queue=len(self.queue),
                    in_flight=len(pipeline.jobs),
                    chunk_queue=pipeline.queue.qsize(),
                    backlog_s=round(self.backlog_age(), 1),
                    rss_mb=rss_mb(),
                )
                last_beat = now
            last_chunks, last_files, last_tick = chunks, files, now

    def backlog_age(self) -> float:
        """Seconds since the oldest file not yet finished was queued.

        The work queue alone forgets a file once a reader takes it, so a file that is being read,
        or whose chunks wait for the embedder or the store, counted as no backlog at all.
        """
        since = [job.queued_at for job in self.engine.pipeline.jobs.values()]
        since += self._taken.values()
        oldest = time.monotonic() - min(since) if since else 0.0
        return max(self.queue.oldest_age(), oldest)

    def _files_finished(self) -> int:
        """Files that reached an outcome (done, skipped, failed, quarantined, …)."""
        totals = self.engine.pipeline.totals
        return sum(count for status, count in totals.items() if status != "chunks_embedded")

    async def _memory_loop(self) -> None:
        while True:
            await asyncio.sleep(MEMORY_CHECK_SECONDS)
            await self._check_memory()

    async def _check_memory(self) -> None:
        """Above OPERATIONAL_MEMORY_MB: pause intake, trim; recycle the model only if that fails."""
        limit = self.settings.operational_memory_mb
        if rss_mb() <= limit:
            return
        self.intake.clear()
        before = rss_mb()
        await asyncio.to_thread(release_memory)
        after = rss_mb()
        action = "trimmed"
        if after > limit and self.engine.provider.loaded:
            # The unload waits for the calls in progress, so no call is cut short.
            await self.engine.provider.unload()
            after, action = rss_mb(), "model recycled"
        self.intake.set()
        log.warning(
            "memory.high",
            path=str(self.settings.state_dir),
            rss_before_mb=before,
            rss_mb=after,
            limit_mb=limit,
            outcome=action,
        )

    async def _idle_loop(self) -> None:
        idle_limit = self.settings.embed_idle_unload_seconds
        if idle_limit <= 0:
            return
        provider, pipeline = self.engine.provider, self.engine.pipeline
        while True:
            await asyncio.sleep(min(idle_limit, 30.0))
            idle = time.monotonic() - max(pipeline.last_work, self._last_call)
            if idle < idle_limit or pipeline.jobs or len(self.queue):
                continue
            if provider.loaded:
                before = rss_mb()
                await provider.unload()
                self.engine.metrics.model_loaded.set(0)
                log.info(
                    "model.unloaded",
                    path=str(self.settings.state_dir),
                    idle_s=round(idle),
                    rss_before_mb=before,
                    rss_mb=rss_mb(),
                    outcome="unloaded",
                )
            # Also after a wake that loaded nothing (`ingestd status`): the libraries stay loaded.
            if self.settings.idle_dormant and self._nothing_left_to_retry():
                self.next_mode = "dormant"
                self.request_stop("idle")
                return

    def _nothing_left_to_retry(self) -> bool:
        """Dormant, no retry timer runs: a file waiting on Qdrant or Voyage must keep us awake."""
        pipeline = self.engine.pipeline
        return (
            pipeline.store_available
            and pipeline.halted is None
            and not self._requeues
            and "pending" not in self.engine.state.summary()
        )

    # --- HTTP ----------------------------------------------------------------------------
    async def health_report(self) -> dict[str, Any]:
        """ok, or degraded (503) while starting, when Qdrant does not answer, or when embedding halted."""
        pipeline = self.engine.pipeline
        store_ok = False
        if pipeline.store_available and self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_PING_TIMEOUT):
                    store_ok = await self.engine.store.ping()
        quarantined = self.engine.state.summary().get("quarantined", 0)
        degraded = not store_ok or pipeline.halted is not None or not self.ready.is_set()
        return {
            "status": "degraded" if degraded else "ok",
            "ready": self.ready.is_set(),
            "dormant": False,
            "store_reachable": store_ok,
            "model_loaded": self.engine.provider.loaded,
            "embedding_halted": _masked(pipeline.halted),
            "queue_depth": len(self.queue) + pipeline.queue.qsize(),
            "files_queued": len(self.queue),
            "chunks_queued": pipeline.queue.qsize(),
            "files_in_flight": len(pipeline.jobs),
            "oldest_pending_age_s": round(self.backlog_age(), 1),
            "files_quarantined": quarantined,
            "last_error": _masked(pipeline.last_error),
            "watchers": {str(w.root): w.report() for w in self.watcher.watches},
            "watch_probe": self.watcher.probe_result.report(),
            "rss_mb": rss_mb(),
        }

    def _once_ready(self, handler: Handler) -> Handler:
        """Actions wait for start-up to finish: a woken daemon is asked at once, before its store
        is open. Not while Qdrant is known to be down: then the action's own 503 says so."""

        async def after_start(params: dict[str, Any]) -> dict[str, Any]:
            self._last_call = time.monotonic()  # someone is searching: not idle
            if not self.ready.is_set() and self.engine.pipeline.store_available:
                await set_within(self.ready, ACTION_READY_WAIT)
            return await handler(params)

        return after_start

    def _actions(self) -> dict[str, Handler]:
        engine = self.engine

        async def search(params: dict[str, Any]) -> dict[str, Any]:
            hits = await engine.search(
                str(params["query"]), params.get("kind"), params.get("project"), int(params.get("limit", 5))
            )
            return {"hits": hits}

        async def status(_: dict[str, Any]) -> dict[str, Any]:
            return await engine.status()

        async def retry(params: dict[str, Any]) -> dict[str, Any]:
            chosen = engine.retry(params.get("paths") or None)
            for path in chosen:
                self.queue.put(Path(path))
            return {"retried": chosen}

        async def forget(params: dict[str, Any]) -> dict[str, Any]:
            outcome = await engine.forget(str(params["path"]))
            return {"forgotten": outcome.path}

        actions = {"search": search, "status": status, "retry": retry, "forget": forget}
        return {name: self._once_ready(handler) for name, handler in actions.items()}


def _masked(text: str | None) -> str | None:
    """Errors quote paths, URLs and server answers, any of which may hold a configured key."""
    return None if text is None else mask(text)
