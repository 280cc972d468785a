"""The parts wired together once, for the daemon and for one-shot CLI commands alike.

Both need the same provider, store, ledger and pipeline, and the same answers to `search`,
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
from ingestd.ledger import Ledger, Status
from ingestd.logs import get_logger, register_secret
from ingestd.metrics import Metrics
from ingestd.pipeline import FileJob, Outcome, Pipeline
from ingestd.settings import Settings
from ingestd.store import KINDS, VectorStore
from ingestd.system import rss_mb

log = get_logger("ingestd.engine")


class Engine:
    def __init__(self, settings: Settings, provider: EmbeddingProvider | None = None) -> None:
        self.settings = settings
        for secret in (settings.store.qdrant_api_key, settings.embed.voyage_api_key):
            register_secret(secret.get_secret_value() if secret else None)
        self.ledger = Ledger(settings.ops.state_dir)
        self.provider = provider or build_provider(settings.embed)
        self.store = VectorStore(
            settings.store,
            self.provider.fingerprint,
            self.provider.collection_slug,
            self.provider.dimension,
            log_level=settings.ops.log_level,
            log_format=settings.ops.log_format,
        )
        self.metrics = Metrics()
        self.cache = (
            EmbeddingCache(
                settings.ops.state_dir / "cache",
                self.provider.fingerprint,
                settings.embed.embed_cache_max_entries,
            )
            if settings.embed.embed_cache_max_entries > 0
            else None
        )
        self.pipeline = Pipeline(
            settings, self.provider, self.store, self.ledger, self.metrics, self._redactor(), self.cache
        )
        self.roots = settings.watch.roots()
        self.started = time.time()

    def _redactor(self) -> Any:
        if not self.settings.read.redaction_enabled:
            return None
        from ingestd.redaction import redact

        return redact

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self, owner: str) -> None:
        """Lock and open the ledger, then reach the store (waiting while it is unavailable)."""
        self.ledger.lock(owner)
        report = self.ledger.open()
        if report.problem:
            log.warning(
                "state.recovered",
                path=str(self.ledger.path),
                source=report.source,
                reason=report.problem,
                outcome="recovered" if report.source == "migrated" else "rebuilt",
            )
        if report.source == "new":  # unreadable, or deleted: Qdrant may still hold the points
            await self._rebuild_state_when_ready()
        self.ledger.set_meta(model=self.provider.fingerprint, store=self.store.location)
        await self.pipeline.gateway.call("connect", ["-"], self.store.ensure_collections)
        # What is alive now (modules, qdrant-client's and pydantic's classes) lives for good:
        # frozen, it is skipped by every later collection (a full gc after a file: ~96 -> ~25 ms).
        # Collect first, so that garbage of an earlier engine in this process is not kept too.
        gc.collect()
        gc.freeze()
        self.pipeline.start()

    async def _rebuild_state_when_ready(self) -> None:
        from ingestd.recovery import rebuild_state

        await self.pipeline.gateway.call("connect", ["-"], self.store.ensure_collections)
        files = await rebuild_state(self.store, self.ledger)
        if files:
            log.warning(
                "state.rebuilt", path=str(self.ledger.path), files=files, outcome="rebuilt from Qdrant"
            )

    async def close(self) -> None:
        """Every transition committed itself: closing has nothing of the ledger's to write."""
        await self.pipeline.stop()
        await self.store.close()
        await self.provider.close()
        if self.cache is not None:
            self.cache.close()
        self.ledger.close()
        self.ledger.unlock()

    # --- operations ----------------------------------------------------------------------
    def target(self, path: Path) -> Target | Refusal | None:
        return classify(path, self.roots)

    async def submit(self, path: Path) -> FileJob | Outcome | None:
        """Look at one path: ingest it, refuse it, or notice that it is gone."""
        found = await asyncio.to_thread(self.target, path)
        if isinstance(found, Refusal):
            return self.pipeline.policies.refuse(found.key, found.kind, found.reason)
        if found is None:
            key = str(path)
            if self.ledger.get(key) is not None and not path.exists() and not path.is_symlink():
                return await self.pipeline.policies.remove(key)
            return None
        return await self.pipeline.ingest(found)

    async def search(
        self, query: str, kind: str | None, project: str | None, limit: int
    ) -> list[dict[str, Any]]:
        vector = await self._query_vector(query)
        kinds = [kind] if kind else list(KINDS)
        hits = []
        for each in kinds:
            hits.extend(await self.store.search(each, vector, query, limit, project))
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return [
            {"score": round(hit.score, 4), **{k: hit.payload.get(k) for k in _HIT_FIELDS if k in hit.payload}}
            for hit in hits[:limit]
        ]

    async def _query_vector(self, query: str) -> list[float]:
        """Under the same retry policy as documents: a provider makes one attempt per call."""

        async def embed(texts: list[str]) -> list[list[float]]:
            return [await self.provider.embed_query(texts[0])]

        return (await self.pipeline.policy.run(embed, [query]))[0]

    async def status(self) -> dict[str, Any]:
        files: dict[str, list[dict[str, Any]]] = {}
        for status in _REPORTED:  # one query each, so pending files do not crowd out failures
            for problem in self.ledger.problems([status]):
                files.setdefault(problem.pop("status"), []).append(problem)
        points: dict[str, int | None] = {}
        for kind in KINDS:
            try:
                async with asyncio.timeout(10):
                    points[self.store.collections[kind]] = await self.store.count(kind)
            except Exception:
                points[self.store.collections[kind]] = None
        return {
            "files": self.ledger.summary(),
            "problems": files,
            "points": points,
            "redactions": self.ledger.redactions(),
            "model": {"fingerprint": self.provider.fingerprint, "loaded": self.provider.loaded},
            "store": {"location": self.store.location, "available": self.pipeline.status().store_available},
            "state": {"path": str(self.ledger.path), "files": len(self.ledger)},
            "rss_mb": rss_mb(),
            "uptime_s": round(time.time() - self.started, 1),
        }

    def retry(self, paths: list[str] | None = None) -> list[str]:
        """Make quarantined and failed files eligible again; the caller queues them.

        Files named explicitly (done, forgotten, anything) are read again from scratch under a
        new generation, their old points deleted: resuming would keep whatever they had.
        """
        return self.ledger.retried(paths or None)

    def readd(self, paths: list[Path]) -> list[str]:
        """Forgotten files among `paths` are ingested again in full (`ingestd import PATH`)."""
        forgotten = []
        for key in dict.fromkeys(str(path) for path in paths):
            record = self.ledger.get(key)
            if record is not None and record.status == Status.FORGOTTEN:
                forgotten.append(key)
        return self.retry(forgotten) if forgotten else []

    async def forget(self, path: str) -> Outcome:
        key = str(Path(path).expanduser().absolute())
        return await self.pipeline.policies.forget(key)


_REPORTED = (Status.FAILED, Status.QUARANTINED, Status.SKIPPED, Status.PENDING)
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
