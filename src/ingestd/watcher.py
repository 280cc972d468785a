"""Discovery: a full scan first, then file events per root, then periodic reconcile scans.

Events are fast but not trusted: Docker Desktop bind mounts and some network filesystems drop
them. Each root therefore has its own watcher that can run on inotify or by polling, a reconcile
scan catches whatever slipped through, and the watcher checks itself in two ways:

- each reconcile compares what it found with what events announced: a root where a file changed
  after its watcher started, long enough ago for the event to have arrived, with no event for it
  (or a folder above it), is switched to polling;
- a probe (at start and every WATCH_PROBE_SECONDS) writes a file under STATE_DIR/.probe, never in
  a watched folder, and waits for its event: when none comes, the event machinery itself is
  broken, and every root is switched to polling.

Either way the switch is logged (`watch.polling`) and shown in /health and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from ingestd.discovery import root_of, scan, wanted
from ingestd.ledger import Ledger, Status
from ingestd.logs import get_logger
from ingestd.metrics import Metrics
from ingestd.settings import WatchSettings
from ingestd.supervision import Supervisor, cancel_and_wait, set_within
from ingestd.workqueue import WorkQueue

log = get_logger("ingestd.watcher")

START_MARGIN = 1.0  # seconds after a watcher starts before a change must produce an event
CLOCK_SLACK = 1.0  # seconds of filesystem timestamp granularity tolerated between change and event
PROBE_TIMEOUT = 15.0  # seconds the probe waits for its event (generous: a busy 2-core host)
PROBE_DIR = ".probe"


@dataclass
class RootWatch:
    kind: str
    root: Path
    polling: bool
    reason: str | None = None  # why the root is polled
    events: int = 0
    missed: int = 0  # changes found by reconcile scans that no event announced
    started_wall: float | None = None  # wall clock when the current watcher began
    announced: dict[str, float] = field(default_factory=dict)  # path -> wall time of its last event
    restart: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def mode(self) -> str:
        return "polling" if self.polling else "events"

    def report(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mode": self.mode,
            "reason": self.reason,
            "events": self.events,
            "missed": self.missed,
            "watching": self.started_wall is not None,
        }


@dataclass
class ProbeResult:
    ok: bool | None = None  # None: not run (disabled, or every root already polled)
    latency_s: float | None = None
    checked_at: float | None = None
    error: str | None = None

    def report(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "latency_s": self.latency_s,
            "checked_at": self.checked_at,
            "error": self.error,
        }


Fresh = list[tuple[Path, float]]  # changed path, wall time of its last change (max of mtime, ctime)


class Watcher:
    def __init__(
        self,
        watch: WatchSettings,
        state_dir: Path,
        queue: WorkQueue,
        ledger: Ledger,
        metrics: Metrics | None = None,
    ) -> None:
        """`state_dir` holds ingestd's own files: never scanned, and home to the probe."""
        self.settings = watch
        self.queue = queue
        self.ledger = ledger
        self.roots = watch.roots()
        self.exclude = state_dir.resolve()
        self.probe_dir = self.exclude / PROBE_DIR
        self.watches = [
            RootWatch(
                kind,
                root,
                watch.watch_force_polling,
                "WATCH_FORCE_POLLING is set" if watch.watch_force_polling else None,
            )
            for kind, root in self.roots
        ]
        self.metrics = metrics
        self.probe_result = ProbeResult()
        # How old an unannounced change must be before its event counts as lost: generous, so a
        # busy machine's late event is not mistaken for a mount that drops them.
        self.grace = 5.0 + 2 * watch.watch_debounce_ms / 1000
        self._stop = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()

    @property
    def horizon(self) -> float:
        """How far back changes are compared with events (and events are remembered)."""
        return max(2 * self.settings.reconcile_seconds, 600.0)

    # --- scans ---------------------------------------------------------------------------
    async def reconcile(self) -> int:
        """Queue every path whose stat differs from its record, and every record now missing.

        Then check event delivery: changes the scan saw that no event announced.
        """
        changed, fresh = await asyncio.to_thread(self._scan, time.time() - self.horizon)
        for path in changed:
            self.queue.put(path)
        self.check_delivery(fresh)
        return len(changed)

    def schedule_reconciles(self, supervisor: Supervisor) -> None:
        """A reconcile scan every RECONCILE_SECONDS (0: none), which also checks event delivery."""
        supervisor.timer("reconcile", self.settings.reconcile_seconds, self._reconcile_and_report)

    async def _reconcile_and_report(self) -> None:
        changed = await self.reconcile()
        if changed:
            log.info("reconcile.found", path=str(self.exclude), changed=changed, outcome="queued")

    def _scan(self, since: float) -> tuple[list[Path], Fresh]:
        changed: list[Path] = []
        fresh: Fresh = []
        seen: set[str] = set()
        for path in scan(self.roots, exclude=self.exclude):
            key = str(path)
            seen.add(key)
            record = self.ledger.get(key)
            try:
                info = os.stat(path)
            except OSError:
                info = None
            if info is not None:
                when = max(info.st_mtime, info.st_ctime)
                if when > since:
                    fresh.append((path, when))
            owner = root_of(path, self.roots)
            if record is None and info is not None and owner is not None and not wanted(path, owner[0]):
                continue  # a name this root does not ingest: nothing to queue, now or ever
            if (
                record is None
                or info is None
                or record.status == Status.PENDING
                or record.signature() != (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
            ):
                changed.append(path)
        for key, record in self.ledger.records():
            if key not in seen and record.status not in (Status.DELETED, Status.FORGOTTEN):
                changed.append(Path(key))
        return changed, fresh

    def check_delivery(self, fresh: Fresh, now: float | None = None) -> list[RootWatch]:
        """Switch to polling each event-mode root with a change that no event announced."""
        now = time.time() if now is None else now
        switched: list[RootWatch] = []
        for watch in self.watches:
            if watch.polling or watch.started_wall is None:
                continue
            since = max(watch.started_wall + START_MARGIN, now - self.horizon)
            unannounced = [
                path
                for path, when in fresh
                if since < when < now - self.grace
                and (path == watch.root or watch.root in path.parents)
                and not self._announced(watch, path, when)
            ]
            cutoff = now - self.horizon - self.grace
            watch.announced = {p: t for p, t in watch.announced.items() if t >= cutoff}
            if not unannounced:
                continue
            watch.missed += len(unannounced)
            if self.metrics is not None:
                self.metrics.watch_missed.labels(str(watch.root)).inc(len(unannounced))
            log.warning(
                "watch.missed_events",
                path=str(watch.root),
                changes=len(unannounced),
                examples=[str(p) for p in unannounced[:3]],
                outcome="unannounced changes",
            )
            self.switch_to_polling(
                watch, f"{len(unannounced)} change(s) found by a reconcile scan arrived with no file event"
            )
            switched.append(watch)
        return switched

    @staticmethod
    def _announced(watch: RootWatch, path: Path, when: float) -> bool:
        """An event for the path, or for a folder above it (a moved-in tree), after it changed."""
        for candidate in (path, *path.parents):
            seen = watch.announced.get(str(candidate))
            if seen is not None and seen >= when - CLOCK_SLACK:
                return True
            if candidate == watch.root:
                break
        return False

    # --- events --------------------------------------------------------------------------
    def start(self, supervisor: Supervisor) -> None:
        """Watch every root, and probe event delivery at once and every WATCH_PROBE_SECONDS."""
        for watch in self.watches:
            supervisor.add(f"watch:{watch.root}", self._watch_root(watch))
            self._mode_changed(watch)
        supervisor.timer(
            "watch-probe", self.settings.watch_probe_seconds, self._probe_while_events, at_start=True
        )

    def stop(self) -> None:
        self._stop.set()
        for task in self._side_tasks:
            task.cancel()
        for watch in self.watches:
            watch.restart.set()

    async def _watch_root(self, watch: RootWatch) -> None:
        while not self._stop.is_set():
            if not watch.root.is_dir():
                log.warning("watch.root_missing", path=str(watch.root), outcome="waiting")
                await set_within(self._stop, max(5.0, self.settings.reconcile_seconds / 10))
                continue
            watch.restart.clear()
            watch.started_wall = time.time()
            log.info(
                "watch.started", path=str(watch.root), kind=watch.kind, mode=watch.mode, outcome="watching"
            )
            try:
                async for changes in awatch(
                    watch.root,
                    debounce=self.settings.watch_debounce_ms,
                    step=min(50, self.settings.watch_debounce_ms),
                    stop_event=watch.restart,
                    force_polling=watch.polling,
                    poll_delay_ms=self.settings.watch_poll_delay_ms,
                    recursive=True,
                    ignore_permission_denied=True,
                    watch_filter=None,
                ):
                    self._on_changes(watch, changes)
            except (OSError, RuntimeError) as exc:
                watch.started_wall = None
                if watch.polling:
                    log.warning("watch.error", path=str(watch.root), error=str(exc), outcome="restarting")
                else:
                    self.switch_to_polling(watch, f"file events unavailable: {exc}")
                await asyncio.sleep(1.0)
        watch.started_wall = None

    def _on_changes(self, watch: RootWatch, changes: set[tuple[Change, str]]) -> None:
        now = time.time()
        watch.events += len(changes)
        new_dirs: list[Path] = []
        for change, raw in changes:
            watch.announced[raw] = now
            path = Path(raw)
            if self.exclude == path or self.exclude in path.parents:
                continue
            if change == Change.added and path.is_dir() and not path.is_symlink():
                new_dirs.append(path)
            elif change == Change.deleted or path.exists() or path.is_symlink():
                self.queue.put(path)
        if new_dirs:
            # A folder's own watch starts after it appears, so files written into it at once (or a
            # whole tree moved in) raise no events of their own: list them instead.
            task = asyncio.create_task(self._queue_new_dirs(watch, new_dirs), name="watch-new-dirs")
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    async def _queue_new_dirs(self, watch: RootWatch, dirs: list[Path]) -> None:
        def walk() -> list[Path]:
            return [path for d in dirs for path in scan([(watch.kind, d)], exclude=self.exclude)]

        for path in await asyncio.to_thread(walk):
            self.queue.put(path)

    def switch_to_polling(self, watch: RootWatch, reason: str) -> None:
        if watch.polling:
            return
        watch.polling, watch.reason = True, reason
        log.warning("watch.polling", path=str(watch.root), reason=reason, outcome="switched to polling")
        self._mode_changed(watch)
        watch.restart.set()

    def _mode_changed(self, watch: RootWatch) -> None:
        if self.metrics is not None:
            self.metrics.watcher_mode.labels(str(watch.root)).state(watch.mode)

    # --- probe ---------------------------------------------------------------------------
    async def _probe_while_events(self) -> None:
        """Only while some root still relies on events: a polled root needs none."""
        if not self._stop.is_set() and any(not watch.polling for watch in self.watches):
            await self.probe()

    async def probe(self, wait_s: float = PROBE_TIMEOUT) -> ProbeResult:
        """Write a file next to the state and wait for its event; without one, poll every root."""
        started = time.monotonic()
        target = self.probe_dir / f"probe-{os.getpid()}"
        result = ProbeResult(ok=False, checked_at=time.time())
        try:
            await asyncio.to_thread(self.probe_dir.mkdir, parents=True, exist_ok=True)
            seen = await self._await_probe_event(target, wait_s)
            result.ok = seen
            result.latency_s = round(time.monotonic() - started, 3) if seen else None
            if not seen:
                result.error = f"no event within {wait_s:.0f}s"
        except (OSError, RuntimeError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                target.unlink()
        self.probe_result = result
        if self.metrics is not None:
            self.metrics.watch_probe_ok.set(1 if result.ok else 0)
        if result.ok:
            log.debug(
                "watch.probe", path=str(self.probe_dir), latency_s=result.latency_s, outcome="delivered"
            )
            return result
        log.warning("watch.probe", path=str(self.probe_dir), error=result.error, outcome="no event")
        for watch in self.watches:
            self.switch_to_polling(watch, f"the event probe under {self.probe_dir} failed: {result.error}")
        return result

    async def _await_probe_event(self, target: Path, wait_s: float) -> bool:
        stop = asyncio.Event()
        seen = asyncio.Event()

        async def listen() -> None:
            async for changes in awatch(
                self.probe_dir, debounce=50, step=25, stop_event=stop, watch_filter=None, force_polling=False
            ):
                if any(Path(raw).name == target.name for _, raw in changes):
                    seen.set()
                    return

        listener = asyncio.create_task(listen(), name="watch-probe-listener")
        try:
            deadline = time.monotonic() + wait_s
            attempt = 0
            # The watcher needs a moment to start; write again until the event comes (or time is up).
            while not seen.is_set() and not listener.done() and time.monotonic() < deadline:
                attempt += 1
                await asyncio.to_thread(target.write_text, f"{os.getpid()} {attempt} {time.time()}\n")
                await set_within(seen, min(1.0, max(0.0, deadline - time.monotonic())))
            if listener.done() and not listener.cancelled() and listener.exception() is not None:
                raise RuntimeError(str(listener.exception()))
            return seen.is_set()
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await cancel_and_wait(listener)
