"""Embedding providers behind one interface; `build_provider` picks one from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingestd.embedding.base import EmbeddingProvider

if TYPE_CHECKING:
    from ingestd.settings import EmbedSettings

__all__ = ["EmbeddingProvider", "build_provider"]


def build_provider(settings: EmbedSettings) -> EmbeddingProvider:
    if settings.embedding_provider == "voyage":
        from ingestd.embedding.voyage import VoyageProvider

        return VoyageProvider(settings)
    from ingestd.embedding.fastembed_provider import FastEmbedProvider

    return FastEmbedProvider(settings)
