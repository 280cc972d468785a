"""Model resolution (offline first) and the one-model-per-collection rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import MODEL_CACHE, CountingProvider, make_settings
from ingestd.embedding.fastembed_provider import FastEmbedProvider
from ingestd.embedding.model_files import PYPI_DIR_NAME, ModelLocation, ModelUnavailable, resolve_model
from ingestd.engine import Engine
from ingestd.errors import ModelMismatch
from ingestd.settings import Settings
from ingestd.store import VectorStore

PYPI_MODEL = MODEL_CACHE / PYPI_DIR_NAME


def resolve(settings: Settings) -> ModelLocation:
    """The model these settings name, as the FastEmbed provider resolves it."""
    embed = settings.embed
    return resolve_model(
        embed.embedding_model,
        model_dir=embed.fastembed_model_dir,
        source=embed.fastembed_model_source,
        cache_dir=embed.model_cache_dir,
    )


def hub_layout_cache(tmp: Path) -> Path:
    """FastEmbed's hub cache layout, filled from the PyPI files: the standard download path,
    exercised without a network (HF_HUB_OFFLINE)."""
    repo = tmp / "hub" / "models--Qdrant--all-MiniLM-L6-v2-onnx"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("offline")
    shutil.copytree(PYPI_MODEL, repo / "snapshots" / "offline")
    return tmp / "hub"


async def test_hub_source_uses_the_standard_fastembed_download_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = make_settings(
        tmp_path, fastembed_model_source="hub", fastembed_cache_path=hub_layout_cache(tmp_path)
    )
    provider = FastEmbedProvider(settings.embed)
    assert provider.location.variant == "hub" and provider.location.directory is None
    vector = await provider.embed_query("hello")
    assert len(vector) == provider.dimension == 384
    assert provider.counter.count("hello world") == 2
    pypi = FastEmbedProvider(make_settings(tmp_path / "p").embed)
    assert provider.collection_slug != pypi.collection_slug, "hub and PyPI vectors never share a collection"
    await provider.close()


async def test_an_assembled_model_needs_the_wheels_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image uninstalls the two model wheels once `ingestd model` has assembled them."""
    import ingestd.embedding.model_files as model_files

    cache = tmp_path / "models"
    shutil.copytree(PYPI_MODEL, cache / PYPI_DIR_NAME)
    monkeypatch.setattr(model_files, "package_dir", lambda module: None)  # uninstalled
    provider = FastEmbedProvider(make_settings(tmp_path, fastembed_cache_path=cache).embed)
    assert provider.location.variant == "int8-pypi"
    assert len(await provider.embed_query("hello")) == 384
    await provider.close()
    with pytest.raises(ModelUnavailable, match="offline model packages are missing"):
        resolve(make_settings(tmp_path / "empty", fastembed_cache_path=tmp_path / "none"))


def test_explicit_model_dir(tmp_path: Path) -> None:
    location = resolve(make_settings(tmp_path, fastembed_model_dir=PYPI_MODEL))
    assert location.variant == "local" and location.directory == PYPI_MODEL.resolve()
    with pytest.raises(ModelUnavailable, match="FASTEMBED_MODEL_DIR"):
        resolve(make_settings(tmp_path, fastembed_model_dir=tmp_path))


def test_other_models_need_the_hub_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="FASTEMBED_MODEL_SOURCE=hub"):
        resolve(make_settings(tmp_path, embedding_model="BAAI/bge-small-en-v1.5"))


async def test_collection_of_another_model_is_refused(tmp_path: Path, counting: CountingProvider) -> None:
    settings = make_settings(tmp_path)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    name = engine.store.collections["documents"]
    await engine.close()
    impostor = VectorStore(settings.store, "fastembed:other-model:384", counting.collection_slug, 384)
    with pytest.raises(ModelMismatch, match=name):
        await impostor.ensure_collection("documents")
    await impostor.close()
