"""The supervisor: start everything, keep it running, stop cleanly on SIGTERM or SIGINT.

Readers take paths from the work queue, the pipeline embeds and stores, the watcher feeds the
queue, and small loops report progress, unload an idle model and watch memory. On a signal
intake stops at once, the in-flight batch is either acknowledged or dropped unrecorded (it is
replayed idempotently next time), the state is written, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from ingestd.engine import Engine
from ingestd.health import HealthServer
from ingestd.logs import get_logger
from ingestd.pipeline import FileJob, Outcome
from ingestd.settings import Settings
from ingestd.system import release_memory, rss_mb
from ingestd.watcher import RootWatch, Watcher
from ingestd.workqueue import WorkQueue

log = get_logger("ingestd.daemon")
SHUTDOWN_GRACE = 7.0  # seconds for the in-flight batch before it is abandoned (10 s budget)


class Daemon:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.queue = WorkQueue()
        self.watcher = Watcher(settings, self.queue, self.engine.state, on_mode=self._on_mode)
        self.health = HealthServer(
            settings.health_host,
            settings.health_port,
            self.health_report,
            self.engine.metrics.exposition,
            self._actions(),
        )
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._busy_since: float | None = None
        self._done_files = 0
        self._reconciles = 0

    # --- run -----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        await self.health.start()
        self._write_daemon_file()
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
            await self.engine.open("daemon")
            await self.watcher.reconcile()
            self._tasks = [
                *(
                    asyncio.create_task(self._reader(n), name=f"reader-{n}")
                    for n in range(self.settings.file_concurrency)
                ),
                *self.watcher.start(),
                asyncio.create_task(self._reconcile_loop(), name="reconcile"),
                asyncio.create_task(self._progress_loop(), name="progress"),
                asyncio.create_task(self._idle_loop(), name="idle-unload"),
            ]
            self.ready.set()
            log.info(
                "daemon.ready", path=str(self.settings.state_dir), queued=len(self.queue), outcome="ready"
            )
            await self.stopping.wait()
        finally:
            await self._shutdown()
        return 0

    def request_stop(self, why: str = "request") -> None:
        if not self.stopping.is_set():
            log.info("daemon.stopping", path=str(self.settings.state_dir), signal=why, outcome="stopping")
            self.stopping.set()

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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            # Give the batch being embedded or stored a moment to be acknowledged.
            await asyncio.wait_for(self._quiesce(), SHUTDOWN_GRACE)
        await self.engine.close()
        await self.health.stop()
        with contextlib.suppress(OSError):
            (self.settings.state_dir / "daemon.json").unlink()
        log.info(
            "daemon.stopped",
            path=str(self.settings.state_dir),
            seconds=round(time.monotonic() - started, 2),
            outcome="stopped",
        )

    async def _quiesce(self) -> None:
        pipeline = self.engine.pipeline
        while pipeline.upserts.qsize() > 0:
            await asyncio.sleep(0.05)

    def _write_daemon_file(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": self.settings.health_host, "port": self.health.bound_port}
        (self.settings.state_dir / "daemon.json").write_text(json.dumps(info))

    # --- work ----------------------------------------------------------------------------
    async def _reader(self, _: int) -> None:
        while True:
            path = await self.queue.get()
            self._busy_since = self._busy_since or time.monotonic()
            try:
                result = await self.engine.submit(path)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the daemon never dies on input
                log.exception(
                    "file.error", path=str(path), error=f"{type(exc).__name__}: {exc}", outcome="failed"
                )
                continue
            if isinstance(result, Outcome) and result.status == "busy":
                job = self.engine.pipeline.jobs.get(result.path)
                if job is not None:
                    asyncio.create_task(self._requeue_after(job, path))
            elif isinstance(result, FileJob):
                self._done_files += 1

    async def _requeue_after(self, job: FileJob, path: Path) -> None:
        await job.done.wait()
        self.queue.put(path)

    async def _reconcile_loop(self) -> None:
        if self.settings.reconcile_seconds <= 0:
            return
        while True:
            await asyncio.sleep(self.settings.reconcile_seconds)
            before = {watch.root: watch.events for watch in self.watcher.watches}
            changed = await self.watcher.reconcile()
            self._reconciles += 1
            if changed:
                log.info(
                    "reconcile.found", path=str(self.settings.state_dir), changed=changed, outcome="queued"
                )
                self._check_event_delivery(before)

    def _check_event_delivery(self, before: dict[Path, int]) -> None:
        """A root that changed on disk with no event since the last scan gets polled instead."""
        for watch in self.watcher.watches:
            if watch.polling or not watch.root.is_dir():
                continue
            if watch.events == before.get(watch.root, 0) and self._root_changed(watch):
                watch.missed += 1
                self.watcher.switch_to_polling(
                    watch, "changes found by the reconcile scan arrived with no file event"
                )

    def _root_changed(self, watch: RootWatch) -> bool:
        quiet_for = self.settings.reconcile_seconds
        cutoff = time.time() - quiet_for
        for key, record in self.engine.state.files.items():
            if key.startswith(str(watch.root)) and record.status == "pending":
                return record.mtime_ns / 1e9 > cutoff
        return False

    def _on_mode(self, watch: RootWatch) -> None:
        self.engine.metrics.watcher_mode.labels(str(watch.root)).set(1 if watch.polling else 0)

    # --- housekeeping --------------------------------------------------------------------
    async def _progress_loop(self) -> None:
        interval = self.settings.progress_log_seconds
        if interval <= 0:
            return
        pipeline = self.engine.pipeline
        last_chunks = pipeline.totals["chunks_embedded"]
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            chunks = pipeline.totals["chunks_embedded"]
            busy = bool(len(self.queue) or pipeline.jobs or chunks != last_chunks)
            now = time.monotonic()
            if busy or now - last_beat >= self.settings.heartbeat_seconds:
                log.info(
                    "progress" if busy else "heartbeat",
                    path=str(self.settings.state_dir),
                    outcome="busy" if busy else "idle",
                    files_done=pipeline.totals["done"],
                    chunks_done=chunks,
                    chunks_per_s=round((chunks - last_chunks) / interval, 1),
                    queue=len(self.queue),
                    in_flight=len(pipeline.jobs),
                    chunk_queue=pipeline.queue.qsize(),
                    backlog_s=round(self.queue.oldest_age(), 1),
                    rss_mb=rss_mb(),
                )
                last_beat = now
            last_chunks = chunks
            self.engine.metrics.backlog_age.set(self.queue.oldest_age())
            await self._check_memory()

    async def _check_memory(self) -> None:
        limit = self.settings.operational_memory_mb
        if rss_mb() <= limit:
            return
        before = rss_mb()
        await asyncio.to_thread(release_memory)
        after = rss_mb()
        action = "trimmed"
        if after > limit and self.engine.provider.loaded:
            await self.engine.provider.unload()
            after, action = rss_mb(), "model recycled"
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
            idle = time.monotonic() - pipeline.last_work
            if provider.loaded and idle >= idle_limit and not pipeline.jobs and not len(self.queue):
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

    # --- HTTP ----------------------------------------------------------------------------
    async def health_report(self) -> dict[str, Any]:
        pipeline = self.engine.pipeline
        store_ok = pipeline.store_available and await self.engine.store.ping()
        quarantined = sum(1 for r in self.engine.state.files.values() if r.status == "quarantined")
        degraded = not store_ok or pipeline.halted is not None or not self.ready.is_set()
        return {
            "status": "degraded" if degraded else "ok",
            "ready": self.ready.is_set(),
            "store_reachable": store_ok,
            "model_loaded": self.engine.provider.loaded,
            "embedding_halted": pipeline.halted,
            "queue_depth": len(self.queue) + pipeline.queue.qsize(),
            "files_in_flight": len(pipeline.jobs),
            "oldest_pending_age_s": round(self.queue.oldest_age(), 1),
            "files_quarantined": quarantined,
            "last_error": pipeline.last_error,
            "watchers": {
                str(w.root): {"kind": w.kind, "mode": w.mode, "events": w.events}
                for w in self.watcher.watches
            },
            "rss_mb": rss_mb(),
        }

    def _actions(self) -> dict[str, Any]:
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

        return {"search": search, "status": status, "retry": retry, "forget": forget}
