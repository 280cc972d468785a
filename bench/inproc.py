"""In-process measurements: the pipeline against raw FastEmbed on the same texts, and retrieval quality."""

from __future__ import annotations

import asyncio
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from corpus import message_texts
from procs import MODEL_CACHE, MODEL_DIR

from ingestd.embedding.base import EmbeddingProvider
from ingestd.embedding.fastembed_provider import FastEmbedProvider
from ingestd.engine import Engine
from ingestd.pipeline import FileJob
from ingestd.settings import Settings
from ingestd.system import available_cpus


def bench_settings(work: Path, conversations: Path, **overrides: Any) -> Settings:
    documents = work / "documents"
    documents.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "conversations_dirs": [conversations],
        "documents_dirs": [documents],
        "state_dir": work / "state",
        "fastembed_cache_path": MODEL_CACHE,
        "health_port": 0,
        "progress_log_seconds": 0,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


class CountingProvider(EmbeddingProvider):
    """The real provider, keeping every batch of texts the model was asked to embed."""

    def __init__(self, inner: FastEmbedProvider) -> None:
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.concurrency = inner.concurrency
        self.batches: list[list[str]] = []

    @property
    def texts(self) -> list[str]:
        return [text for batch in self.batches for text in batch]

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
        self.batches.append(list(texts))
        return await self.inner.embed_documents(texts)

    async def embed_query(self, text: str) -> list[float]:
        return await self.inner.embed_query(text)

    async def close(self) -> None:  # the model outlives each engine
        return None


async def ingest_all(engine: Engine, files: list[Path]) -> None:
    """What `ingestd import` does: every file through the pipeline, FILE_CONCURRENCY at a time."""
    semaphore = asyncio.Semaphore(engine.settings.ops.file_concurrency)

    async def one(path: Path) -> None:
        async with semaphore:
            result = await engine.submit(path)
        if isinstance(result, FileJob):
            await engine.pipeline.settled(result)

    await asyncio.gather(*(one(path) for path in files))


def count_tokens(texts: list[str]) -> int:
    """Model tokens of the texts, [CLS] and [SEP] included, with the model's own tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return sum(len(encoding.ids) for encoding in tokenizer.encode_batch(texts))


def cache_samples(engine: Engine) -> dict[str, float]:
    """Every metric sample whose name mentions the embedding cache (empty if there is none)."""
    out: dict[str, float] = {}
    for metric in engine.metrics.registry.collect():
        for sample in metric.samples:
            if "cache" in sample.name and not sample.name.endswith("_created"):
                out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def raw_rate(model: Any, batches: list[list[str]], tokens: int, callers: int = 1) -> float:
    """Tokens/s of FastEmbed's own `embed` on `model`, one call a batch, `callers` calls at a time."""

    def embed(batch: list[str]) -> None:
        for _ in model.embed(batch, batch_size=len(batch)):
            pass

    started = time.monotonic()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(embed, batches))
    return tokens / (time.monotonic() - started)


