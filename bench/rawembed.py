"""Child process of the sweep: raw FastEmbed tokens/s and RSS for one (chunk, batch, arena) setting.

Usage: rawembed.py CHUNK_TOKENS BATCH_SIZE ARENA(0|1) TOKENS THREADS. Prints one JSON object.
Chunks are windows of exactly CHUNK_TOKENS tokens (with [CLS] and [SEP]) cut from generated
transcript prose, the worst case of greedy packing; a second pass with random batch shapes
(8 batches of 1..BATCH chunks of 16..CHUNK_TOKENS tokens) shows how the memory arena grows with shapes.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time

import psutil
from corpus import Session
from fastembed import TextEmbedding
from procs import MODEL_CACHE, MODEL_DIR
from tokenizers import Tokenizer


def windows(tokenizer: Tokenizer, chunk: int, total_tokens: int, seed: int = 3) -> list[str]:
    tokenizer.no_truncation()
    tokenizer.no_padding()
    text = Session(seed).text
    out: list[str] = []
    while len(out) * chunk < total_tokens:
        passage = text.paragraph(30, 30)
        encoding = tokenizer.encode(passage, add_special_tokens=False)
        width = chunk - 2
        for begin in range(0, len(encoding.ids) - width, width):
            span = encoding.offsets[begin : begin + width]
            out.append(passage[span[0][0] : span[-1][1]])
    return out


def rss() -> float:
    return psutil.Process().memory_info().rss / 1e6


def main() -> None:
    chunk, batch, arena, total, threads = (int(arg) for arg in sys.argv[1:6])
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    texts = windows(tokenizer, chunk, total)
    before_load = rss()
    model = TextEmbedding(
        "sentence-transformers/all-MiniLM-L6-v2",
        cache_dir=str(MODEL_CACHE),
        specific_model_path=str(MODEL_DIR),
        threads=threads,
        enable_cpu_mem_arena=bool(arena),
    )
    loaded = rss()
    list(model.embed(texts[:batch], batch_size=batch))  # warm-up with the largest shape
    warm = rss()
    started = time.monotonic()
    list(model.embed(texts, batch_size=batch))
    seconds = time.monotonic() - started
    after_fixed = rss()
    rng = random.Random(5)
    trace = []
    for _ in range(8):
        count = rng.randint(1, batch)
        length = rng.randint(16, chunk)
        sample = [" ".join(t.split()[: max(4, length * 3 // 4)]) for t in rng.choices(texts, k=count)]
        list(model.embed(sample, batch_size=count))
        trace.append(round(rss(), 1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(
        json.dumps(
            {
                "chunk_tokens": chunk,
                "batch_size": batch,
                "arena": bool(arena),
                "chunks": len(texts),
                "tokens": len(texts) * chunk,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(len(texts) * chunk / seconds),
                "rss_before_load_mb": round(before_load, 1),
                "rss_loaded_mb": round(loaded, 1),
                "rss_warm_mb": round(warm, 1),
                "rss_after_fixed_mb": round(after_fixed, 1),
                "rss_after_varied_mb": trace[-1],
                "varied_trace_mb": trace,
                "peak_rss_mb": round(peak, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
