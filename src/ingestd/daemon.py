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
from ingestd.pipeline_status import PipelineStatus
from ingestd.progress import ProgressLog
from ingestd.settings import Settings
from ingestd.supervision import Supervisor, cancel_and_wait, set_within
from ingestd.system import STOP_SIGNALS, release_memory, rss_mb
from ingestd.watcher import Watcher
from ingestd.workqueue import WorkQueue

log = get_logger("ingestd.daemon")
MEMORY_CHECK_SECONDS = 5.0
IDLE_CHECK_LIMIT = 30.0  # seconds: how often, at most, the idle unload looks
SHUTDOWN_GRACE = 7.0  # seconds for the work in flight before it is abandoned (10 s budget)
HEALTH_PING_TIMEOUT = 3.0  # seconds; the container's health check gives up after 5
ACTION_READY_WAIT = 20.0  # seconds an API call waits for start-up before it is tried anyway


class Daemon:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.queue = WorkQueue()
        self.watcher = Watcher(
            settings.watch,
            settings.ops.state_dir,
            self.queue,
            self.engine.ledger,
            metrics=self.engine.metrics,
        )
        self.engine.metrics.bind(
            files_queued=lambda: len(self.queue),
            backlog_age=self.backlog_age,
            model_loaded=lambda: self.engine.provider.loaded,
            store_up=lambda: self.engine.pipeline.status().store_available,
        )
        self.health = HealthServer(
            settings.ops.health_host,
            settings.ops.health_port,
            self.health_report,
            self.engine.metrics.exposition,
            self._actions(),
        )
        self.stopping = asyncio.Event()
        self.intake = asyncio.Event()  # cleared while memory is being recovered
        self.intake.set()
        self.ready = asyncio.Event()
        self.supervisor = Supervisor()  # owns every long-lived task; the pipeline's are watched
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
        self.engine.ledger.lock("daemon")
        await self.health.start()
        announce(self.settings.ops, self.health.bound_port)
        log.info(
            "daemon.starting",
            path=str(self.settings.ops.state_dir),
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
            for stage in self.engine.pipeline.stages:
                self.supervisor.watch(stage)
            # Watch first, then scan: a file created in between is seen by one or the other.
            self.watcher.start(self.supervisor)
            await asyncio.sleep(0.2)
            await self.watcher.reconcile()
            self._start_housekeeping()
            self.ready.set()
            log.info(
                "daemon.ready", path=str(self.settings.ops.state_dir), queued=len(self.queue), outcome="ready"
            )
            return await self._supervise()
        finally:
            await self._shutdown()

    def _start_housekeeping(self) -> None:
        """Readers, and the timers: reconcile scans, progress lines, idle unload, memory guard."""
        for n in range(self.settings.ops.file_concurrency):
            self.supervisor.add(f"reader-{n}", self._reader(n))
        self.watcher.schedule_reconciles(self.supervisor)
        progress = ProgressLog(
            self.settings.ops.progress_log_seconds,
            self.settings.ops.heartbeat_seconds,
            str(self.settings.ops.state_dir),
            self.engine.pipeline.status,
            lambda: len(self.queue),
            self.backlog_age,
        )
        self.supervisor.timer("progress", progress.tick_seconds, progress.tick)
        idle_limit = self.settings.embed.embed_idle_unload_seconds
        self.supervisor.timer("idle-unload", min(idle_limit, IDLE_CHECK_LIMIT), self._unload_if_idle)
        self.supervisor.timer("memory", MEMORY_CHECK_SECONDS, self._check_memory)

    async def _supervise(self) -> int:
        """Until a stop is asked for; exit code 1 when a long-lived task dies of an error.

        A dead stage or reader would leave the daemon up but stalled for good. Exiting lets the
        container restart it, and the state file resumes every file where it was.
        """
        crashed = await self.supervisor.wait_first_crash(self.stopping)
        if crashed is None:
            return 0
        error = crashed.exception()
        log.error(
            "daemon.task_crashed",
            path=str(self.settings.ops.state_dir),
            task=crashed.get_name(),
            error=f"{type(error).__name__}: {error}",
            outcome="exiting",
            exc_info=error,
        )
        self.request_stop(f"{crashed.get_name()} crashed")
        return 1

    def request_stop(self, why: str = "request") -> None:
        if not self.stopping.is_set():
            log.info("daemon.stopping", path=str(self.settings.ops.state_dir), signal=why, outcome="stopping")
            self.stopping.set()

    def _on_signal(self, name: str) -> None:
        """A stop beats an idle stop that is under way: the process exits, it does not go dormant."""
        self.next_mode = None
        self.request_stop(name)

    def _on_hup(self) -> None:
        log.warning(
            "daemon.sighup",
            path=str(self.settings.ops.state_dir),
            outcome="ignored",
            reason="configuration is read at start-up only; restart ingestd to apply changes",
        )

    async def _shutdown(self) -> None:
        started = time.monotonic()
        self.watcher.stop()
        await self.supervisor.stop()  # readers, watches, timers
        requeues = list(self._requeues.values())
        for task in requeues:
            task.cancel()
        await asyncio.gather(*requeues, return_exceptions=True)
        # Readers are stopped; what they read is still embedded, stored and committed, within
        # the grace, so the next start re-embeds none of it.
        await self.engine.pipeline.stop(SHUTDOWN_GRACE)
        if self.next_mode is not None:
            # Held through exec(): no instant in which a CLI command could open the store.
            hand_over(self.health, self.engine.ledger)
        await self.engine.close()
        await self.health.stop()
        if self.next_mode is None:
            withdraw(self.settings.ops.state_dir)
        log.info(
            "daemon.stopped",
            path=str(self.settings.ops.state_dir),
            seconds=round(time.monotonic() - started, 2),
            outcome=self.next_mode or "stopped",
        )

    # --- work ----------------------------------------------------------------------------
    async def _reader(self, _: int) -> None:
        while True:
            await self.intake.wait()
            path, queued_at = await self.queue.take()
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
                job = self.engine.pipeline.job(result.path)
                if job is not None and result.path not in self._requeues:
                    # Changed again while in flight: look once more when this pass settles.
                    self._requeues[result.path] = asyncio.create_task(self._requeue_after(job, path))

    async def _requeue_after(self, job: FileJob, path: Path) -> None:
        await job.done.wait()
        self._requeues.pop(job.key, None)
        self.queue.put(path)

    # --- housekeeping --------------------------------------------------------------------
    def backlog_age(self) -> float:
        """Seconds since the oldest file not yet finished was queued.

        The work queue alone forgets a file once a reader takes it, so a file that is being read,
        or whose chunks wait for the embedder or the store, counted as no backlog at all.
        """
        in_flight = self.engine.pipeline.status().oldest_queued_at
        since = [*self._taken.values(), *([] if in_flight is None else [in_flight])]
        oldest = time.monotonic() - min(since) if since else 0.0
        return max(self.queue.oldest_age(), oldest)

    async def _check_memory(self) -> None:
        """Above OPERATIONAL_MEMORY_MB: pause intake, trim; recycle the model only if that fails."""
        limit = self.settings.ops.operational_memory_mb
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
            path=str(self.settings.ops.state_dir),
            rss_before_mb=before,
            rss_mb=after,
            limit_mb=limit,
            outcome=action,
        )

    async def _unload_if_idle(self) -> None:
        """Unload the model after EMBED_IDLE_UNLOAD_SECONDS without work; then go dormant."""
        status = self.engine.pipeline.status()
        idle = time.monotonic() - max(status.last_work, self._last_call)
        busy = status.files_in_flight or len(self.queue)
        if self.stopping.is_set() or idle < self.settings.embed.embed_idle_unload_seconds or busy:
            return
        provider = self.engine.provider
        if provider.loaded:
            before = rss_mb()
            await provider.unload()
            self.engine.metrics.model_loaded.set(0)
            log.info(
                "model.unloaded",
                path=str(self.settings.ops.state_dir),
                idle_s=round(idle),
                rss_before_mb=before,
                rss_mb=rss_mb(),
                outcome="unloaded",
            )
        # Also after a wake that loaded nothing (`ingestd status`): the libraries stay loaded.
        if self.settings.ops.idle_dormant and self._nothing_left_to_retry(status):
            self.next_mode = "dormant"
            self.request_stop("idle")

    def _nothing_left_to_retry(self, status: PipelineStatus) -> bool:
        """Dormant, no retry timer runs: a file waiting on Qdrant or Voyage must keep us awake."""
        return (
            status.store_available
            and status.embedding_halted is None
            and not self._requeues
            and "pending" not in self.engine.ledger.summary()
        )

    # --- HTTP ----------------------------------------------------------------------------
    async def health_report(self) -> dict[str, Any]:
        """ok, or degraded (503) while starting, when Qdrant does not answer, or when embedding halted."""
        status = self.engine.pipeline.status()
        store_ok = False
        if status.store_available and self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_PING_TIMEOUT):
                    store_ok = await self.engine.store.ping()
        quarantined = self.engine.ledger.summary().get("quarantined", 0)
        degraded = not store_ok or status.embedding_halted is not None or not self.ready.is_set()
        return {
            "status": "degraded" if degraded else "ok",
            "ready": self.ready.is_set(),
            "dormant": False,
            "store_reachable": store_ok,
            "model_loaded": self.engine.provider.loaded,
            "embedding_halted": _masked(status.embedding_halted),
            "queue_depth": len(self.queue) + status.chunks_queued,
            "files_queued": len(self.queue),
            "chunks_queued": status.chunks_queued,
            "files_in_flight": status.files_in_flight,
            "oldest_pending_age_s": round(self.backlog_age(), 1),
            "files_quarantined": quarantined,
            "last_error": _masked(status.last_error),
            "watchers": {str(w.root): w.report() for w in self.watcher.watches},
            "watch_probe": self.watcher.probe_result.report(),
            "rss_mb": rss_mb(),
        }

    def _once_ready(self, handler: Handler) -> Handler:
        """Actions wait for start-up to finish: a woken daemon is asked at once, before its store
        is open. Not while Qdrant is known to be down: then the action's own 503 says so."""

        async def after_start(params: dict[str, Any]) -> dict[str, Any]:
            self._last_call = time.monotonic()  # someone is searching: not idle
            if not self.ready.is_set() and self.engine.pipeline.status().store_available:
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
