"""Recall@5 on real transcripts from ../shared/corpus (opt-in; absent from a fresh clone).

The generated bench corpus is built from templates whose sentences differ only in names and
numbers, which makes it a harsh and somewhat artificial retrieval test; this measures the same
thing on real Claude Code sessions. Writes bench/real_quality.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from inproc import bench_settings, ingest_all, recall_at_k

from ingestd.engine import Engine

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent.parent / "shared" / "corpus" / "claude"


async def main(limit_bytes: int = 3_000_000, queries: int = 200, **overrides: Any) -> int:
    if not CORPUS.is_dir():
        print("../shared/corpus is not present: nothing to measure")
        return 0
    work = HERE / "work" / "real-quality"
    shutil.rmtree(work, ignore_errors=True)
    conversations = work / "conversations"
    total = 0
    # Real sessions only: the corpus's synthetic fixtures repeat one templated message
    # hundreds of times ("Message 487: Here's my response about logging"), which no
    # retrieval can tell apart.
    real = [p for p in sorted(CORPUS.rglob("*.jsonl")) if "real_projects" in p.parts or "projects" in p.parts]
    for source in real:
        size = source.stat().st_size
        if size < 20_000 or total + size > limit_bytes:
            continue
        target = conversations / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        total += size
    files = sorted(conversations.rglob("*.jsonl"))
    settings = bench_settings(work, conversations, **overrides)
    engine = Engine(settings)
    await engine.open("bench-real-quality")
    try:
        await ingest_all(engine, files)
    finally:
        await engine.close()
    result = await recall_at_k(settings, files, queries)
    result.update(files=len(files), bytes=total, settings={k: str(v) for k, v in overrides.items()})
    (HERE / "real_quality.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-max-tokens", type=int)
    parser.add_argument("--chunk-overlap-tokens", type=int)
    from ingestd.logs import configure_logging

    configure_logging("WARNING", "json")
    chosen = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    sys.exit(asyncio.run(main(**chosen)))
