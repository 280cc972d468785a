"""The file ledger: per file, how far its text has been stored in Qdrant, in SQLite.

Every change to a record is one of the transitions below, and each is one small transaction,
so nothing is rewritten in proportion to the number of files and no record lives in Python
beyond the passes in flight (the JSON state it replaces cost ~1.5 KB a file and was rewritten
whole every second).

Durability. The database runs in WAL mode with `synchronous=NORMAL`: a commit appends its pages
to the WAL through the OS (no fsync), and the WAL is fsynced only at checkpoints (SQLite's
automatic one, every 1,000 pages). A SIGKILL loses nothing that was committed, since the pages
are already in the kernel. A power loss or OS crash may roll the ledger back to the last
checkpoint, never corrupt it: WAL frames carry checksums and a torn tail is discarded. Rolled
back, the ledger lags Qdrant, which is the safe direction: records only advance after Qdrant
acknowledged the points they describe, and the next pass over a file re-acknowledges what
Qdrant already holds (by text digest) without embedding it again. FULL would buy nothing but
an fsync per commit on the event loop.

A write that fails (disk full, I/O error) rolls back: the previous record stays as it was. The
transitions raise LedgerUnwritable then, except `acknowledged`, which logs and goes on (a lagging
resume point is safe, and the next batch writes absolute values again).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingestd.errors import LedgerUnwritable
from ingestd.ledger_db import (
    COLUMNS,
    Unreadable,
    connect,
    key_bytes,
    key_text,
    read_legacy,
    retire_legacy,
    set_aside,
)
from ingestd.ledger_lock import DirectoryLock
from ingestd.ledger_records import FAILURES, FileRecord, Final, OpenReport, ResumePoint, Status
from ingestd.logs import get_logger
from ingestd.paths import LEDGER_FILE

__all__ = ["FileRecord", "Final", "Ledger", "OpenReport", "ResumePoint", "Status"]
log = get_logger("ingestd.ledger")
PAGE = 512  # records per query while streaming them (no cursor is held across a caller's work)
_SELECT = f"SELECT path, {', '.join(COLUMNS)} FROM files"
_UPSERT = (
    f"INSERT OR REPLACE INTO files (path, {', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)


class Ledger:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / LEDGER_FILE
        self._lock = DirectoryLock(state_dir)
        self._conn: sqlite3.Connection | None = None
        self._mutex = threading.RLock()  # the watcher's scan reads from a worker thread

    # --- the directory lock ----------------------------------------------------------------
    def lock(self, owner: str = "daemon") -> None:
        self._lock.lock(owner)

    def unlock(self) -> None:
        self._lock.unlock()

    def hand_off_lock(self) -> None:
        """Keep the lock held through exec() (see DirectoryLock.hand_off)."""
        self._lock.hand_off()

    @property
    def handed_off_lock(self) -> Any:
        return self._lock.handed_off

    # --- opening -------------------------------------------------------------------------
    def open(self, repair: bool = True) -> OpenReport:
        """Open the ledger; on first start import state.json; set a damaged database aside.

        With repair=False (the dormant image, which never writes) a missing or damaged ledger
        is only reported, as source "new", and the ledger stays closed.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        if not existed and not repair:
            return OpenReport("new")
        problem = None
        try:
            conn = connect(self.path)
        except Unreadable as exc:
            if not repair:
                return OpenReport("new", f"{self.path.name} unreadable ({exc})")
            aside = set_aside(self.path)
            problem = f"{self.path.name} unreadable ({exc}); set aside as {aside.name}"
            conn, existed = connect(self.path), False
        self._conn = conn
        if existed:
            if self.meta().get("migrated_from") is not None:
                retire_legacy(self.dir)  # killed between the import's commit and the renames
            return OpenReport("ledger", problem)
        legacy = read_legacy(self.dir)
        if legacy is None or legacy.source is None:
            return OpenReport("new", problem or (legacy.problem if legacy else None))
        records = {key: FileRecord.from_legacy(data) for key, data in legacy.files.items()}
        with self._transaction(str(legacy.source)) as cur:
            cur.executemany(_UPSERT, (record.row(key) for key, record in records.items()))
            self._write_meta(cur, {**legacy.meta, "migrated_from": legacy.source.name})
        retire_legacy(self.dir)
        log.info(
            "state.migrated",
            path=str(legacy.source),
            files=len(records),
            reason=legacy.problem,
            outcome="migrated",
        )
        return OpenReport("migrated", legacy.problem or problem, len(records))

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{self.path}: the ledger is not open")
        return self._conn

    @contextmanager
    def _transaction(self, key: str) -> Iterator[sqlite3.Cursor]:
        """One transaction, rolled back whole on any error; a storage error is logged with the
        file it concerned and becomes LedgerUnwritable."""
        with self._mutex:
            cur = self.conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:
                    self.conn.rollback()
                if isinstance(exc, sqlite3.Error):
                    log.error(
                        "ledger.write_failed",
                        path=key,
                        ledger=str(self.path),
                        error=f"{type(exc).__name__}: {exc}",
                        outcome="kept previous record",
                    )
                    raise LedgerUnwritable(f"{self.path}: {key}: {exc}") from exc
                raise
            finally:
                cur.close()

    # --- reads ---------------------------------------------------------------------------
    def get(self, key: str) -> FileRecord | None:
        with self._mutex:
            row = self.conn.execute(f"{_SELECT} WHERE path = ?", (key_bytes(key),)).fetchone()
        return FileRecord.from_row(row) if row else None

    def records(self) -> Iterator[tuple[str, FileRecord]]:
        """Every record, a page at a time: the caller may write between pages."""
        after = b""
        while True:
            with self._mutex:
                rows = self.conn.execute(
                    f"{_SELECT} WHERE path > ? ORDER BY path LIMIT {PAGE}", (after,)
                ).fetchall()
            for row in rows:
                yield key_text(row[0]), FileRecord.from_row(row)
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def summary(self) -> dict[str, int]:
        with self._mutex:
            rows = self.conn.execute("SELECT status, count(*) FROM files GROUP BY status").fetchall()
        return {status: count for status, count in rows}

    def problems(self, statuses: Iterable[Status], limit: int = 1000) -> list[dict[str, Any]]:
        """The files in these statuses, most recently changed first (for `ingestd status`)."""
        wanted = [str(status) for status in statuses]
        with self._mutex:
            rows = self.conn.execute(
                "SELECT path, status, reason, attempts, updated_at FROM files "
                f"WHERE status IN ({', '.join('?' * len(wanted))}) ORDER BY updated_at DESC LIMIT ?",
                (*wanted, limit),
            ).fetchall()
        return [
            {
                "path": key_text(path),
                "status": status,
                "reason": reason,
                "attempts": attempts,
                "updated_at": at,
            }
            for path, status, reason, attempts, at in rows
        ]

    def redactions(self) -> dict[str, int]:
        with self._mutex:
            rows = self.conn.execute("SELECT path, redactions FROM files WHERE redactions > 0").fetchall()
        return {key_text(path): count for path, count in rows}

    def __len__(self) -> int:
        with self._mutex:
            return int(self.conn.execute("SELECT count(*) FROM files").fetchone()[0])

    def meta(self) -> dict[str, Any]:
        with self._mutex:
            rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def set_meta(self, **values: Any) -> None:
        with self._transaction(str(self.path)) as cur:
            self._write_meta(cur, values)

    @staticmethod
    def _write_meta(cur: sqlite3.Cursor, values: Mapping[str, Any]) -> None:
        cur.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(key, json.dumps(value)) for key, value in values.items()],
        )

    # --- transitions ---------------------------------------------------------------------
    def begin(self, key: str, record: FileRecord) -> None:
        """A pass starts: the record (pending, its new signature, generation, head) as given."""
        record.updated_at = time.time()
        with self._transaction(key) as cur:
            cur.execute(_UPSERT, record.row(key))

    def acknowledged(self, progress: Mapping[str, tuple[ResumePoint, int]]) -> None:
        """Qdrant holds these chunks: per file its new resume point and chunk count."""
        now = time.time()
        rows = [
            (point.offset, point.ordinal, point.line, chunks, now, key_bytes(key))
            for key, (point, chunks) in progress.items()
        ]
        try:
            with self._transaction(", ".join(progress)) as cur:
                cur.executemany(
                    "UPDATE files SET resume_offset = ?, resume_ordinal = ?, resume_line = ?, "
                    "chunks = max(chunks, ?), updated_at = ? WHERE path = ?",
                    rows,
                )
        except LedgerUnwritable:
            pass  # logged; the ledger lags Qdrant, and the next batch writes absolute values

    def done(self, key: str, final: Final) -> FileRecord:
        with self._transaction(key) as cur:
            cur.execute(
                "UPDATE files SET status = ?, reason = NULL, attempts = 0, offset = ?, head_len = ?, "
                "head_fp = ?, tail_fp = ?, chunks = ?, resume_offset = coalesce(?, resume_offset), "
                "resume_ordinal = coalesce(?, resume_ordinal), redactions = ?, updated_at = ? "
                "WHERE path = ?",
                (
                    str(Status.DONE),
                    final.offset,
                    final.head_len,
                    final.head_fp,
                    final.tail_fp,
                    final.chunks,
                    final.resume_offset,
                    final.resume_ordinal,
                    final.redactions,
                    time.time(),
                    key_bytes(key),
                ),
            )
            if cur.rowcount == 0:
                raise KeyError(key)
        return self._must_get(key)

    def failed(self, key: str, kind: str, status: Status, reason: str) -> FileRecord:
        """SKIPPED, FAILED or QUARANTINED, one attempt more; a file never seen gets a record."""
        if status not in FAILURES:
            raise ValueError(f"{status!r} is not a failure status")
        with self._transaction(key) as cur:
            cur.execute(
                "INSERT INTO files (path, kind, status, reason, attempts, updated_at) "
                "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (path) DO UPDATE SET status = excluded.status, "
                "reason = excluded.reason, attempts = attempts + 1, updated_at = excluded.updated_at",
                (key_bytes(key), kind, str(status), reason, time.time()),
            )
        return self._must_get(key)

    def abandoned(self, key: str) -> None:
        """An interrupted pass: pending, with every resume point acknowledged so far."""
        self._set_status(key, Status.PENDING, "interrupted")

    def refused(self, key: str, kind: str, reason: str) -> bool:
        """Skipped before reading (FIFO, a link outside the roots, …); False when already so."""
        with self._transaction(key) as cur:
            row = cur.execute("SELECT status, reason FROM files WHERE path = ?", (key_bytes(key),)).fetchone()
            if row is not None and row[0] == Status.SKIPPED and row[1] == reason:
                return False
            cur.execute(
                "INSERT INTO files (path, kind, status, reason, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET status = excluded.status, reason = excluded.reason, "
                "updated_at = excluded.updated_at",
                (key_bytes(key), kind, str(Status.SKIPPED), reason, time.time()),
            )
        return True

    def removed(self, key: str) -> None:
        """The file is gone and its points purged: no record remains."""
        with self._transaction(key) as cur:
            cur.execute("DELETE FROM files WHERE path = ?", (key_bytes(key),))

    def deleted(self, key: str) -> None:
        self._set_status(key, Status.DELETED, "file deleted; points kept")

    def forgotten(self, key: str) -> None:
        self._set_status(key, Status.FORGOTTEN, "forgotten on request")

    def retried(self, paths: list[str] | None) -> list[str]:
        """Make files eligible again. Named ones (done, forgotten, anything) are read again from
        scratch under a new generation (resuming would keep whatever they had); with no names,
        every failed and quarantined file resumes."""
        with self._transaction(", ".join(paths or ["(failed and quarantined)"])) as cur:
            if paths:
                found = {
                    key_text(row[0])
                    for chunk in _chunks([key_bytes(p) for p in paths], 500)
                    for row in cur.execute(
                        f"SELECT path FROM files WHERE path IN ({', '.join('?' * len(chunk))})", chunk
                    )
                }
                chosen = [path for path in dict.fromkeys(paths) if path in found]
            else:
                rows = cur.execute(
                    "SELECT path FROM files WHERE status IN (?, ?) ORDER BY path",
                    (str(Status.FAILED), str(Status.QUARANTINED)),
                ).fetchall()
                chosen = [key_text(row[0]) for row in rows]
            cur.executemany(
                "UPDATE files SET status = ?, reason = NULL, attempts = 0, reingest = ?, updated_at = ? "
                "WHERE path = ?",
                [(str(Status.PENDING), int(bool(paths)), time.time(), key_bytes(k)) for k in chosen],
            )
        return chosen

    def rebuilt(self, records: Mapping[str, FileRecord]) -> None:
        """Records reconstructed from Qdrant after the ledger was lost, in one transaction."""
        with self._transaction(str(self.path)) as cur:
            cur.executemany(_UPSERT, (record.row(key) for key, record in records.items()))

    def _set_status(self, key: str, status: Status, reason: str) -> None:
        with self._transaction(key) as cur:
            cur.execute(
                "UPDATE files SET status = ?, reason = ?, updated_at = ? WHERE path = ?",
                (str(status), reason, time.time(), key_bytes(key)),
            )

    def _must_get(self, key: str) -> FileRecord:
        record = self.get(key)
        if record is None:
            raise KeyError(key)
        return record


def _chunks(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
