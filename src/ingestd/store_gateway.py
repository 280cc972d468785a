"""Store calls that wait out an outage: Qdrant being down is never a file's fault.

Every stage that touches the store goes through one gateway, which retries forever with the one
backoff formula (`ingestd.retry.Backoff`), logs each try per file, and knows whether the store
is reachable, for /health and for the daemon's decision to go dormant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from ingestd.errors import ModelMismatch
from ingestd.logs import concerning, get_logger
from ingestd.metrics import Metrics
from ingestd.retry import Backoff
from ingestd.store import VectorStore

log = get_logger("ingestd.store")
T = TypeVar("T")
NAMED_FILES = 10  # a retry names at most this many of the batch's files


class StoreGateway:
    """Store calls that wait out an outage: each try is logged per file, with its backoff."""

    def __init__(self, store: VectorStore, backoff: Backoff, timeout: float, metrics: Metrics) -> None:
        self.store = store
        self.backoff = backoff
        self.timeout = timeout
        self.metrics = metrics
        self.available = True
        self.last_error: str | None = None

    async def call(self, operation: str, files: list[str], call: Callable[[], Awaitable[T]]) -> T:
        attempt, named = 0, files[:NAMED_FILES] or ["-"]
        while True:
            try:
                with concerning(",".join(named)):  # qdrant-client's own warnings name them too
                    async with asyncio.timeout(self.timeout):
                        result = await call()
            except (asyncio.CancelledError, ModelMismatch):
                raise  # a collection of another model is a configuration error, not an outage
            except Exception as exc:
                attempt += 1
                self._went_down(operation, exc)
                delay = self.backoff.delay(attempt)
                for path in named:
                    log.warning(
                        "store.retry",
                        path=path,
                        operation=operation,
                        attempt=attempt,
                        delay_s=round(delay, 2),
                        error=self.last_error,
                        outcome="retrying",
                    )
                await asyncio.sleep(delay)
                continue
            if not self.available:
                log.info(
                    "store.recovered", path=named[0], operation=operation, attempts=attempt, outcome="ok"
                )
            self.available = True
            self.metrics.store_up.set(1)
            return result

    def _went_down(self, operation: str, exc: Exception) -> None:
        self.available = False
        self.metrics.store_up.set(0)
        self.last_error = f"store {operation}: {type(exc).__name__}: {str(exc)[:160]}"
        self.metrics.retries.labels(operation).inc()

    async def delete_file(
        self, kind: str, key: str, generation: int | None = None, ordinal_from: int | None = None
    ) -> None:
        await self.call("delete", [key], partial(self.store.delete_file, kind, key, generation, ordinal_from))

    async def stored_digests(self, kind: str, key: str, ids: list[str]) -> dict[str, str]:
        return await self.call("verify", [key], partial(self.store.stored_digests, kind, ids))

    async def file_total(self, kind: str, key: str, field: str) -> int:
        return await self.call("count", [key], partial(self.store.file_total, kind, key, field))
