"""`ingestd import`: a one-shot backfill with a progress bar, sharing the daemon's pipeline."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingestd.discovery import scan
from ingestd.engine import Engine
from ingestd.pipeline import FileJob
from ingestd.settings import Settings


def _roots_for(paths: list[Path], kind: str | None, engine: Engine) -> list[tuple[str, Path]]:
    """Paths inside a watched root keep its kind; others become roots of their own."""
    extra: list[tuple[str, Path]] = []
    for path in paths:
        resolved = Path(path).expanduser().absolute()
        if any(resolved == root or root in resolved.parents for _, root in engine.roots):
            continue
        guessed = kind or (
            "conversations"
            if resolved.suffix == ".jsonl" or (resolved.is_dir() and any(resolved.rglob("*.jsonl")))
            else "documents"
        )
        extra.append((guessed, resolved if resolved.is_dir() else resolved.parent))
    return extra


async def run_import(settings: Settings, paths: list[Path], kind: str | None) -> int:
    engine = Engine(settings)
    engine.roots = engine.roots + _roots_for(paths, kind, engine)
    await engine.open("import")
    try:
        if paths:
            wanted = [p.expanduser().absolute() for p in paths]
            candidates = [
                p
                for p in scan(engine.roots, exclude=settings.state_dir.resolve())
                if any(p == w or w in p.parents for w in wanted)
            ]
            engine.readd(candidates)  # naming a forgotten file is how it is re-added
        else:
            candidates = list(scan(engine.roots, exclude=settings.state_dir.resolve()))
        jobs: list[FileJob] = []
        columns = (
            TextColumn("[bold]import"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
        )
        with Progress(*columns, disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("", total=len(candidates))
            semaphore = asyncio.Semaphore(settings.file_concurrency)

            async def one(path: Path) -> None:
                async with semaphore:
                    result = await engine.submit(path)
                if isinstance(result, FileJob):
                    jobs.append(result)
                    await engine.pipeline.settled(result)
                progress.update(task, advance=1, description=path.name[:40])

            await asyncio.gather(*(one(path) for path in candidates))
        outcomes = Counter(job.outcome.status for job in jobs if job.outcome)
        embedded = sum(job.embedded for job in jobs)
        failed = outcomes["failed"] + outcomes["quarantined"]
        print(
            f"imported {outcomes['done']} files ({embedded} chunks embedded), "
            f"{outcomes['skipped']} skipped, {failed} failed, "
            f"{len(candidates) - len(jobs)} unchanged or refused",
            file=sys.stderr,
        )
        return 1 if failed else 0
    finally:
        await engine.close()
