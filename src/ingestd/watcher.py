"""Discovery: a full scan first, then file events per root, then periodic reconcile scans.

Events are fast but not trusted: Docker Desktop bind mounts and some network filesystems drop
them. Each root therefore has its own watcher that can run on inotify or by polling, a reconcile
scan catches whatever slipped through, and a probe checks that events really arrive: a root that
changes on disk without any event is switched to polling (and says so in the log and /health).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchfiles import Change, awatch

from ingestd.discovery import scan
from ingestd.logs import get_logger
from ingestd.settings import Settings
from ingestd.state import StateStore
from ingestd.workqueue import WorkQueue

log = get_logger("ingestd.watcher")


@dataclass
class RootWatch:
    kind: str
    root: Path
    polling: bool
    last_event: float = 0.0
    events: int = 0
    missed: int = 0  # changes found by reconcile scans that no event announced
    task: asyncio.Task[None] | None = None
    restart: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def mode(self) -> str:
        return "polling" if self.polling else "events"


class Watcher:
    def __init__(
        self,
        settings: Settings,
        queue: WorkQueue,
        state: StateStore,
        on_mode: Callable[[RootWatch], None] | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.state = state
        self.roots = settings.roots()
        self.exclude = settings.state_dir.resolve()
        self.watches = [RootWatch(kind, root, settings.watch_force_polling) for kind, root in self.roots]
        self.on_mode = on_mode
        self._stop = asyncio.Event()

    # --- scans ---------------------------------------------------------------------------
    async def reconcile(self) -> int:
        """Queue every path whose stat differs from its record, and every record now missing."""
        changed = await asyncio.to_thread(self._changed_paths)
        for path in changed:
            self.queue.put(path)
        return len(changed)

    def _changed_paths(self) -> list[Path]:
        changed: list[Path] = []
        seen: set[str] = set()
        for path in scan(self.roots, exclude=self.exclude):
            key = str(path)
            seen.add(key)
            record = self.state.get(key)
            try:
                info = os.stat(path)
            except OSError:
                info = None
            if record is None or info is None or record.status == "pending" or record.signature() != (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino):
                changed.append(path)
        for key, record in list(self.state.files.items()):
            if key not in seen and record.status not in ("deleted", "forgotten"):
                changed.append(Path(key))
        return changed

    # --- events --------------------------------------------------------------------------
    def start(self) -> list[asyncio.Task[None]]:
        tasks = []
        for watch in self.watches:
            watch.task = asyncio.create_task(self._watch_root(watch), name=f"watch:{watch.root}")
            tasks.append(watch.task)
            if self.on_mode:
                self.on_mode(watch)
        return tasks

    def stop(self) -> None:
        self._stop.set()
        for watch in self.watches:
            watch.restart.set()

    async def _watch_root(self, watch: RootWatch) -> None:
        while not self._stop.is_set():
            if not watch.root.is_dir():
                log.warning("watch.root_missing", path=str(watch.root), outcome="waiting")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), timeout=max(5.0, self.settings.reconcile_seconds / 10)
                    )
                continue
            watch.restart.clear()
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
                    watch.last_event = time.monotonic()
                    watch.events += len(changes)
                    for change, raw in changes:
                        path = Path(raw)
                        if self.exclude == path or self.exclude in path.parents:
                            continue
                        if change == Change.deleted or path.exists() or path.is_symlink():
                            self.queue.put(path)
            except (OSError, RuntimeError) as exc:
                log.warning("watch.error", path=str(watch.root), error=str(exc), outcome="restarting")
                await asyncio.sleep(1.0)

    def switch_to_polling(self, watch: RootWatch, reason: str) -> None:
        if watch.polling:
            return
        watch.polling = True
        log.warning("watch.polling", path=str(watch.root), reason=reason, outcome="switched to polling")
        if self.on_mode:
            self.on_mode(watch)
        watch.restart.set()
