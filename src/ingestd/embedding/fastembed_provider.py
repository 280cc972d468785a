"""FastEmbed on the CPU, isolated in its own thread pool, loaded lazily and unloadable.

ONNX Runtime's memory arena grows to the largest batch it has seen and never shrinks, so it is
off by default (`EMBED_CPU_MEM_ARENA`), and every call passes an explicit batch size: FastEmbed's
default of 256 can take gigabytes in one call. The CPUs come from the cgroup's quota, not the
host's core count, and by default each CPU runs its own batch on one shared session with one
ONNX thread: on 2 CPUs that embedded 19-25 % more tokens/s than one call at a time on two
threads (docs/performance.md), with no second copy of the model, and a CPU the rest of the
daemon takes for a moment then stalls one batch, not both halves of every batch.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ingestd.chunker import TokenCounter
from ingestd.embedding.base import EmbeddingProvider
from ingestd.embedding.model_files import ModelLocation, resolve_model
from ingestd.errors import RetryLater, TooLarge
from ingestd.settings import EmbedSettings
from ingestd.system import available_cpus, release_memory

MAX_DEFAULT_CALLS = 8


class FastEmbedProvider(EmbeddingProvider):
    name = "fastembed"

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        self.model = settings.embedding_model
        self.location: ModelLocation = resolve_model(
            settings.embedding_model,
            model_dir=settings.fastembed_model_dir,
            source=settings.fastembed_model_source,
            cache_dir=settings.model_cache_dir,
        )
        cpus = available_cpus()
        # At most 8 calls by default: each holds its own batch's buffers, and more than 2 at
        # once is not measured; the CPUs beyond go to each call's threads.
        self.concurrency = settings.thread_pool_workers or min(cpus, MAX_DEFAULT_CALLS)
        self.threads = settings.onnx_threads or max(1, cpus // self.concurrency)
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="fastembed")
        # Guards the model and counts the calls using it, so that an unload waits for them
        # (and calls arriving meanwhile wait for the unload, so it cannot be put off).
        self._lock = threading.Condition()
        self._calls = 0
        self._unloading = False
        self._model: Any = None
        self._counter: TokenCounter | None = None
        self._dimension: int | None = None
        self.loads = 0

    # --- identity ------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        if self._dimension is None:
            from fastembed import TextEmbedding

            self._dimension = int(TextEmbedding.get_embedding_size(self.model))
        return self._dimension

    @property
    def fingerprint(self) -> str:
        return f"fastembed:{self.model}:{self.location.variant}:{self.dimension}:sha{self.location.sha}"

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter(Tokenizer.from_file(str(self._model_dir() / "tokenizer.json")))
        return self._counter

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def calls_in_progress(self) -> int:
        """Calls embedding on the model right now: an unload waits until this is 0. Counted on
        the worker threads, so a caller that must act during a call can wait for it to start."""
        return self._calls

    @property
    def unloading(self) -> bool:
        """An unload is waiting for the calls in progress; calls arriving meanwhile wait for it."""
        return self._unloading

    def _model_dir(self) -> Path:
        if self.location.directory is not None:
            return self.location.directory
        from fastembed import TextEmbedding  # hub: download (or reuse the cache) without a session

        probe = TextEmbedding(self.model, cache_dir=str(self.settings.model_cache_dir), lazy_load=True)
        return Path(getattr(probe.model, "_model_dir"))  # noqa: B009 - private in fastembed 0.9

    # --- work ----------------------------------------------------------------------------
    def _load(self) -> Any:
        """The model, loaded if need be; the caller must hold the lock."""
        if self._model is None:
            from fastembed import TextEmbedding

            kwargs: dict[str, Any] = {
                "cache_dir": str(self.settings.model_cache_dir),
                "threads": self.threads,
                "enable_cpu_mem_arena": self.settings.embed_cpu_mem_arena,
            }
            if self.location.directory is not None:
                kwargs["specific_model_path"] = str(self.location.directory)
            self._model = TextEmbedding(self.model, **kwargs)
            self.loads += 1
        return self._model

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self._lock.wait_for(lambda: not self._unloading)
            model = self._load()
            self._calls += 1
        try:
            return [vector.tolist() for vector in model.embed(texts, batch_size=len(texts))]
        finally:
            with self._lock:
                self._calls -= 1
                self._lock.notify_all()

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._embed_sync, texts)
        except MemoryError as exc:  # a smaller batch needs less: the policy halves it
            raise TooLarge(f"out of memory embedding {len(texts)} texts") from exc
        except Exception as exc:  # unclassified, as it always was: worth another try
            raise RetryLater(f"{type(exc).__name__}: {exc}") from exc

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed_documents([text]))[0]

    def _unload_sync(self) -> None:
        """After the calls in progress (none is cut short); new ones wait, then load it again."""
        with self._lock:
            self._unloading = True
            self._lock.wait_for(lambda: self._calls == 0)
            self._model = None
            release_memory()
            self._unloading = False
            self._lock.notify_all()

    async def unload(self) -> None:
        if self._model is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._unload_sync)

    async def close(self) -> None:
        await self.unload()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def prepare(self) -> str:
        """Fetch or assemble the model and load it once: the Docker build's bake step."""
        self._embed_sync(["warm-up"])
        return str(self._model_dir())
