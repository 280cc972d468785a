"""Several embedding calls at once on one shared FastEmbed model, one batch per CPU."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingProvider, engine_with, ingest, make_settings
from generators import write_transcript
from ingestd.embedding import fastembed_provider
from ingestd.embedding.fastembed_provider import FastEmbedProvider


@pytest.fixture(scope="module")
def two_calls(tmp_path_factory: pytest.TempPathFactory) -> FastEmbedProvider:
    """Two calls at a time on one ONNX thread each, whatever this machine's CPUs."""
    settings = make_settings(tmp_path_factory.mktemp("two"), thread_pool_workers=2, onnx_threads=1)
    return FastEmbedProvider(settings.embed)


def texts(count: int) -> list[str]:
    return [
        f"Entry {i}: the indexer retried shard {i % 7} after the lease on node {i % 5} expired."
        for i in range(count)
    ]


def test_calls_and_threads_follow_the_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = {  # (CPUs, THREAD_POOL_WORKERS, ONNX_THREADS): (calls at once, threads per call)
        (4, 0, 0): (4, 1),  # the default: a call per CPU, one thread each
        (4, 2, 0): (2, 2),
        (4, 1, 0): (1, 4),
        (4, 1, 3): (1, 3),
        (1, 0, 0): (1, 1),
        (32, 0, 0): (8, 4),  # at most 8 calls by default; the CPUs beyond go to their threads
    }
    for (cpus, workers, threads), expected in shapes.items():
        monkeypatch.setattr(fastembed_provider, "available_cpus", lambda cpus=cpus: cpus)
        settings = make_settings(tmp_path, thread_pool_workers=workers, onnx_threads=threads)
        provider = FastEmbedProvider(settings.embed)
        assert (provider.concurrency, provider.threads) == expected, (cpus, workers, threads)


async def test_calls_at_once_share_the_model_and_give_the_vectors_of_calls_one_by_one(
    two_calls: FastEmbedProvider,
) -> None:
    halves = [texts(48)[:24], texts(48)[24:]]
    together = await asyncio.gather(*(two_calls.embed_documents(half) for half in halves))
    alone = [await two_calls.embed_documents(half) for half in halves]
    assert two_calls.loads == 1
    assert np.allclose(np.array(together), np.array(alone), atol=1e-5)


async def test_an_unload_waits_for_the_call_in_progress(two_calls: FastEmbedProvider) -> None:
    await two_calls.embed_query("warm")
    batch = texts(160)
    call = asyncio.ensure_future(two_calls.embed_documents(batch))
    while two_calls.calls_in_progress == 0 and not call.done():  # noqa: ASYNC110 - set on the worker thread
        await asyncio.sleep(0.002)
    assert not call.done(), "the batch ended before the unload could start"
    await two_calls.unload()  # on the second worker, while the first embeds
    assert two_calls.calls_in_progress == 0 and not two_calls.loaded
    assert len(await call) == len(batch)
    await two_calls.embed_query("again")
    assert two_calls.loaded


async def test_a_call_arriving_during_an_unload_waits_for_it_and_loads_the_model_again(
    two_calls: FastEmbedProvider,
) -> None:
    await two_calls.embed_query("warm")
    loads = two_calls.loads
    first = asyncio.ensure_future(two_calls.embed_documents(texts(160)))
    while two_calls.calls_in_progress == 0 and not first.done():  # noqa: ASYNC110 - set on the worker thread
        await asyncio.sleep(0.002)
    unload = asyncio.ensure_future(two_calls.unload())
    while not two_calls.unloading and not unload.done():  # noqa: ASYNC110 - set on the worker thread
        await asyncio.sleep(0.002)
    assert not first.done(), "the batch ended before the unload could start"
    late = asyncio.ensure_future(two_calls.embed_documents(texts(4)))
    await asyncio.gather(first, unload)
    assert len(await late) == 4
    # Had the late call used the old model, the unload would have waited for it too and left
    # the model unloaded.
    assert two_calls.loaded and two_calls.loads == loads + 1


async def test_the_pipeline_keeps_every_worker_busy_and_each_vector_with_its_chunk(
    tmp_path: Path, two_calls: FastEmbedProvider
) -> None:
    counting = CountingProvider(two_calls)
    async with engine_with(tmp_path, counting) as engine:
        path = engine.settings.watch.conversations_dirs[0] / "session.jsonl"
        write_transcript(path, seed=12, exchanges=30)
        outcome = await ingest(engine, path)
        assert outcome.status == "done" and len(counting.batches) >= 4
        assert counting.most_at_once == two_calls.concurrency + 1  # and one queued behind them
        name = await engine.store.ensure_collection("conversations")
        records, _ = await engine.store.client.scroll(name, with_vectors=True, limit=10_000)
    assert len(records) == outcome.chunks
    stored = [record.vector[""] for record in records]  # type: ignore[index,call-overload]
    again = await two_calls.embed_documents([str(record.payload["text"]) for record in records])  # type: ignore[index]
    assert np.allclose(np.array(stored), np.array(again), atol=1e-4)
