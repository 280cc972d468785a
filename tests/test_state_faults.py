"""State-file faults: truncated or corrupt state, a full disk, two daemons on one state folder.

A lost state is recovered from `state.json.bak`, or else rebuilt from what Qdrant holds (every
point carries its file, generation and ordinal); either way nothing is embedded twice, which
CountingProvider measures (with the embedding cache off, so that re-embedding is seen). A
failed write leaves the previous state byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CountingProvider, Events, make_settings, run_cli, start_cli, subprocess_env
from generators import markdown_document, write_transcript
from ingestd.engine import Engine
from ingestd.pipeline import FileJob
from ingestd.settings import Settings


def _corpus(settings: Settings) -> list[Path]:
    paths = []
    for index in range(3):
        path = settings.conversations_dirs[0] / "p" / f"s{index}.jsonl"
        write_transcript(path, seed=70 + index, exchanges=3)
        paths.append(path)
    for index in range(2):
        path = settings.documents_dirs[0] / f"d{index}.md"
        path.write_text(markdown_document(70 + index, 3))
        paths.append(path)
    return paths


async def _ingest_all(engine: Engine, paths: list[Path]) -> dict[str, str]:
    statuses = {}
    for path in paths:
        result = await engine.submit(path)
        if isinstance(result, FileJob):
            await result.done.wait()
            result = result.outcome
        assert result is not None
        statuses[path.name] = result.status
    return statuses


async def _first_pass(
    settings: Settings, counting: CountingProvider
) -> tuple[list[Path], int, dict[str, int]]:
    paths = _corpus(settings)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    assert set((await _ingest_all(engine, paths)).values()) == {"done"}
    points = {kind: await engine.store.count(kind) for kind in ("conversations", "documents")}
    engine.save_state()
    await engine.close()  # saves again: state.json and state.json.bak are both good
    assert settings.state_file.exists() and (settings.state_dir / "state.json.bak").exists()
    return paths, len(counting.texts), points


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong-shape"])
async def test_damaged_state_recovers_from_backup(
    tmp_path: Path, counting: CountingProvider, events: Events, damage: str
) -> None:
    settings = make_settings(tmp_path, embed_cache_max_entries=0)
    paths, embedded, points = await _first_pass(settings, counting)
    data = settings.state_file.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "garbage": os.urandom(256),
        "wrong-shape": json.dumps({"version": 1, "files": []}).encode(),
    }[damage]
    settings.state_file.write_bytes(damaged)

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        warning = [e for e in events() if e["event"] == "state.recovered"]
        assert len(warning) == 1 and warning[0]["source"] == "backup" and warning[0]["level"] == "warning"
        assert "state.json unreadable" in warning[0]["reason"]
        await _ingest_all(engine, paths)
        assert len(counting.texts) == embedded, "recovery re-embedded stored chunks"
        assert {engine.state.get(str(p)).status for p in paths} == {"done"}  # type: ignore[union-attr]
        assert {k: await engine.store.count(k) for k in points} == points
        # The corrupt file was moved aside, so the next write cannot make it the backup.
        aside = list(settings.state_dir.glob("state.json.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_bytes() == damaged
        engine.save_state()
        backup = json.loads((settings.state_dir / "state.json.bak").read_text())
        assert {str(p) for p in paths} <= set(backup["files"]), "the good backup was overwritten"
    finally:
        await engine.close()
    settings.state_file.write_bytes(b"{")  # damaged again: the backup still holds everything
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        assert {engine.state.get(str(p)).status for p in paths} == {"done"}  # type: ignore[union-attr]
    finally:
        await engine.close()


async def test_lost_state_and_backup_rebuilt_from_qdrant(
    tmp_path: Path, counting: CountingProvider, events: Events
) -> None:
    settings = make_settings(tmp_path, embed_cache_max_entries=0)
    paths, embedded, points = await _first_pass(settings, counting)
    settings.state_file.write_bytes(b'{"version": 1, "files": {"/x": ')
    (settings.state_dir / "state.json.bak").write_bytes(b"\x00" * 64)

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        logged = events()
        recovered = [e for e in logged if e["event"] == "state.recovered"]
        assert recovered and recovered[0]["source"] == "new" and recovered[0]["outcome"] == "rebuilt"
        rebuilt = [e for e in logged if e["event"] == "state.rebuilt"]
        assert rebuilt and rebuilt[0]["files"] == len(paths)
        assert {engine.state.get(str(p)).status for p in paths} == {"pending"}  # type: ignore[union-attr]
        statuses = await _ingest_all(engine, paths)
        assert set(statuses.values()) == {"done"}, statuses
        assert len(counting.texts) == embedded, "a rebuilt state must not re-embed what Qdrant holds"
        assert {k: await engine.store.count(k) for k in points} == points
        again = await _ingest_all(engine, paths)
        assert set(again.values()) == {"unchanged"}
    finally:
        await engine.close()


async def test_enospc_keeps_previous_state(
    tmp_path: Path, engine: Engine, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert engine._flusher is not None
    engine._flusher.cancel()  # the test writes the state itself: a periodic flush would race it
    with contextlib.suppress(asyncio.CancelledError):
        await engine._flusher
    doc = engine.settings.documents_dirs[0] / "a.md"
    doc.write_text("# A\n\nSomething worth keeping.\n")
    await _ingest_all(engine, [doc])
    engine.save_state()
    before = engine.state.path.read_bytes()
    doc2 = engine.settings.documents_dirs[0] / "b.md"
    doc2.write_text("# B\n\nWritten while the disk is full.\n")
    await _ingest_all(engine, [doc2])

    def full(_: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("ingestd.state.os.fsync", full)
    engine.save_state()  # must not raise
    assert engine.state.path.read_bytes() == before, "the previous state must stay intact"
    assert engine.state.dirty, "still dirty: the next flush tries again"
    assert not list(engine.state.dir.glob(".state.json.*.tmp")), "the partial temporary file is removed"
    failed = [e for e in events() if e["event"] == "state.write_failed"]
    assert failed and "No space left on device" in failed[0]["error"] and failed[0]["level"] == "error"
    monkeypatch.undo()
    engine.save_state()
    assert str(doc2) in json.loads(engine.state.path.read_text())["files"]


def test_second_daemon_refuses_to_start(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path)
    first = start_cli(env, "run", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        info = tmp_path / "state" / "daemon.json"
        deadline = time.monotonic() + 90
        while not info.exists() and time.monotonic() < deadline:
            assert first.poll() is None
            time.sleep(0.1)
        announced = info.read_text()
        second = run_cli(env, "run", cwd=tmp_path, timeout=120)
        assert second.returncode == 3, (second.returncode, second.stderr)
        assert (
            "is in use by daemon pid" in second.stderr and "one ingestd per state directory" in second.stderr
        )
        assert str(first.pid) in second.stderr
        assert first.poll() is None, "the first daemon keeps running"
        assert info.read_text() == announced, "the refused daemon must not touch daemon.json"
        status = run_cli(env, "status", "--json", cwd=tmp_path, timeout=120)
        assert status.returncode == 0 and "files" in json.loads(status.stdout), status.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


async def test_deleted_state_is_rebuilt_from_qdrant_without_stale_generations(
    tmp_path: Path, counting: CountingProvider, events: Events
) -> None:
    """Someone deletes state.json and its backup: the files' generations come back from Qdrant,
    so a file rewritten once (generation 1) is not re-ingested as generation 0 beside its points."""
    settings = make_settings(tmp_path, embed_cache_max_entries=0)
    paths, embedded, points = await _first_pass(settings, counting)
    rewritten = paths[0]
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    write_transcript(rewritten, seed=99, exchanges=3)  # a new head: a rewrite, generation 1
    assert (await _ingest_all(engine, [rewritten]))[rewritten.name] == "done"
    points = {kind: await engine.store.count(kind) for kind in points}
    embedded = len(counting.texts)
    await engine.close()
    settings.state_file.unlink()
    (settings.state_dir / "state.json.bak").unlink()

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        rebuilt = [e for e in events() if e["event"] == "state.rebuilt"]
        assert rebuilt and rebuilt[0]["files"] == len(paths)
        record = engine.state.get(str(rewritten))
        assert record is not None and record.generation == 1
        assert set((await _ingest_all(engine, paths)).values()) == {"done"}
        assert len(counting.texts) == embedded, "nothing Qdrant holds is embedded again"
        assert {k: await engine.store.count(k) for k in points} == points, "no stale generation"
    finally:
        await engine.close()
