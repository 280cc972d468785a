"""The SQLite ledger: transitions, migration from today's state.json, damage and full disks.

`tests/fixtures/state-v1.json` was written by the StateStore this ledger replaces (before it
was removed), so the migration is tested on what real installations hold.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import Events
from ingestd.errors import LedgerUnwritable, StateLocked
from ingestd.ledger import FileRecord, Final, Ledger, ResumePoint, Status
from ingestd.paths import LOCK_FD_ENV
from ledger_view import ledger_records

FIXTURE = Path(__file__).parent / "fixtures" / "state-v1.json"
KEY = "/watch/conversations/p/s.jsonl"


def _opened(state_dir: Path) -> Ledger:
    ledger = Ledger(state_dir)
    ledger.lock("test")
    ledger.open()
    return ledger


def _fixture_records() -> dict[str, FileRecord]:
    body = json.loads(FIXTURE.read_text())
    return {key: FileRecord.from_legacy(data) for key, data in body["files"].items()}


def test_migrates_todays_state_file_exactly(tmp_path: Path, events: Events) -> None:
    shutil.copy(FIXTURE, tmp_path / "state.json")
    ledger = Ledger(tmp_path)
    report = ledger.open()
    expected = _fixture_records()
    assert (report.source, report.problem, report.migrated) == ("migrated", None, len(expected))
    assert dict(ledger.records()) == expected  # generations, offsets, fingerprints, updated_at
    assert any("\udcc3" in key for key in expected), "the fixture holds a name that is not UTF-8"
    assert ledger.get(next(k for k in expected if "\udcc3" in k)) is not None
    assert ledger.meta()["model"].startswith("fastembed:")
    assert not (tmp_path / "state.json").exists() and (tmp_path / "state.json.migrated").exists()
    logged = [e for e in events() if e["event"] == "state.migrated"]
    assert logged and logged[0]["files"] == len(expected) and logged[0]["outcome"] == "migrated"
    ledger.close()
    again = Ledger(tmp_path)
    assert again.open().source == "ledger" and len(again) == len(expected)
    again.close()


@pytest.mark.parametrize("damage", [b"{", b"\x00" * 64, b'{"version": 1, "files": []}'])
def test_migrates_the_backup_when_state_json_is_damaged(tmp_path: Path, damage: bytes) -> None:
    (tmp_path / "state.json").write_bytes(damage)
    shutil.copy(FIXTURE, tmp_path / "state.json.bak")
    ledger = Ledger(tmp_path)
    report = ledger.open()
    assert report.source == "migrated" and report.problem and "state.json unreadable" in report.problem
    assert dict(ledger.records()) == _fixture_records()
    assert [p.read_bytes() for p in tmp_path.glob("state.json.corrupt-*")] == [damage]
    assert (tmp_path / "state.json.bak.migrated").exists()
    ledger.close()


def test_only_a_backup_is_migrated(tmp_path: Path) -> None:
    shutil.copy(FIXTURE, tmp_path / "state.json.bak")
    ledger = Ledger(tmp_path)
    assert ledger.open().source == "migrated" and dict(ledger.records()) == _fixture_records()
    ledger.close()


def test_a_kill_between_import_and_rename_does_not_import_twice(tmp_path: Path) -> None:
    shutil.copy(FIXTURE, tmp_path / "state.json")
    ledger = _opened(tmp_path)
    ledger.failed(KEY, "conversations", Status.FAILED, "since the migration")
    ledger.close()
    shutil.copy(FIXTURE, tmp_path / "state.json")  # as if the rename had not happened
    again = Ledger(tmp_path)
    assert again.open().source == "ledger"
    assert again.get(KEY) is not None and len(again) == len(_fixture_records()) + 1
    assert not (tmp_path / "state.json").exists()
    again.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "quick_check"])
def test_damaged_ledger_is_set_aside(tmp_path: Path, damage: str) -> None:
    ledger = _opened(tmp_path)
    ledger.rebuilt({f"/f{i}": FileRecord(kind="documents", reason="x" * 200) for i in range(500)})
    ledger.close()
    path = tmp_path / "ledger.db"
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(8192))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    else:  # a valid header, a damaged b-tree page
        page = 4096
        path.write_bytes(data[: 2 * page] + os.urandom(page) + data[3 * page :])
    fresh = Ledger(tmp_path)
    report = fresh.open()
    assert report.source == "new" and report.problem and "ledger.db unreadable" in report.problem
    assert len(fresh) == 0 and len(list(tmp_path.glob("ledger.db.corrupt-*"))) == 1
    fresh.close()


def test_transitions(tmp_path: Path) -> None:
    ledger = _opened(tmp_path)
    record = FileRecord(kind="conversations", size=10, head_len=10, head_fp="h", generation=2)
    ledger.begin(KEY, record)
    ledger.acknowledged({KEY: (ResumePoint(5, 3, 7), 4)})
    ledger.acknowledged({KEY: (ResumePoint(8, 4, 9), 2)})  # chunks never go back
    got = ledger.get(KEY)
    assert got is not None and (got.resume_offset, got.resume_ordinal, got.resume_line, got.chunks) == (
        8,
        4,
        9,
        4,
    )
    ledger.abandoned(KEY)
    got = ledger.get(KEY)
    assert got is not None and (got.status, got.reason, got.resume_offset) == (
        Status.PENDING,
        "interrupted",
        8,
    )
    done = ledger.done(KEY, Final(10, 10, "h", "t", 5, None, None, 2))
    assert (done.status, done.reason, done.attempts, done.offset, done.chunks) == (
        Status.DONE,
        None,
        0,
        10,
        5,
    )
    assert (done.resume_offset, done.redactions, done.generation) == (8, 2, 2)  # None keeps the resume point
    assert ledger.redactions() == {KEY: 2}
    failed = ledger.failed(KEY, "conversations", Status.QUARANTINED, "boom")
    assert (failed.status, failed.attempts) == (Status.QUARANTINED, 1)
    assert ledger.failed("/new.md", "documents", Status.SKIPPED, "empty").attempts == 1
    with pytest.raises(ValueError):
        ledger.failed(KEY, "conversations", Status.DONE, "not a failure")
    assert ledger.problems([Status.QUARANTINED]) == [
        {
            "path": KEY,
            "status": "quarantined",
            "reason": "boom",
            "attempts": 1,
            "updated_at": failed.updated_at,
        }
    ]
    assert ledger.retried(None) == [KEY]
    got = ledger.get(KEY)
    assert got is not None and (got.status, got.attempts, got.reingest) == (Status.PENDING, 0, False)
    assert ledger.retried([KEY, "/unknown"]) == [KEY] and ledger.get(KEY).reingest  # type: ignore[union-attr]
    assert ledger.refused("/fifo", "documents", "not a regular file") is True
    assert ledger.refused("/fifo", "documents", "not a regular file") is False  # logged once
    ledger.deleted(KEY)
    assert ledger.get(KEY).reason == "file deleted; points kept"  # type: ignore[union-attr]
    ledger.forgotten(KEY)
    assert ledger.get(KEY).status == Status.FORGOTTEN  # type: ignore[union-attr]
    ledger.removed(KEY)
    assert ledger.get(KEY) is None
    assert ledger.summary() == {"skipped": 2} and len(ledger) == 2
    with pytest.raises(KeyError):
        ledger.done(KEY, Final(0, 0, "", "", 0, None, None, 0))
    ledger.close()
    assert set(ledger_records(tmp_path)) == {"/new.md", "/fifo"}  # what another reader sees


def test_records_stream_across_writes(tmp_path: Path) -> None:
    ledger = _opened(tmp_path)
    ledger.rebuilt({f"/f{i:05}": FileRecord(kind="documents") for i in range(1300)})
    seen = []
    for key, _ in ledger.records():  # the watcher's scan writes between pages
        seen.append(key)
        if key.endswith("0"):
            ledger.failed(key, "documents", Status.FAILED, "x")
    assert len(seen) == 1300 and len(set(seen)) == 1300
    ledger.close()


def test_full_disk_keeps_the_previous_records(tmp_path: Path, events: Events) -> None:
    """SQLite's own SQLITE_FULL (the file may not grow), not a mock: every write rolls back."""
    ledger = _opened(tmp_path)
    ledger.begin(KEY, FileRecord(kind="conversations", generation=3))
    ledger.acknowledged({KEY: (ResumePoint(10, 1, 2), 2)})
    before = dict(ledger.records())
    pages = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
    ledger.conn.execute(f"PRAGMA max_page_count={pages}")
    many = {f"/big{i}": FileRecord(kind="documents", reason="r" * 1000) for i in range(200)}
    with pytest.raises(LedgerUnwritable):
        ledger.rebuilt(many)
    assert dict(ledger.records()) == before, "a failed write must not change any record"
    failed = [e for e in events() if e["event"] == "ledger.write_failed"]
    assert failed and "full" in failed[0]["error"] and failed[0]["outcome"] == "kept previous record"
    ledger.conn.execute("PRAGMA max_page_count=1073741823")
    ledger.rebuilt(many)
    assert len(ledger) == 201
    ledger.close()


