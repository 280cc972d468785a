"""The parts wired together once, for the daemon and for one-shot CLI commands alike.

Both need the same provider, store, state and pipeline, and the same answers to `search`,
`status`, `retry` and `forget`; the daemon serves those answers over HTTP, the CLI calls them
directly when no daemon holds the state directory.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

from ingestd.discovery import Refusal, Target, classify
from ingestd.embed_cache import EmbeddingCache
from ingestd.embedding import EmbeddingProvider, build_provider
from ingestd.logs import get_logger, register_secret
from ingestd.metrics import Metrics
from ingestd.pipeline import FileJob, Outcome, Pipeline
from ingestd.settings import Settings
from ingestd.state import StateStore
from ingestd.store import KINDS, VectorStore
from ingestd.supervision import cancel_and_wait
from ingestd.system import rss_mb

log = get_logger("ingestd.engine")


class Engine:
    def __init__(self, settings: Settings, provider: EmbeddingProvider | None = None) -> None:
        self.settings = settings
        for secret in (settings.qdrant_api_key, settings.voyage_api_key):
            register_secret(secret.get_secret_value() if secret else None)
        self.state = StateStore(settings.state_dir)
        self.provider = provider or build_provider(settings)
        self.store = VectorStore(
            settings, self.provider.fingerprint, self.provider.collection_slug, self.provider.dimension
        )
        self.metrics = Metrics()
        self.cache = (
            EmbeddingCache(
                settings.state_dir / "cache", self.provider.fingerprint, settings.embed_cache_max_entries
            )
            if settings.embed_cache_max_entries > 0
            else None
        )
        self.pipeline = Pipeline(
            settings, self.provider, self.store, self.state, self.metrics, self._redactor(), self.cache
        )
        self.roots = settings.roots()
        self.started = time.time()
        self._flusher: asyncio.Task[None] | None = None

    def _redactor(self) -> Any:
        if not self.settings.redaction_enabled:
            return None
        from ingestd.redaction import redact

        return redact

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self, owner: str) -> None:
        """Lock and load the state, then reach the store (waiting while it is unavailable)."""
        self.state.lock(owner)
        report = self.state.load()
        if report.problem:
            log.warning(
                "state.recovered",
                path=str(self.state.path),
                source=report.source,
                reason=report.problem,
                outcome="recovered" if report.source == "backup" else "rebuilt",
            )
        if report.source == "new":  # unreadable, or deleted: Qdrant may still hold the points
            await self._rebuild_state_when_ready()
        self.state.meta.update(model=self.provider.fingerprint, store=self.store.location)
        await self.pipeline._with_store_retry("connect", ["-"], self.store.ensure_collections)
        # What is alive now (modules, qdrant-client's and pydantic's classes) lives for good:
        # frozen, it is skipped by every later collection (a full gc after a file: ~96 -> ~25 ms).
        # Collect first, so that garbage of an earlier engine in this process is not kept too.
        gc.collect()
        gc.freeze()
        self.pipeline.start()
        self._flusher = asyncio.create_task(self._flush_loop(), name="state-flusher")

    async def _rebuild_state_when_ready(self) -> None:
        from ingestd.recovery import rebuild_state

        await self.pipeline._with_store_retry("connect", ["-"], self.store.ensure_collections)
        files = await rebuild_state(self.store, self.state)
        if files:
            log.warning(
                "state.rebuilt", path=str(self.state.path), files=files, outcome="rebuilt from Qdrant"
            )

    async def close(self) -> None:
        await self.pipeline.stop()
        if self._flusher is not None:
            await cancel_and_wait(self._flusher)
        self.save_state()
        await self.store.close()
        await self.provider.close()
        if self.cache is not None:
            self.cache.close()
        self.state.unlock()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.state_flush_seconds)
            if not self.state.dirty:
                continue
            try:
                # Snapshot on the loop (records change there), write and fsync off it. No name
                # holds the snapshot (about 470 bytes a file) through the next sleep.
                await asyncio.to_thread(self.state.write, self.state.snapshot())
            except OSError as exc:
                self.state.dirty = True
                self._log_write_failure(exc)

    def save_state(self) -> None:
        try:
            self.state.save()
        except OSError as exc:
            self._log_write_failure(exc)

    def _log_write_failure(self, exc: OSError) -> None:
        log.error(
            "state.write_failed", path=str(self.state.path), error=str(exc), outcome="kept previous state"
        )

    # --- operations ----------------------------------------------------------------------
    def target(self, path: Path) -> Target | Refusal | None:
        return classify(path, self.roots)

    async def submit(self, path: Path) -> FileJob | Outcome | None:
        """Look at one path: ingest it, refuse it, or notice that it is gone."""
        found = await asyncio.to_thread(self.target, path)
        if isinstance(found, Refusal):
            return self.pipeline.refuse(found.key, found.kind, found.reason)
        if found is None:
            key = str(path)
            if self.state.get(key) is not None and not path.exists() and not path.is_symlink():
                return await self.pipeline.remove(key)
            return None
        return await self.pipeline.ingest(found)

    async def search(
        self, query: str, kind: str | None, project: str | None, limit: int
    ) -> list[dict[str, Any]]:
        vector = await self.provider.embed_query(query)
        kinds = [kind] if kind else list(KINDS)
        hits = []
        for each in kinds:
            hits.extend(await self.store.search(each, vector, query, limit, project))
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return [
            {"score": round(hit.score, 4), **{k: hit.payload.get(k) for k in _HIT_FIELDS if k in hit.payload}}
            for hit in hits[:limit]
        ]

    async def status(self) -> dict[str, Any]:
        files: dict[str, list[dict[str, Any]]] = {}
        for path, record in self.state.files.items():
            if record.status in ("failed", "quarantined", "skipped", "pending"):
                files.setdefault(record.status, []).append(
                    {
                        "path": path,
                        "reason": record.reason,
                        "attempts": record.attempts,
                        "updated_at": record.updated_at,
                    }
                )
        points: dict[str, int | None] = {}
        for kind in KINDS:
            try:
                async with asyncio.timeout(10):
                    points[self.store.collections[kind]] = await self.store.count(kind)
            except Exception:
                points[self.store.collections[kind]] = None
        redactions = {p: r.redactions for p, r in self.state.files.items() if r.redactions}
        return {
            "files": self.state.summary(),
            "problems": files,
            "points": points,
            "redactions": redactions,
            "model": {"fingerprint": self.provider.fingerprint, "loaded": self.provider.loaded},
            "store": {"location": self.store.location, "available": self.pipeline.status().store_available},
            "state": {"path": str(self.state.path), "files": len(self.state.files)},
            "rss_mb": rss_mb(),
            "uptime_s": round(time.time() - self.started, 1),
        }

    def retry(self, paths: list[str] | None = None) -> list[str]:
        """Make quarantined and failed files eligible again; the caller queues them.

        Files named explicitly (done, forgotten, anything) are read again from scratch under a
        new generation, their old points deleted: resuming would keep whatever they had.
        """
        chosen = []
        for path, record in self.state.files.items():
            if (paths and path not in paths) or (
                not paths and record.status not in ("quarantined", "failed")
            ):
                continue
            record.status, record.reason, record.attempts = "pending", None, 0
            record.reingest = bool(paths)
            self.state.put(path, record)
            chosen.append(path)
        return chosen

    def readd(self, paths: list[Path]) -> list[str]:
        """Forgotten files among `paths` are ingested again in full (`ingestd import PATH`)."""
        keys = {str(path) for path in paths}
        forgotten = [
            key for key, record in self.state.files.items() if key in keys and record.status == "forgotten"
        ]
        return self.retry(forgotten) if forgotten else []

    async def forget(self, path: str) -> Outcome:
        key = str(Path(path).expanduser().absolute())
        return await self.pipeline.forget(key)


_HIT_FIELDS = (
    "path",
    "kind",
    "project",
    "project_name",
    "session",
    "ordinal",
    "roles",
    "timestamp_first",
    "timestamp_last",
    "git_branch",
    "heading",
    "page",
    "tools",
    "files",
    "text",
)
