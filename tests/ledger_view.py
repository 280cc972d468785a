"""Read a state directory's ledger from a test, as `sqlite3` would: read-only, no lock.

The daemon under test may hold the lock and be writing; WAL lets a reader see the last commit.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from ingestd.ledger import FileRecord
from ingestd.ledger_db import COLUMNS, key_bytes, key_text
from ingestd.paths import LEDGER_FILE


def _connect(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{state_dir / LEDGER_FILE}?mode=ro", uri=True)


def ledger_records(state_dir: Path) -> dict[str, FileRecord]:
    """Every record, by key ({} when there is no ledger yet)."""
    if not (state_dir / LEDGER_FILE).exists():
        return {}
    with closing(_connect(state_dir)) as conn:
        rows = conn.execute(f"SELECT path, {', '.join(COLUMNS)} FROM files").fetchall()
    return {key_text(row[0]): FileRecord.from_row(row) for row in rows}


def ledger_record(state_dir: Path, key: str) -> FileRecord | None:
    with closing(_connect(state_dir)) as conn:
        row = conn.execute(
            f"SELECT path, {', '.join(COLUMNS)} FROM files WHERE path = ?", (key_bytes(key),)
        ).fetchone()
    return FileRecord.from_row(row) if row else None


def ledger_readable(state_dir: Path) -> bool:
    """Whether the ledger opens and passes SQLite's quick check (what a kill must never break)."""
    try:
        with closing(_connect(state_dir)) as conn:
            return [row[0] for row in conn.execute("PRAGMA quick_check")] == ["ok"]
    except sqlite3.DatabaseError:
        return False
