"""The daemon's progress lines: one every PROGRESS_LOG_SECONDS while busy; idle, only a heartbeat.

Busy means files queued or in flight, or files or chunks finished since the last tick, so the
last burst of work is always reported once after it ends. The report reads one PipelineStatus
snapshot per tick, never the pipeline's insides.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ingestd.logs import get_logger
from ingestd.pipeline_status import PipelineStatus
from ingestd.system import rss_mb

log = get_logger("ingestd.daemon")
IDLE_TICK_LIMIT = 60.0  # seconds: with progress lines off, how often a heartbeat is due-checked


class ProgressLog:
    def __init__(
        self,
        interval: float,
        heartbeat: float,
        path: str,
        status: Callable[[], PipelineStatus],
        files_queued: Callable[[], int],
        backlog_age: Callable[[], float],
    ) -> None:
        self.interval, self.heartbeat, self.path = interval, heartbeat, path
        self.status, self.files_queued, self.backlog_age = status, files_queued, backlog_age
        # The timer's interval; 0 (no timer) when both progress lines and heartbeats are off.
        self.tick_seconds = (
            interval if interval > 0 else min(heartbeat, IDLE_TICK_LIMIT) if heartbeat > 0 else 0
        )
        first = status()
        self._chunks, self._files = first.chunks_embedded, first.files_finished
        self._tick = self._beat = time.monotonic()

    async def tick(self) -> None:
        now = time.monotonic()
        status, queued = self.status(), self.files_queued()
        chunks, files = status.chunks_embedded, status.files_finished
        busy = bool(queued or status.files_in_flight or chunks != self._chunks or files != self._files)
        due_beat = not busy and self.heartbeat > 0 and now - self._beat >= self.heartbeat
        if (busy and self.interval > 0) or due_beat:
            elapsed = max(now - self._tick, 1e-3)
            log.info(
                "progress" if busy else "heartbeat",
                path=self.path,
                outcome="busy" if busy else "idle",
                files_done=status.files_done,
                files_finished=files,
                chunks_done=chunks,
                files_per_s=round((files - self._files) / elapsed, 2),
                chunks_per_s=round((chunks - self._chunks) / elapsed, 1),
                queue=queued,
                in_flight=status.files_in_flight,
                chunk_queue=status.chunks_queued,
                backlog_s=round(self.backlog_age(), 1),
                rss_mb=rss_mb(),
            )
            self._beat = now
        self._chunks, self._files, self._tick = chunks, files, now
