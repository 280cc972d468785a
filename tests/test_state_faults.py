"""Ledger faults: a damaged or lost ledger, today's state.json to migrate, two daemons on one
state folder.

A damaged ledger is set aside and rebuilt from what Qdrant holds (every point carries its file,
generation and ordinal); a state.json written by the JSON store is imported. Either way nothing
is embedded twice, which CountingProvider measures (with the embedding cache off, so that
re-embedding is seen). Failed writes (a full disk, EIO) are tested on the ledger itself in
test_ledger.py.
"""

from __future__ import annotations

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
from ingestd.ledger_db import COLUMNS
from ingestd.pipeline import FileJob
from ingestd.settings import Settings
from ledger_view import ledger_records


def _corpus(settings: Settings) -> list[Path]:
    paths = []
    for index in range(3):
        path = settings.watch.conversations_dirs[0] / "p" / f"s{index}.jsonl"
        write_transcript(path, seed=70 + index, exchanges=3)
        paths.append(path)
    for index in range(2):
        path = settings.watch.documents_dirs[0] / f"d{index}.md"
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
    await engine.close()
    assert (settings.ops.state_dir / "ledger.db").exists()
    return paths, len(counting.texts), points


def _as_state_json(settings: Settings) -> bytes:
    """The ledger's records as the JSON store wrote them (tests/fixtures/state-v1.json's shape)."""
    files = {
        key: {name: getattr(record, name) for name in COLUMNS}
        for key, record in ledger_records(settings.ops.state_dir).items()
    }
    for path in settings.ops.state_dir.glob("ledger.db*"):
        path.unlink()
    return json.dumps({"version": 1, "meta": {}, "files": files}, separators=(",", ":")).encode()


@pytest.mark.parametrize("backup_only", [False, True])
async def test_state_json_is_migrated_and_nothing_is_embedded_again(
    tmp_path: Path, counting: CountingProvider, events: Events, backup_only: bool
) -> None:
    """An installation of the JSON store upgrades: its records come over as they were."""
    settings = make_settings(tmp_path, embed_cache_max_entries=0)
    paths, embedded, points = await _first_pass(settings, counting)
    before = ledger_records(settings.ops.state_dir)
    legacy = _as_state_json(settings)
    if backup_only:  # state.json damaged, its backup good
        (settings.ops.state_dir / "state.json").write_bytes(legacy[: len(legacy) // 2])
        (settings.ops.state_dir / "state.json.bak").write_bytes(legacy)
    else:
        (settings.ops.state_dir / "state.json").write_bytes(legacy)

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        migrated = [e for e in events() if e["event"] == "state.migrated"]
        assert len(migrated) == 1 and migrated[0]["files"] == len(paths)
        recovered = [e for e in events() if e["event"] == "state.recovered"]
        assert bool(recovered) == backup_only
        assert not [e for e in events() if e["event"] == "state.rebuilt"], "migrated, not rebuilt"
        assert {key: record.generation for key, record in before.items()} == {
            key: record.generation for key, record in ledger_records(settings.ops.state_dir).items()
        }
        statuses = await _ingest_all(engine, paths)
        assert set(statuses.values()) == {"unchanged"}, statuses
        assert len(counting.texts) == embedded, "the migration re-embedded stored chunks"
        assert {k: await engine.store.count(k) for k in points} == points
    finally:
        await engine.close()
    assert (
        settings.ops.state_dir / ("state.json.bak.migrated" if backup_only else "state.json.migrated")
    ).exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "damaged-page"])
async def test_damaged_ledger_is_rebuilt_from_qdrant(
    tmp_path: Path, counting: CountingProvider, events: Events, damage: str
) -> None:
    settings = make_settings(tmp_path, embed_cache_max_entries=0)
    paths, embedded, points = await _first_pass(settings, counting)
    db = settings.ops.state_dir / "ledger.db"
    data = db.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "garbage": os.urandom(8192),
        "damaged-page": data[:4096] + os.urandom(4096) + data[8192:],
    }[damage]
    db.write_bytes(damaged)

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        logged = events()
        recovered = [e for e in logged if e["event"] == "state.recovered"]
        assert len(recovered) == 1 and recovered[0]["source"] == "new" and recovered[0]["level"] == "warning"
        assert recovered[0]["outcome"] == "rebuilt" and "ledger.db unreadable" in recovered[0]["reason"]
        rebuilt = [e for e in logged if e["event"] == "state.rebuilt"]
        assert rebuilt and rebuilt[0]["files"] == len(paths)
        assert {engine.ledger.get(str(p)).status for p in paths} == {"pending"}  # type: ignore[union-attr]
        statuses = await _ingest_all(engine, paths)
        assert set(statuses.values()) == {"done"}, statuses
        assert len(counting.texts) == embedded, "a rebuilt ledger must not re-embed what Qdrant holds"
        assert {k: await engine.store.count(k) for k in points} == points
        aside = [
            p
            for p in settings.ops.state_dir.glob("ledger.db.corrupt-*")
            if not p.name.endswith(("-wal", "-shm"))
        ]
        assert [p.read_bytes() for p in aside] == [damaged], "the damaged file is kept for inspection"
        again = await _ingest_all(engine, paths)
        assert set(again.values()) == {"unchanged"}
    finally:
        await engine.close()


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
    """Someone deletes the ledger: the files' generations come back from Qdrant,
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
    for path in settings.ops.state_dir.glob("ledger.db*"):
        path.unlink()

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        rebuilt = [e for e in events() if e["event"] == "state.rebuilt"]
        assert rebuilt and rebuilt[0]["files"] == len(paths)
        record = engine.ledger.get(str(rewritten))
        assert record is not None and record.generation == 1
        assert set((await _ingest_all(engine, paths)).values()) == {"done"}
        assert len(counting.texts) == embedded, "nothing Qdrant holds is embedded again"
        assert {k: await engine.store.count(k) for k in points} == points, "no stale generation"
    finally:
        await engine.close()
