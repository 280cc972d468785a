"""`ingestd import`: a one-shot backfill with a progress bar, sharing the daemon's pipeline."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingestd.discovery import scan
from ingestd.engine import Engine
from ingestd.logs import get_logger
from ingestd.pipeline import FileJob
from ingestd.settings import OpsSettings, Settings
from ingestd.supervision import we_are_cancelled
from ingestd.system import STOP_SIGNALS

log = get_logger(__name__)


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


@dataclass
class Tally:
    candidates: int = 0
    looked_at: int = 0  # files with a final answer: ingested, unchanged, refused, failed
    jobs: list[FileJob] = field(default_factory=list)
    stopped_by: signal.Signals | None = None


async def run_import(settings: Settings, paths: list[Path], kind: str | None) -> int:
    """Exit 0, 1 if a file failed, or 128 + the signal's number after SIGINT or SIGTERM: the
    batch in flight is then settled and the state written, so the same command resumes."""
    engine = Engine(settings)
    engine.roots = engine.roots + _roots_for(paths, kind, engine)
    await engine.open("import")
    try:
        tally = await _import(engine, paths)
    finally:
        await engine.close()  # a stopped import's jobs are released as pending here
    return _report(tally, settings.ops)


async def _import(engine: Engine, paths: list[Path]) -> Tally:
    settings = engine.settings.ops
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
    tally = Tally(candidates=len(candidates))
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
                tally.jobs.append(result)
                await engine.pipeline.settled(result)
                if result.outcome is not None and result.outcome.status == "pending":
                    return
            tally.looked_at += 1
            progress.update(task, advance=1, description=path.name[:40])

        tally.stopped_by = await _unless_stopped(asyncio.gather(*(one(path) for path in candidates)))
    return tally


async def _unless_stopped(work: Awaitable[object]) -> signal.Signals | None:
    """Run `work` to its end, or until SIGINT or SIGTERM cancels it; returns that signal.
    A second signal meets the default handlers again: a user who insists is not kept waiting."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not received or we_are_cancelled():
            raise
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return received[0] if received else None


def _report(tally: Tally, settings: OpsSettings) -> int:
    outcomes = Counter(job.outcome.status for job in tally.jobs if job.outcome)
    embedded = sum(job.embedded for job in tally.jobs)
    failed = outcomes["failed"] + outcomes["quarantined"]
    summary = (
        f"imported {outcomes['done']} files ({embedded} chunks embedded), "
        f"{outcomes['skipped']} skipped, {failed} failed"
    )
    if tally.stopped_by is None:
        print(f"{summary}, {tally.candidates - len(tally.jobs)} unchanged or refused", file=sys.stderr)
        return 1 if failed else 0
    left = tally.candidates - tally.looked_at
    log.warning(
        "import.interrupted",
        path=str(settings.state_dir),
        signal=tally.stopped_by.name,
        files_left=left,
        outcome="interrupted",
    )
    print(
        f"interrupted by {tally.stopped_by.name}: {summary}; {left} files not finished: "
        "run the same command again to resume",
        file=sys.stderr,
    )
    return 128 + tally.stopped_by.value
