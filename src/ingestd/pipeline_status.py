"""One snapshot of the pipeline, for everything that reports on it (daemon, /health, /metrics).

Readers of the pipeline's progress get this frozen value instead of reaching into its queues and
counters, so the pipeline can change inside without breaking them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    files_in_flight: int
    chunks_queued: int
    store_available: bool
    embedding_halted: str | None  # why all embedding stopped (credentials refused), else None
    last_error: str | None
    last_work: float  # monotonic time the model last embedded something
    oldest_queued_at: float | None  # monotonic queue time of the oldest file in flight
    files_done: int
    files_finished: int  # files that reached any outcome (done, skipped, failed, quarantined, ...)
    chunks_embedded: int
