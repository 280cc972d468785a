"""Measurements of ingestd running as a separate process (`ingestd import` / `ingestd run`)."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from corpus import document, dumps, write_transcript
from procs import MODEL_DIR, DaemonProc, Proc, ingestd_env, load_average
from tokenizers import Tokenizer

from ingestd.ledger_db import key_bytes
from ingestd.paths import LEDGER_FILE

BENCH = Path(__file__).resolve().parent


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def dirs(work: Path) -> tuple[Path, Path, Path]:
    """(state, conversations, documents) under a fresh `work`."""
    fresh(work)
    return work / "state", fresh(work / "conversations"), fresh(work / "documents")


def drop(path: Path, content: bytes, staging: Path) -> None:
    """Write a file the way editors and `cp` into a watched folder end up: complete, then renamed in."""
    staging.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = staging / path.name
    temp.write_bytes(content)
    os.replace(temp, path)


# --- 2. corpus throughput -------------------------------------------------------------------
def corpus_import(work: Path, corpus: Path) -> dict[str, Any]:
    """`ingestd import` of the whole corpus in a subprocess, timed from spawn to exit."""
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    documents = fresh(work / "documents")
    files = sorted(corpus.rglob("*.jsonl"))
    size = sum(path.stat().st_size for path in files)
    load = load_average()
    proc = Proc(["import"], ingestd_env(state, corpus, documents), work / "import.log", interval=0.25)
    code = proc.wait()
    seconds = time.monotonic() - proc.started
    events = proc.events("file.ingested")
    chunks = sum(int(event.get("embedded", 0)) for event in events)
    distinct = _cached_vectors(state)
    return {
        "cache_distinct_vectors": distinct,
        "cache_hit_rate": round(1 - distinct / chunks, 4) if distinct is not None and chunks else None,
        "exit_code": code,
        "files": len(files),
        "files_done": len(events),
        "bytes": size,
        "seconds": round(seconds, 1),
        "chunks": chunks,
        "files_per_min": round(len(events) / seconds * 60, 1),
        "chunks_per_s": round(chunks / seconds, 1),
        "mb_per_min": round(size / 1e6 / seconds * 60, 2),
        "peak_rss_mb": round(proc.sampler.peak, 1),
        "rss_trace": _thin(proc.sampler.samples, 400),
        "load_before": load,
        "load_after": load_average(),
        "state_dir": str(state),
    }


def _cached_vectors(state: Path) -> int | None:
    """Rows in the embedding cache: the texts the model embedded (no eviction below the cap)."""
    import sqlite3

    found = sorted((state / "cache").glob("*.sqlite"))
    if not found:
        return None
    with sqlite3.connect(found[0]) as db:
        return int(db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])


def _thin(samples: list[tuple[float, float]], keep: int) -> list[tuple[float, float]]:
    step = max(1, len(samples) // keep)
    return [(round(t, 2), round(mb, 1)) for t, mb in samples[::step]]


# --- 3 + 4. appends and drop-to-searchable, in one running daemon ---------------------------
def appends_and_drops(
    work: Path, transcript_bytes: int, live_appends: int, spaced_appends: int, drops: int
) -> dict[str, Any]:
    state, conversations, documents = dirs(work)
    path = conversations / "-home-dev-live" / "5a1e0f6c-0000-4000-8000-000000000001.jsonl"
    session = write_transcript(path, 4242, transcript_bytes, "-home-dev-live")
    env = ingestd_env(state, conversations, documents, EMBED_IDLE_UNLOAD_SECONDS=0)
    daemon = DaemonProc(env, work / "daemon.log")
    try:
        ready = daemon.wait_ready()
        started = time.monotonic()
        daemon.wait_idle(1)
        base = {
            "transcript_bytes": path.stat().st_size,
            "initial_ingest_s": round(time.monotonic() - started, 1),
            "initial_chunks": int(daemon.metrics().get("ingestd_chunks_embedded_total", 0)),
            "ready_s": round(ready, 2),
        }
        appended = _live_appends(daemon, path, session, live_appends, spaced_appends)
        dropped = _drops(daemon, documents, work / "staging", drops)
        cache = {k: v for k, v in daemon.metrics().items() if "cache" in k and not k.endswith("_created")}
    finally:
        daemon.stop()
    return {"append": {**base, **appended}, "drop": dropped, "cache_metrics": cache}


def _settle(daemon: DaemonProc, quiet: float = 0.8) -> None:
    """Until nothing is queued or in flight and the embedded count stayed put for `quiet` seconds."""
    last, since = -1.0, time.monotonic()
    while True:
        health = daemon.get_json("/health")
        count = daemon.metrics().get("ingestd_chunks_embedded_total", 0.0)
        busy = health.get("files_in_flight", 1) or health.get("queue_depth", 1)
        if busy or count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def _live_appends(daemon: DaemonProc, path: Path, session: Any, live: int, spaced: int) -> dict[str, Any]:
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    rng = random.Random(99)
    before = daemon.metrics()
    passes_before = len(daemon.events("file.ingested"))
    tokens: list[int] = []
    with path.open("ab") as handle:
        for _ in range(live):
            line = session.reply()
            tokens.append(len(tokenizer.encode("assistant: " + line["message"]["content"][0]["text"]).ids))
            handle.write(dumps(line))
            handle.flush()
            time.sleep(rng.uniform(0.05, 0.2))
    _settle(daemon)
    after = daemon.metrics()
    passes = daemon.events("file.ingested")[passes_before:]
    live_chunks = after["ingestd_chunks_embedded_total"] - before["ingestd_chunks_embedded_total"]
    per_append: list[float] = []
    latencies: list[float] = []
    with path.open("ab") as handle:
        for _ in range(spaced):
            done = daemon.metrics().get("ingestd_files_total:done", 0.0)
            count = daemon.metrics()["ingestd_chunks_embedded_total"]
            handle.write(dumps(session.reply()))
            handle.flush()
            wrote = time.monotonic()
            while daemon.metrics().get("ingestd_files_total:done", 0.0) <= done:
                if time.monotonic() - wrote > 30:
                    raise TimeoutError("append not ingested")
                time.sleep(0.02)
            latencies.append(time.monotonic() - wrote)
            per_append.append(daemon.metrics()["ingestd_chunks_embedded_total"] - count)
            time.sleep(0.3)
    return {
        "live_appends": live,
        "live_spacing_ms": [50, 200],
        "live_passes": len(passes),
        "live_chunks_embedded": int(live_chunks),
        "live_chunks_per_append_mean": round(live_chunks / live, 3),
        "live_chunks_per_pass_max": max((int(p.get("embedded", 0)) for p in passes), default=0),
        "live_model_texts": int(
            after.get("ingestd_embed_cache_misses_total", live_chunks)
            - before.get("ingestd_embed_cache_misses_total", 0)
        ),
        "message_tokens_mean": round(statistics.mean(tokens), 1),
        "message_tokens_max": max(tokens),
        "spaced_appends": spaced,
        "spaced_chunks_per_append_mean": round(statistics.mean(per_append), 3) if per_append else None,
        "spaced_chunks_per_append_max": int(max(per_append)) if per_append else None,
        "spaced_append_to_done_s_p50": round(statistics.median(latencies), 3) if latencies else None,
    }


def _drops(daemon: DaemonProc, documents: Path, staging: Path, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    polls: list[int] = []
    for index in range(count):
        text, probe = document(10_000 + index)
        target = documents / f"drop-{index:03d}.md"
        drop(target, text.encode(), staging)
        dropped, tries = time.monotonic(), 0
        while True:
            tries += 1
            hits = daemon.search(probe, "documents", 5)
            if any(str(hit.get("path", "")).endswith(target.name) for hit in hits):
                latencies.append(time.monotonic() - dropped)
                break
            if time.monotonic() - dropped > 30:
                latencies.append(float("inf"))
                break
            time.sleep(0.01)
        polls.append(tries)
        time.sleep(0.3)
    ordered = sorted(latencies)
    return {
        "documents": count,
        "p50_s": round(_quantile(ordered, 0.5), 3),
        "p95_s": round(_quantile(ordered, 0.95), 3),
        "max_s": round(ordered[-1], 3),
        "latencies_s": [round(x, 3) for x in latencies],
        "searches_per_document_mean": round(statistics.mean(polls), 1),
        "watch_debounce_ms": 200,
    }


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- 5. RSS soak ----------------------------------------------------------------------------
def soak(work: Path, total: int, step: int = 100) -> dict[str, Any]:
    state, conversations, documents = dirs(work)
    daemon = DaemonProc(
        ingestd_env(state, conversations, documents, EMBED_IDLE_UNLOAD_SECONDS=0), work / "d.log"
    )
    samples: list[tuple[int, float, float, int, float]] = []  # files, RSS MB, s, points, store MB
    try:
        daemon.wait_ready()
        started = time.monotonic()
        for batch in range(total // step):
            for index in range(batch * step, (batch + 1) * step):
                text, _ = document(index, tiny=True)
                drop(
                    documents / f"{index // 1000:02d}" / f"note-{index:05d}.md", text.encode(), work / "stage"
                )
            daemon.wait_idle((batch + 1) * step, poll=0.1)
            rss = statistics.median(_rss_samples(daemon, 5, 0.1))
            stored = sum(n or 0 for n in daemon.api("status", {}).get("points", {}).values())
            seconds = round(time.monotonic() - started, 1)
            store_mb = round(daemon.sampler.children_rss(), 1)
            samples.append(((batch + 1) * step, round(rss, 1), seconds, stored, store_mb))
        points = daemon.api("status", {}).get("points", {})
    finally:
        daemon.stop()
    first = next(i for i, (files, *_) in enumerate(samples) if files >= min(500, total))
    at500, end = samples[first][1], samples[-1][1]
    tail = [(f, mb) for f, mb, *_ in samples if f >= 500]
    slope = _slope(tail) * 1000 if len(tail) > 1 else 0.0
    return {
        "files": total,
        "rss_at_500_mb": at500,
        "rss_end_mb": end,
        "growth_500_to_end_pct": round(100 * (end - at500) / at500, 2),
        "slope_mb_per_1000_files": round(slope, 2),
        "store_process_at_500_mb": samples[first][4],
        "store_process_end_mb": samples[-1][4],
        "peak_rss_mb": round(daemon.sampler.peak, 1),
        "seconds": samples[-1][2],
        "files_per_s": round(total / samples[-1][2], 1),
        "points": points,
        "samples": samples,
    }


def _rss_samples(daemon: DaemonProc, count: int, interval: float) -> list[float]:
    out = []
    for _ in range(count):
        out.append(daemon.sampler.rss() or 0.0)
        time.sleep(interval)
    return out


def _slope(points: list[tuple[int, float]]) -> float:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


# --- 6. one large transcript ----------------------------------------------------------------
def large_file(work: Path, size: int, window: float) -> dict[str, Any]:
    """The same generated file under the default allocator and with a fixed mmap threshold."""
    staging = fresh(work / "source")
    generated = time.monotonic()
    source = staging / "6b1f0000-0000-4000-8000-00000000beef.jsonl"
    write_transcript(source, 500, size, "-home-dev-big")
    generate_s = time.monotonic() - generated
    out: dict[str, Any] = {"generate_s": round(generate_s, 1)}
    for name, extra in (("default", {}), ("mmap_threshold", MMAP_ENV)):
        out[name] = _large_once(work / name, source, size, window, extra)
    out.update({k: v for k, v in out["default"].items() if k != "rss_trace"})
    out["rss_trace"] = out["default"]["rss_trace"]
    return out


def _large_once(work: Path, source: Path, size: int, window: float, extra: dict[str, str]) -> dict[str, Any]:
    state, conversations, documents = dirs(work)
    env = ingestd_env(
        state, conversations, documents, EMBED_IDLE_UNLOAD_SECONDS=0, PROGRESS_LOG_SECONDS=10, **extra
    )
    daemon = DaemonProc(env, work / "daemon.log")
    try:
        daemon.wait_ready()
        daemon.search("warm up the model", None, 1)
        time.sleep(3)
        baseline = statistics.median(_rss_samples(daemon, 5, 0.1))
        store_before = daemon.sampler.children_rss()
        target = conversations / "-home-dev-big" / source.name
        target.parent.mkdir(parents=True)
        os.link(source, target)
        since = time.monotonic() - daemon.sampler.started
        time.sleep(window)
        peak = daemon.sampler.peak_since(since)
        store_after = daemon.sampler.children_rss()
        metrics = daemon.metrics()
        offset = _committed_offset(state, str(target))
    finally:
        daemon.stop()
    chunks = int(metrics.get("ingestd_chunks_embedded_total", 0))
    return {
        "store_process_growth_mb": round(store_after - store_before, 1),
        "file_bytes": size,
        "environment": extra,
        "window_s": window,
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_minus_baseline_mb": round(peak - baseline, 1),
        "chunks_embedded_in_window": chunks,
        "bytes_committed_in_window": offset,
        "fraction_committed": round(offset / size, 4),
        "extrapolated_full_ingest_min": round(window / max(offset, 1) * size / 60, 1),
        "rss_trace": [
            (round(t - since, 1), mb) for t, mb in _thin(daemon.sampler.samples, 600) if t >= since - 5
        ],
    }


def _committed_offset(state: Path, key: str) -> int:
    """Where the file's first chunk not yet stored begins, read from the running daemon's ledger
    (read-only: WAL lets it see the last commit while the daemon writes)."""
    try:
        with closing(sqlite3.connect(f"file:{state / LEDGER_FILE}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT resume_offset FROM files WHERE path = ?", (key_bytes(key),)).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


# --- 7. cold start and idle unload ----------------------------------------------------------
def cold_start_and_idle(work: Path, idle_seconds: int = 5) -> dict[str, Any]:
    """Cold start, then the idle unload twice: dormant (the default) and IDLE_DORMANT=false."""
    result = _idle_run(work / "dormant", idle_seconds, dormant=True)
    awake = _idle_run(work / "awake", idle_seconds, dormant=False)
    result["awake_after_unload"] = {k: awake[k] for k in ("rss_after_unload_mb", "uss_after_unload_mb")}
    result["import_floor_mb"] = import_floor()
    return result


def _idle_run(work: Path, idle_seconds: int, dormant: bool) -> dict[str, Any]:
    state, conversations, documents = dirs(work)
    text, probe = document(777)
    (documents / "first.md").write_text(text)
    env = ingestd_env(
        state, conversations, documents, EMBED_IDLE_UNLOAD_SECONDS=idle_seconds, IDLE_DORMANT=dormant
    )
    daemon = DaemonProc(env, work / "daemon.log")
    try:
        ready = daemon.wait_ready()
        rss_ready = daemon.sampler.rss() or 0.0
        while not any(hit.get("path", "").endswith("first.md") for hit in daemon.search(probe, "documents")):
            time.sleep(0.02)
        first = time.monotonic() - daemon.started
        loaded_rss = daemon.sampler.rss() or 0.0
        deadline = time.monotonic() + 6 * idle_seconds + 40
        while not _asleep(daemon, dormant) and time.monotonic() < deadline:
            time.sleep(0.25)
        unloaded_after = time.monotonic() - daemon.started - first
        time.sleep(2)
        idle_rss = statistics.median(daemon.sampler.rss() or 0.0 for _ in range(5))
        idle_uss = daemon.sampler.process.memory_full_info().uss / 1e6
        unloaded = _asleep(daemon, dormant)
        woken = _wake_by_a_drop(daemon, documents) if dormant and unloaded else None
    finally:
        daemon.stop()
    return {
        "ready_s": round(ready, 2),
        "first_searchable_s": round(first, 2),
        "rss_loaded_mb": round(loaded_rss, 1),
        "idle_unload_seconds": idle_seconds,
        "dormant": dormant,
        "unloaded": unloaded,
        "unloaded_after_s": round(unloaded_after, 1),
        "rss_after_unload_mb": round(idle_rss, 1),
        "uss_after_unload_mb": round(idle_uss, 1),
        "rss_at_ready_mb": round(rss_ready, 1),
        **({"drop_while_dormant_to_searchable_s": woken} if woken is not None else {}),
    }


def _asleep(daemon: DaemonProc, dormant: bool) -> bool:
    """Model unloaded, and when dormancy is on, the small image is the one answering."""
    try:
        if daemon.metrics().get("ingestd_model_loaded", 1) != 0:
            return False
        return not dormant or daemon.get_json("/health").get("dormant") is True
    except OSError:  # the port is closed for a moment while the image is replaced
        return False


def _wake_by_a_drop(daemon: DaemonProc, documents: Path) -> float:
    """Seconds from dropping a note into a dormant daemon's folder until a search returns it."""
    text, probe = document(778)
    started = time.monotonic()
    (documents / "second.md").write_text(text)
    while time.monotonic() - started < 120:
        try:
            if any(h.get("path", "").endswith("second.md") for h in daemon.search(probe, "documents")):
                return round(time.monotonic() - started, 2)
        except OSError:  # waking: 503, or the port closed during the re-exec
            pass
        time.sleep(0.05)
    raise TimeoutError("the note dropped into a dormant daemon never became searchable")


