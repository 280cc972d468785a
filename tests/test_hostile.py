"""Hostile inputs, one test per kind (tests/hostile_corpus.py), against the real model and Qdrant.

For each kind: the engine survives, logs one event that names the file (and the reason when
it is refused), records the file in the state (and so in `status`), and a control transcript
and a control document ingested at the same time come out exactly as they would alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import ingestd.reader
import ingestd.stages.read
from conftest import CountingProvider, Events, make_settings, run_cli, start_cli, subprocess_env
from generators import markdown_document, write_transcript
from hostile_corpus import KINDS, MB, Kind, Options, build, permission_denied, swap_body
from ingestd.engine import Engine
from ingestd.pipeline import FileJob, Outcome
from ledger_view import ledger_records

FILE_EVENTS = ("file.ingested", "file.skipped", "file.failed", "file.quarantined", "file.deleted")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")  # an image's data, not prose
RSS_CEILING_MB = 1024  # OPERATIONAL_MEMORY_MB's default: the model, ONNX arenas, bounded buffers


_CONTROL_TEXTS: dict[str, list[tuple[int, str]]] = {}  # the controls never change: compared once


def _cases() -> list[Any]:
    return [pytest.param(kind, id=kind.name) for kind in KINDS]


async def _settle(result: FileJob | Outcome | None) -> Outcome | None:
    if isinstance(result, FileJob):
        await result.done.wait()
        return result.outcome
    return result


async def ingest(engine: Engine, path: Path) -> Outcome | None:
    return await _settle(await engine.submit(path))


def _hook_reads(monkeypatch: pytest.MonkeyPatch, target: Path, kind: Kind) -> list[int]:
    """Strike the file after the reader has yielded its first line (a real read in progress)."""
    original = ingestd.reader.read_lines  # what the read stage calls, kept to delegate to
    struck: list[int] = []
    action = kind.during_read
    assert action is not None

    async def read_lines(path: Path, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        armed = Path(path) == target and (kind.every_read or not struck)
        async for line in original(path, *args, **kwargs):
            yield line
            if armed:
                armed = False
                struck.append(1)
                await asyncio.to_thread(action, target)

    monkeypatch.setattr(ingestd.stages.read, "read_lines", read_lines)
    return struck


async def _controls(engine: Engine) -> tuple[Path, Path]:
    transcript = engine.settings.watch.conversations_dirs[0] / "control" / "ctl.jsonl"
    write_transcript(transcript, seed=99, exchanges=1)
    document = engine.settings.watch.documents_dirs[0] / "control" / "ctl.md"
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(markdown_document(99, 1))
    return transcript, document


async def _texts(engine: Engine, kind: str, path: Path) -> list[tuple[int, str]]:
    rows = await engine.store.scroll_all(kind, ["path", "ordinal", "text"])
    return sorted((int(p["ordinal"]), str(p["text"])) for _, p in rows if p["path"] == str(path))


async def _clean_texts(engine: Engine, kind: str, path: Path) -> list[tuple[int, str]]:
    """What a clean ingest of the file's current bytes stores (under another name)."""
    twin = path.with_name("twin-" + path.name)
    twin.write_bytes(path.read_bytes())
    assert (await ingest(engine, twin)) is not None
    return await _texts(engine, kind, twin)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", _cases())