class _FailingCursor:
    """A real cursor whose COMMIT fails with EIO, as a dying disk would make it."""

    def __init__(self, inner: sqlite3.Cursor) -> None:
        self.inner = inner

    def execute(self, sql: str, *args: Any) -> object:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.inner.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class _FailingConnection:
    def __init__(self, inner: sqlite3.Connection) -> None:
        self.inner = inner

    def cursor(self) -> _FailingCursor:
        return _FailingCursor(self.inner.cursor())

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_io_error_on_commit_keeps_the_previous_record(tmp_path: Path) -> None:
    ledger = _opened(tmp_path)
    ledger.begin(KEY, FileRecord(kind="conversations"))
    real = ledger.conn
    ledger._conn = _FailingConnection(real)  # type: ignore[assignment]
    with pytest.raises(LedgerUnwritable):
        ledger.done(KEY, Final(10, 10, "h", "t", 5, 1, 1, 0))
    ledger.acknowledged({KEY: (ResumePoint(99, 9, 9), 9)})  # logged, not raised: lagging is safe
    ledger._conn = real
    got = ledger.get(KEY)
    assert got is not None and (got.status, got.resume_offset, got.chunks) == (Status.PENDING, 0, 0)
    ledger.done(KEY, Final(10, 10, "h", "t", 5, 1, 1, 0))
    assert ledger.get(KEY).status == Status.DONE  # type: ignore[union-attr]
    ledger.close()


def test_dormant_open_repairs_nothing(tmp_path: Path) -> None:
    assert Ledger(tmp_path).open(repair=False).source == "new"
    assert not (tmp_path / "ledger.db").exists()
    (tmp_path / "ledger.db").write_bytes(b"not sqlite" * 100)
    report = Ledger(tmp_path).open(repair=False)
    assert report.source == "new" and report.problem and not list(tmp_path.glob("ledger.db.corrupt-*"))


def test_lock_is_exclusive_and_survives_a_hand_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCK_FD_ENV, raising=False)
    first = Ledger(tmp_path)
    first.lock("daemon")
    with pytest.raises(StateLocked, match="in use by daemon pid"):
        Ledger(tmp_path).lock("cli")
    first.hand_off_lock()
    adopted = Ledger(tmp_path)  # what the next image does
    adopted.lock("daemon")
    assert LOCK_FD_ENV not in os.environ
    with pytest.raises(StateLocked):
        Ledger(tmp_path).lock("cli")
    adopted.unlock()
