"""The ledger at 100,000 tracked files, against the JSON state file it replaced, in one run.

Usage: .venv/bin/python bench/ledger.py [--files 100000] [--samples 2000] [--out PATH]

Per file commit: one `acknowledged` (a batch of one file's chunks stored) and one `done`, each
timed alone on a random file of the full ledger. RSS growth is the daemon's process before the
ledger was opened against after it was filled and used (records are not held in Python). The
JSON figure is what every flush of the old StateStore cost: all records as dicts in memory,
json.dumps of the lot, write, fsync, rename (a minimal copy of that write path, kept here only
for this comparison).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ingestd.ledger import FileRecord, Final, Ledger, ResumePoint, Status
from ingestd.system import release_memory, rss_mb


def _record(index: int) -> FileRecord:
    return FileRecord(
        kind="conversations" if index % 3 else "documents",
        status=Status.DONE,
        size=40_000 + index,
        mtime_ns=1_717_000_000_000_000_000 + index,
        ctime_ns=1_717_000_000_000_000_000 + index,
        inode=1_000_000 + index,
        head_len=4096,
        head_fp=f"{index:032x}",
        tail_fp=f"{index * 7:032x}",
        offset=40_000 + index,
        resume_offset=39_000 + index,
        resume_ordinal=40,
        resume_line=120,
        generation=index % 4,
        chunks=41,
    )


def _key(index: int) -> str:
    return f"/home/user/.claude/projects/-home-user-src-project-{index % 500:03}/{index:08x}-session.jsonl"


def _settled_rss() -> float:
    gc.collect()
    release_memory()
    return rss_mb()


def _quantiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"median_ms": round(statistics.median(ms), 4), "p95_ms": round(ms[int(len(ms) * 0.95)], 4)}


def measure_ledger(directory: Path, files: int, samples: int) -> dict[str, Any]:
    before = _settled_rss()
    ledger = Ledger(directory)
    ledger.lock("bench")
    ledger.open()
    started = time.perf_counter()
    for start in range(0, files, 1000):
        ledger.rebuilt({_key(i): _record(i) for i in range(start, min(files, start + 1000))})
    fill_s = time.perf_counter() - started
    rng = random.Random(5)
    acked, done = [], []
    for _ in range(samples):
        key = _key(rng.randrange(files))
        t0 = time.perf_counter()
        ledger.acknowledged({key: (ResumePoint(39_500, 41, 130), 42)})
        t1 = time.perf_counter()
        ledger.done(key, Final(40_100, 4096, "h" * 32, "t" * 32, 42, 39_500, 41, 0))
        t2 = time.perf_counter()
        acked.append(t1 - t0)
        done.append(t2 - t1)
    summary_s = time.perf_counter()
    counts = ledger.summary()
    summary_s = time.perf_counter() - summary_s
    after = _settled_rss()
    ledger.close()
    ledger.unlock()
    size = sum(p.stat().st_size for p in directory.glob("ledger.db*"))
    assert sum(counts.values()) == files
    return {
        "files": files,
        "acknowledged": _quantiles(acked),
        "done": _quantiles(done),
        "rss_growth_mb": round(after - before, 1),
        "db_mb": round(size / 2**20, 1),
        "fill_s": round(fill_s, 2),
        "summary_ms": round(summary_s * 1000, 1),
    }


def measure_json(directory: Path, files: int, rounds: int = 5) -> dict[str, Any]:
    """The old StateStore: every record in memory, and the whole document rewritten per flush."""
    before = _settled_rss()
    held = {_key(i): _record(i) for i in range(files)}
    grown = _settled_rss() - before
    path = directory / "state.json"
    seconds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        body = {"version": 1, "meta": {}, "files": {k: _as_json(r) for k, r in held.items()}}
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        tmp = directory / ".state.json.tmp"
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        seconds.append(time.perf_counter() - t0)
        del body, data
    return {
        "files": files,
        "save": _quantiles(seconds),
        "rss_growth_mb": round(grown, 1),
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }


def _as_json(record: FileRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FileRecord.__slots__}


def ledger_against_json(files: int, samples: int) -> dict[str, Any]:
    """Both measured in this one run, so the ratio between them is fair."""
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        ledger = measure_ledger(Path(tmp) / "ledger", files, samples)
        legacy = measure_json(Path(tmp), files)
    return {
        "ledger": ledger,
        "json_state": legacy,
        "targets": {"commit_median_ms": 1.0, "rss_growth_mb": 20},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = ledger_against_json(args.files, args.samples)
    ledger, legacy = result["ledger"], result["json_state"]
    rows = [
        (
            "ledger: acknowledged, one file",
            f"{ledger['acknowledged']['median_ms']:.3f} ms",
            f"p95 {ledger['acknowledged']['p95_ms']:.3f} ms",
        ),
        (
            "ledger: done, one file",
            f"{ledger['done']['median_ms']:.3f} ms",
            f"p95 {ledger['done']['p95_ms']:.3f} ms",
        ),
        ("ledger: RSS growth", f"{ledger['rss_growth_mb']} MB", "target <= 20 MB"),
        ("ledger: on disk", f"{ledger['db_mb']} MB", f"summary query {ledger['summary_ms']} ms"),
        (
            "state.json: one flush (all files)",
            f"{legacy['save']['median_ms']:.1f} ms",
            f"p95 {legacy['save']['p95_ms']:.1f} ms",
        ),
        ("state.json: RSS of the records", f"{legacy['rss_growth_mb']} MB", f"file {legacy['file_mb']} MB"),
    ]
    print(f"{args.files:,} tracked files")
    for name, value, note in rows:
        print(f"  {name:<36} {value:>12}   {note}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