async def test_hostile_kind(
    kind: Kind,
    tmp_path: Path,
    counting: CountingProvider,
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    if kind.name == "permission_denied" and os.geteuid() == 0:
        _permission_denied_as_root(tmp_path)
        return
    # Small read blocks, so that a strike after the first line meets bytes not yet read.
    settings = make_settings(tmp_path, read_block_bytes=4096 if kind.during_read else 64 * 1024)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        await _run_kind(engine, kind, monkeypatch, events)
    finally:
        await engine.close()


async def _run_kind(
    engine: Engine,
    kind: Kind,
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    watch = engine.settings.watch.documents_dirs[0].parent
    options = Options(tiny_files=10_000, big_bytes=100 * MB)
    target = build(watch, options, only=[kind.name])[kind.name]
    struck = _hook_reads(monkeypatch, target, kind) if kind.during_read else []
    control_transcript, control_document = await _controls(engine)

    # Everything at once, as a daemon's readers would take them.
    paths = sorted(target.iterdir()) if kind.name == "ten_thousand_tiny_files" else [target]
    semaphore = asyncio.Semaphore(engine.settings.ops.file_concurrency)

    async def one(path: Path) -> Outcome | None:
        async with semaphore:
            result = await engine.submit(path)
        return await _settle(result)

    started = time.monotonic()
    outcomes = await asyncio.wait_for(
        asyncio.gather(one(control_transcript), one(control_document), *(one(p) for p in paths)), 600
    )
    elapsed = time.monotonic() - started
    assert all(o is not None for o in outcomes), outcomes

    # The controls are untouched by their hostile neighbour: what a lone, clean ingest stores.
    for path, kind_name in ((control_transcript, "conversations"), (control_document, "documents")):
        record = engine.ledger.get(str(path))
        assert record is not None and record.status == "done", (path, record)
        if kind_name not in _CONTROL_TEXTS:
            _CONTROL_TEXTS[kind_name] = await _clean_texts(engine, kind_name, path)
        assert await _texts(engine, kind_name, path) == _CONTROL_TEXTS[kind_name]

    if kind.during_read:
        assert struck, "the hook never struck: the file was not read through the reader"
    logged = events()
    for path in paths[:50]:
        _check_recorded(engine, kind, path, logged)
    status = await engine.status()  # `ingestd status` is this dictionary, printed
    assert status["files"].get("done", 0) >= 2
    if kind.status not in ("done", "absent"):
        listed = {entry["path"]: entry for entry in status["problems"].get(kind.status, [])}
        assert str(target) in listed, status["problems"]
        assert kind.reason.lower() in str(listed[str(target)]["reason"]).lower()
    await _kind_specific(engine, kind, target, paths, logged)
    if kind.name == "ten_thousand_tiny_files":
        assert elapsed < 1500, f"10,000 tiny files took {elapsed:.0f}s"
        assert sum(1 for e in logged if e["event"] == "file.ingested") >= len(paths)
        assert engine.ledger.summary().get("done", 0) >= len(paths)

    health = await engine.store.ping()
    assert health, "the store must still answer"


def _check_recorded(engine: Engine, kind: Kind, path: Path, logged: list[dict[str, Any]]) -> None:
    record = engine.ledger.get(str(path))
    assert record is not None, f"{path!s} not recorded in the state"
    assert record.status == kind.status, (record.status, record.reason)
    if kind.reason and kind.event.startswith("file.") and kind.status != "done":
        assert kind.reason.lower() in (record.reason or "").lower(), record.reason
    mine = [e for e in logged if e.get("path") == str(path)]
    file_events = [e for e in mine if e["event"] in FILE_EVENTS]
    assert len(file_events) == 1, f"expected one file event for {path!s}, got {file_events}"
    named = [e for e in mine if e["event"] == kind.event]
    assert named, f"no {kind.event} event for {path!s}: {[e['event'] for e in mine]}"
    if kind.reason:
        assert any(kind.reason.lower() in str(e.get("reason", "")).lower() for e in named), named
    assert all("outcome" in e for e in mine)


async def _kind_specific(
    engine: Engine, kind: Kind, target: Path, paths: list[Path], logged: list[dict[str, Any]]
) -> None:
    name = kind.name
    if name in ("utf16_with_bom", "utf16_without_bom"):
        texts = await _texts(engine, "documents", target)
        assert texts and ("lighthouse" in texts[0][1] or "harbour crane" in texts[0][1]), texts
    elif name == "base64_image_5mb":
        texts = await _texts(engine, "conversations", target)
        runs = [run for _, text in texts for run in _BASE64_RUN.findall(text)]
        assert texts and not runs, f"base64 stored: {[run[:40] for run in runs[:3]]}"
        assert any("screenshot of the failing page" in text for _, text in texts), "its caption is kept"
    elif name == "transcript_last_line_without_newline":
        record = engine.ledger.get(str(target))
        assert record is not None and record.offset < target.stat().st_size
        assert all("never finished" not in t for _, t in await _texts(engine, "conversations", target))
    elif name in ("document_without_final_newline", "cr_only_line_endings"):
        joined = " ".join(t for _, t in await _texts(engine, "documents", target))
        assert "apricot harvest" in joined or "No LF anywhere" in joined, joined
    elif name == "truncated_while_read":
        # The next pass (the watcher's event or the reconcile scan) makes Qdrant match the file.
        assert (await ingest(engine, target)) is not None
        assert await _texts(engine, "conversations", target) == await _clean_texts(
            engine, "conversations", target
        )
    elif name == "deleted_while_read":
        outcome = await ingest(engine, target)
        assert outcome is not None and outcome.status == "deleted"
    elif name == "changes_on_every_read":
        second = await ingest(engine, target)  # changes again: still a bounded pass
        assert second is not None and second.status == "done"
    elif name == "replaced_same_size_and_mtime":
        before = target.stat()
        with target.open("r+b") as handle:  # same inode, same size; only ctime moves
            handle.write(swap_body(1))
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = target.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        outcome = await ingest(engine, target)
        assert outcome is not None and outcome.status == "done"
        joined = " ".join(t for _, t in await _texts(engine, "documents", target))
        assert "pelican" in joined and "walrus" not in joined
    elif name == "fifo" or name == "character_device":
        assert target.exists()  # never opened: a blocking open would have hung this test
    elif name == "symlink_outside_root":
        rows = await engine.store.scroll_all("documents", ["text"])
        assert all("outside the watched roots" not in str(p["text"]) for _, p in rows)


def _drop_dac_capabilities() -> None:
    """In the child before exec: root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _permission_denied_as_root(tmp_path: Path) -> None:
    """Root reads any file whatever its mode, so the import runs without the two capabilities
    that let it (dropped from the bounding set before exec). Running as `nobody` is not possible
    here: the interpreter lives under /root. Patching open() instead would skip the real path,
    where stat succeeds and only the open fails."""
    docs, conv, state = tmp_path / "docs", tmp_path / "conv", tmp_path / "state"
    for folder in (docs, conv, state):
        folder.mkdir()
    (docs / "readable.md").write_text("# Open\n\nEveryone may read this note about herons.\n")
    locked = permission_denied(docs, Options())
    env = subprocess_env(tmp_path, HOME=str(state))
    result = run_cli(env, "import", cwd=tmp_path, preexec_fn=_drop_dac_capabilities)
    logged = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode in (0, 1), result.stderr[-2000:]  # not a crash
    assert "imported 1 files" in result.stderr, result.stderr[-2000:]
    mine = [e for e in logged if e.get("path") == str(locked)]
    failed = [e for e in mine if e["event"] in FILE_EVENTS]
    assert [e["event"] for e in failed] == ["file.failed"], mine
    assert "permission denied" in failed[0]["reason"], mine
    records = ledger_records(state)
    assert records[str(locked)].status == "failed"
    assert "permission denied" in (records[str(locked)].reason or "")
    assert records[str(docs / "readable.md")].status == "done"


def test_rss_stays_bounded_over_the_whole_corpus(tmp_path: Path) -> None:
    """`ingestd import` over every kind at once, its RSS sampled from outside."""
    corpus = tmp_path / "corpus"
    build(corpus, Options(tiny_files=200, big_bytes=100 * MB))
    state = tmp_path / "state"
    env = subprocess_env(
        tmp_path,
        CONVERSATIONS_DIRS=str(corpus / "conversations"),
        DOCUMENTS_DIRS=str(corpus / "documents"),
        STATE_DIR=str(state),
        HOME=str(state),
    )
    process = start_cli(env, "import", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        handle = psutil.Process(process.pid)
        while not done.is_set():
            try:
                peak[0] = max(peak[0], handle.memory_info().rss / 1e6)
            except psutil.Error:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=400)
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    sampler.join(5)
    assert process.returncode in (0, 1), stderr.decode(errors="replace")[-3000:]
    logged = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    assert not [e for e in logged if e["event"] == "file.error"], "no file may escape the pipeline's handling"
    assert b"imported" in stderr
    assert 0 < peak[0] < RSS_CEILING_MB, f"peak RSS {peak[0]:.0f} MB"
    statuses = {path: record.status for path, record in ledger_records(state).items()}
    assert sum(1 for s in statuses.values() if s == "done") >= 200
    print(f"peak RSS {peak[0]:.0f} MB over {len(statuses)} files")
