"""The interface every embedding provider implements.

The pipeline only ever sees this: texts in, vectors out, a tokenizer to size chunks with, and a
fingerprint that names exactly which model made the vectors (so that two models' vectors never
share a collection).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from ingestd.chunker import TokenCounter


class EmbeddingError(Exception):
    """The provider failed on a batch; `retryable` says whether trying again can help.

    `fatal` means no batch can succeed (the credentials were refused): the pipeline halts all
    embedding rather than quarantining file after file.
    """

    def __init__(self, message: str, retryable: bool = True, fatal: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable and not fatal
        self.fatal = fatal


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

    async def unload(self) -> None:
        """Release the model's memory; the next call loads it again."""

    async def close(self) -> None:
        await self.unload()

    @property
    def collection_slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.fingerprint.split(":sha", 1)[0].lower()).strip("-")
