"""The interface every embedding provider implements.

The pipeline only ever sees this: texts in, vectors out, a tokenizer to size chunks with, and a
fingerprint that names exactly which model made the vectors (so that two models' vectors never
share a collection). A provider makes one attempt per call and raises an `EmbeddingSignal`
(`ingestd.errors`) when it fails; retrying is `ingestd.retry`'s alone.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from ingestd.protocols import TokenCounter


class EmbeddingProvider(ABC):
    name: str
    model: str
    # Whether a batch should wait briefly for more chunks even when nothing is being embedded:
    # yes for a rate-limited API, where a request is the unit of cost; no for a local model,
    # which would only sit idle meanwhile.
    fills_batches_when_idle: bool = False
    # Batches the provider embeds at the same time; the pipeline keeps one more queued behind.
    concurrency: int = 1

    @property
    @abstractmethod
    def dimension(self) -> int: ...

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Provider, model, variant and dimension: equal fingerprints mean comparable vectors."""

    @property
    @abstractmethod
    def counter(self) -> TokenCounter: ...

    @property
    @abstractmethod
    def loaded(self) -> bool: ...

    @abstractmethod
    async def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    @abstractmethod
    async def embed_query(self, text: str) -> list[float]: ...

    def plan_requests(self, texts: list[str]) -> list[range]:
        """How `embed_documents` divides these texts into requests, each one attempt: the retry
        policy retries a failed request alone. A local model makes one call per batch."""
        return [range(len(texts))]

    async def unload(self) -> None:
        """Release the model's memory; the next call loads it again."""

    async def close(self) -> None:
        await self.unload()

    @property
    def collection_slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.fingerprint.split(":sha", 1)[0].lower()).strip("-")