def import_floor() -> dict[str, float]:
    """RSS of a fresh interpreter after one import: the floor under any idle daemon."""
    out = {}
    for module in (
        "sys",
        "numpy",
        "onnxruntime",
        "fastembed",
        "qdrant_client",
        "ingestd.daemon",
        "ingestd.dormant",
    ):
        code = f"import {module}, psutil; print(psutil.Process().memory_info().rss / 1e6)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out[module] = round(float(result.stdout.strip()), 1)
    return out


# --- 9. raw FastEmbed sweep -----------------------------------------------------------------
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc: big blocks always mmapped, freed to the OS


def sweep(tokens: int, threads: int) -> list[dict[str, Any]]:
    """Every chunk × batch size with the arena off and on; chunk 128 with a fixed glibc mmap threshold."""
    out = []
    variants: tuple[tuple[str, int, dict[str, str]], ...] = (
        ("arena off", 0, {}),
        ("arena on", 1, {}),
        ("arena off + mmap", 0, MMAP_ENV),
    )
    for variant, arena, extra in variants:
        for chunk in (64, 128, 256) if extra == {} else (128,):
            for batch in (4, 8, 16, 32, 64):
                result = subprocess.run(
                    [
                        sys.executable,
                        str(BENCH / "rawembed.py"),
                        *map(str, (chunk, batch, arena, tokens, threads)),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=str(BENCH),
                    env={**os.environ, "PYTHONPATH": str(BENCH), **extra},
                )
                row = json.loads(result.stdout.strip().splitlines()[-1])
                row["variant"] = variant
                row["load"] = load_average()
                out.append(row)
                print(
                    f"  sweep {variant} chunk={chunk} batch={batch}: {row['tokens_per_s']} tok/s, "
                    f"peak {row['peak_rss_mb']} MB",
                    flush=True,
                )
    return out


def arena_ab(tokens: int, threads: int, rounds: int = 3) -> list[dict[str, Any]]:
    """Arena off and on alternately at chunk 128 / batch 32 (the defaults), to cancel load drift."""
    out = []
    for index in range(rounds):
        for arena in (0, 1):
            result = subprocess.run(
                [sys.executable, str(BENCH / "rawembed.py"), *map(str, (128, 32, arena, tokens, threads))],
                capture_output=True,
                text=True,
                check=True,
                cwd=str(BENCH),
                env={**os.environ, "PYTHONPATH": str(BENCH)},
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row.pop("varied_trace_mb", None)
            row.update(round=index, load=load_average())
            out.append(row)
            print(
                f"  a/b arena={arena}: {row['tokens_per_s']} tok/s, peak {row['peak_rss_mb']} MB", flush=True
            )
    return out
