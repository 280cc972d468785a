"""Dormancy: after an idle unload the daemon re-executes itself as a small process that watches.

Unloading the model frees its weights, but ONNX Runtime, FastEmbed and qdrant-client stay
imported (Python cannot unload a module) and embedded Qdrant keeps every point in memory: about
190 MB of an idle daemon, measured. exec() sheds all of it and keeps the PID, the port and the
state lock (see Ledger.hand_off_lock). The dormant image imports none of those libraries.
It watches and reconciles the same roots with the same Watcher, answers /health and /metrics,
and at the first change it finds, or the first API call, executes the full daemon again, whose
start-up scan then ingests what changed. It never writes the ledger.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from ingestd.health import Handler, HealthServer, Unavailable, announce, hand_over, withdraw
from ingestd.ledger import Ledger
from ingestd.logs import get_logger
from ingestd.metrics import Metrics
from ingestd.settings import Settings
from ingestd.supervision import Supervisor
from ingestd.system import STOP_SIGNALS, rss_mb
from ingestd.watcher import Watcher
from ingestd.workqueue import WorkQueue

log = get_logger("ingestd.dormant")
WAKE_RETRY_AFTER = 3.0  # seconds until the woken daemon answers: imports, store, first model load
ACTIONS = ("search", "status", "retry", "forget")


class Dormant:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ledger = Ledger(settings.ops.state_dir)
        self.queue = WorkQueue()
        self.metrics = Metrics()
        self.metrics.bind(  # no store_up: whether Qdrant answers is not known here
            files_queued=lambda: len(self.queue),
            backlog_age=self.queue.oldest_age,
            model_loaded=lambda: False,
        )
        self.watcher = Watcher(
            settings.watch, settings.ops.state_dir, self.queue, self.ledger, metrics=self.metrics
        )
        self.health = HealthServer(
            settings.ops.health_host,
            settings.ops.health_port,
            self.health_report,
            self.metrics.exposition,
            {name: self._wake_for(name) for name in ACTIONS},
        )
        self.next_mode: str | None = None  # "daemon" once woken
        self._finished = asyncio.Event()
        self.supervisor = Supervisor()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        self.ledger.lock("daemon")
        report = self.ledger.open(repair=False)
        if report.source != "ledger" or report.problem:
            self.ledger.close()
            self.wake(str(self.ledger.path), "the ledger needs recovery")  # the full daemon does it
            hand_over(self.health, self.ledger)
            return 0
        await self.health.start()
        announce(self.settings.ops, self.health.bound_port)
        self.watcher.start(self.supervisor)
        log.info(
            "daemon.dormant",
            path=str(self.settings.ops.state_dir),
            files=len(self.ledger),
            rss_mb=rss_mb(),
            outcome="dormant",
        )
        try:
            await asyncio.sleep(0.2)
            await self.watcher.reconcile()  # whatever changed while the image was replaced
            self.supervisor.add("wake-on-work", self._wake_on_work())
            self.watcher.schedule_reconciles(self.supervisor)
            await self._until_finished()
        finally:
            self.watcher.stop()
            await self.supervisor.stop()
            await self.health.stop()
            self.ledger.close()
            if self.next_mode is not None:
                hand_over(self.health, self.ledger)
            else:
                withdraw(self.settings.ops.state_dir)
                self.ledger.unlock()
                log.info("daemon.stopped", path=str(self.settings.ops.state_dir), outcome="stopped")
        return 0

    async def _until_finished(self) -> None:
        """Until a signal or a wake. A task that dies wakes the full daemon, which supervises."""
        crashed = await self.supervisor.wait_first_crash(self._finished)
        if crashed is not None:
            self.wake(str(self.settings.ops.state_dir), f"{crashed.get_name()}: {crashed.exception()!r}")

    def stop(self) -> None:
        """A stop beats a wake that is under way: the process exits instead of re-executing."""
        self.next_mode = None
        self._finished.set()

    def wake(self, path: str, reason: str) -> None:
        if self.next_mode is None:
            log.info("daemon.waking", path=path, reason=reason, outcome="waking")
            self.next_mode = "daemon"
            self._finished.set()

    async def _wake_on_work(self) -> None:
        path, _ = await self.queue.take()
        self.wake(str(path), "changed")

    def _wake_for(self, action: str) -> Handler:
        async def handler(_: dict[str, Any]) -> dict[str, Any]:
            self.wake(f"/api/{action}", "API call")
            raise Unavailable("ingestd is waking from dormancy; try again shortly", WAKE_RETRY_AFTER)

        return handler

    async def health_report(self) -> dict[str, Any]:
        """ok: asleep by design. Qdrant is not contacted (its libraries are not loaded)."""
        return {
            "status": "ok",
            "ready": True,
            "dormant": True,
            "store_reachable": None,
            "model_loaded": False,
            "embedding_halted": None,
            "queue_depth": len(self.queue),
            "files_queued": len(self.queue),
            "chunks_queued": 0,
            "files_in_flight": 0,
            "oldest_pending_age_s": round(self.queue.oldest_age(), 1),
            "files_quarantined": self.ledger.summary().get("quarantined", 0),
            "last_error": None,
            "watchers": {str(w.root): w.report() for w in self.watcher.watches},
            "watch_probe": self.watcher.probe_result.report(),
            "rss_mb": rss_mb(),
        }
