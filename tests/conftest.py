"""Shared fixtures: the real FastEmbed model (loaded once) and a fresh embedded Qdrant per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestd.embedding.base import EmbeddingProvider
from ingestd.embedding.fastembed_provider import FastEmbedProvider
from ingestd.engine import Engine
from ingestd.logs import configure_logging
from ingestd.settings import Settings

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = REPO / "state" / "models"  # the model assembled by `make install`, shared by tests

configure_logging("WARNING", "json")


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "conversations_dirs": [tmp / "watch" / "conversations"],
        "documents_dirs": [tmp / "watch" / "documents"],
        "state_dir": tmp / "state",
        "fastembed_cache_path": MODEL_CACHE,
        "health_port": 0,
        "watch_debounce_ms": 50,
        "state_flush_seconds": 0.2,
        "retry_backoff_seconds": 0.01,
        "retry_backoff_max_seconds": 0.05,
        "progress_log_seconds": 0,
        "_env_file": None,
    }
    values.update(overrides)
    for folder in (*values["conversations_dirs"], *values["documents_dirs"]):
        Path(folder).mkdir(parents=True, exist_ok=True)
    return Settings(**values)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests must not pick up a developer's .env or exported settings."""
    for name in list(os.environ):
        if name in Settings.model_fields or name.lower() in Settings.model_fields:
            monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> FastEmbedProvider:
    settings = make_settings(tmp_path_factory.mktemp("provider"))
    return FastEmbedProvider(settings)


class CountingProvider(EmbeddingProvider):
    """The real provider, counting what it embeds (the tests' measure of re-embedding)."""

    def __init__(self, inner: EmbeddingProvider) -> None:
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.texts: list[str] = []
        self.calls = 0
        self.fail_next = 0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def counter(self) -> Any:
        return self.inner.counter

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        from ingestd.embedding import EmbeddingError

        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise EmbeddingError("injected embedding failure")
        self.texts.extend(texts)
        return await self.inner.embed_documents(texts)

    async def embed_query(self, text: str) -> list[float]:
        return await self.inner.embed_query(text)

    async def close(self) -> None:  # the shared model outlives each test
        return None


@pytest.fixture
def counting(provider: FastEmbedProvider) -> CountingProvider:
    return CountingProvider(provider)


@pytest.fixture
async def engine(tmp_path: Path, counting: CountingProvider) -> AsyncIterator[Engine]:
    settings = make_settings(tmp_path)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    yield engine
    await engine.close()
