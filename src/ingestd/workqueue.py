"""The queue of paths to look at: deduplicated, oldest first, with the age of its backlog.

A path that is already queued is not queued twice, however many events arrive for it; so even
10,000 files dropped at once cost one entry each, and the chunk queue downstream stays bounded.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path


class WorkQueue:
    def __init__(self) -> None:
        self._items: dict[Path, float] = {}
        self._ready = asyncio.Event()

    def put(self, path: Path) -> None:
        if path not in self._items:
            self._items[path] = time.monotonic()
            self._ready.set()

    async def take(self) -> tuple[Path, float]:
        """The oldest path and when it was queued (monotonic), for the backlog's age."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        path = next(iter(self._items))
        return path, self._items.pop(path)

    def __len__(self) -> int:
        return len(self._items)

    def oldest_age(self) -> float:
        if not self._items:
            return 0.0
        return time.monotonic() - next(iter(self._items.values()))