async def pipeline_efficiency(
    work: Path, corpus: Path, files: list[Path], rounds: int, raw_batch_size: int = 32
) -> dict[str, Any]:
    """End-to-end embedded tokens/s over raw FastEmbed tokens/s, alternating the two `rounds` times.

    Raw FastEmbed embeds exactly the pipeline's batches twice: the usual way (one session on all
    CPUs, one call at a time) and the daemon's way (its own session, `concurrency` calls at a
    time). The ratio is taken against the faster of the two, so it is what everything but the
    model costs, not what the daemon's way of calling the model gains. For reference it also
    embeds the same texts in plain batches of `raw_batch_size`, the way a simple importer would.
    """
    from fastembed import TextEmbedding

    provider = FastEmbedProvider(bench_settings(work / "provider", corpus).embed)
    await provider.embed_documents(["warm-up"])
    with provider._lock:  # the daemon's own session
        session = provider._load()
    usual = TextEmbedding(
        provider.model,
        cache_dir=str(MODEL_CACHE),
        specific_model_path=str(MODEL_DIR),
        threads=available_cpus(),
        enable_cpu_mem_arena=False,
    )
    list(usual.embed(["warm-up"]))
    pipeline_rates, raw_rates, details = [], [], []
    cache: dict[str, float] = {}
    for index in range(rounds):
        settings = bench_settings(work / f"round{index}", corpus)  # the daemon's own batching
        counting = CountingProvider(provider)
        engine = Engine(settings, provider=counting)
        await engine.open("bench")
        started = time.monotonic()
        await ingest_all(engine, files)
        seconds = time.monotonic() - started
        cache = cache_samples(engine)
        chunks_total = engine.pipeline.status().chunks_embedded
        await engine.close()
        texts = counting.texts
        tokens = count_tokens(texts)
        rate = tokens / seconds
        raw_usual = await asyncio.to_thread(raw_rate, usual, counting.batches, tokens)
        raw_same = await asyncio.to_thread(raw_rate, session, counting.batches, tokens, provider.concurrency)
        plain = [texts[i : i + raw_batch_size] for i in range(0, len(texts), raw_batch_size)]
        raw_plain = await asyncio.to_thread(raw_rate, usual, plain, tokens)
        raw = max(raw_usual, raw_same)
        pipeline_rates.append(rate)
        raw_rates.append(raw)
        details.append(
            {
                "seconds": round(seconds, 2),
                "model_texts": len(texts),
                "chunks_stored": chunks_total,
                "tokens": tokens,
                "pipeline_tokens_per_s": round(rate),
                "raw_tokens_per_s": round(raw),
                "raw_usual_tokens_per_s": round(raw_usual),
                "raw_same_calls_tokens_per_s": round(raw_same),
                "raw_plain_batches_tokens_per_s": round(raw_plain),
                "ratio": round(rate / raw, 3),
                "ratio_to_usual": round(rate / raw_usual, 3),
                "ratio_to_same_calls": round(rate / raw_same, 3),
                "ratio_to_plain_batches": round(rate / raw_plain, 3),
                "batches": len(counting.batches),
            }
        )
    await provider.close()

    def median(key: str) -> float:
        return float(sorted(d[key] for d in details)[len(details) // 2])

    return {
        "rounds": details,
        "ratio": median("ratio"),
        "ratio_of_sums": round(sum(pipeline_rates) / sum(raw_rates), 3),
        "ratio_to_usual": median("ratio_to_usual"),
        "ratio_to_same_calls": median("ratio_to_same_calls"),
        "ratio_to_plain_batches": median("ratio_to_plain_batches"),
        "pipeline_tokens_per_s": round(sum(pipeline_rates) / len(pipeline_rates)),
        "raw_tokens_per_s": round(sum(raw_rates) / len(raw_rates)),
        "threads": provider.threads,
        "concurrency": provider.concurrency,
        "usual_threads": available_cpus(),
        "raw_batch_size": raw_batch_size,
        "pipeline_batch": [settings.embed.embed_batch_size, settings.embed.embed_batch_max_tokens],
        "files": len(files),
        "bytes": sum(path.stat().st_size for path in files),
        "cache_metrics": cache,
    }


# A sentence ends at . ? ! or at a line break: a "sentence" running across a heading, a list
# item or a paragraph break is not one a user would type, and no chunk need hold it whole.
_SENTENCE = re.compile(r"(?<=[.?!])\s+|\s*\n\s*")


def sample_queries(files: list[Path], count: int, seed: int = 11) -> list[tuple[str, str]]:
    """(path, sentence) pairs: one sentence of a random user/assistant message in a random file."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < count:
        path = rng.choice(files)
        lines = path.read_bytes().splitlines()
        texts = message_texts(rng.choice(lines))
        if not texts:
            continue
        sentences = [s.strip() for s in _SENTENCE.split(rng.choice(texts)) if len(s.split()) >= 8]
        if not sentences:
            continue
        sentence = rng.choice(sentences)
        if sentence not in seen:
            seen.add(sentence)
            out.append((str(path), sentence))
    return out


async def recall_at_k(settings: Settings, files: list[Path], queries: int, k: int = 5) -> dict[str, Any]:
    """Search a sentence of each sampled message; a hit is a top-k chunk of that file containing it.
    The same queries run hybrid (the default) and by meaning only (`dense`)."""
    engine = Engine(settings)
    await engine.open("bench-quality")
    try:
        pairs = sample_queries(files, queries)
        modes: dict[str, dict[str, Any]] = {}
        for mode in ("hybrid", "dense"):
            engine.settings.store.search_mode = mode
            modes[mode] = await _recall(engine, pairs, k)
        points = await engine.store.count("conversations")
    finally:
        await engine.close()
    return {"queries": len(pairs), "points_searched": points, **modes["hybrid"], "dense": modes["dense"]}


async def _recall(engine: Engine, pairs: list[tuple[str, str]], k: int) -> dict[str, Any]:
    found, ranks, started = 0, [], time.monotonic()
    for path, sentence in pairs:
        hits = await engine.search(sentence, "conversations", None, k)
        rank = next(
            (
                i
                for i, hit in enumerate(hits, 1)
                if hit.get("path") == path and sentence in str(hit.get("text", ""))
            ),
            None,
        )
        if rank is not None:
            found += 1
            ranks.append(rank)
    seconds = time.monotonic() - started
    return {
        f"recall_at_{k}": round(found / len(pairs), 3),
        "mean_rank_when_found": round(sum(ranks) / len(ranks), 2) if ranks else None,
        "rank_1": round(ranks.count(1) / len(pairs), 3),
        "search_ms_mean": round(1000 * seconds / len(pairs), 1),
    }
