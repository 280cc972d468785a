"""The ledger's SQLite file: schema, opening with its checks, setting a corrupt one aside, and
reading the state.json it replaces.

Kept apart from `ledger` so that the transitions read as the ledger's vocabulary, and the
storage details (pragmas, versions, the legacy JSON) live in one place.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestd.errors import ConfigError

SCHEMA_VERSION = 1
LEGACY_VERSION = 1  # the state.json format this release migrates
COLUMNS = (
    "kind",
    "status",
    "reason",
    "size",
    "mtime_ns",
    "ctime_ns",
    "inode",
    "head_len",
    "head_fp",
    "tail_fp",
    "offset",
    "resume_offset",
    "resume_ordinal",
    "resume_line",
    "generation",
    "chunks",
    "attempts",
    "redactions",
    "reingest",
    "updated_at",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,          -- the file's name as the OS gives it (bytes: not always UTF-8)
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    inode INTEGER NOT NULL DEFAULT 0,
    head_len INTEGER NOT NULL DEFAULT 0,
    head_fp TEXT NOT NULL DEFAULT '',
    tail_fp TEXT NOT NULL DEFAULT '',
    offset INTEGER NOT NULL DEFAULT 0,
    resume_offset INTEGER NOT NULL DEFAULT 0,
    resume_ordinal INTEGER NOT NULL DEFAULT 0,
    resume_line INTEGER NOT NULL DEFAULT 1,
    generation INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    redactions INTEGER NOT NULL DEFAULT 0,
    reingest INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_status ON files (status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class Unreadable(Exception):
    """The database file is damaged (not SQLite, truncated, or failing its quick check)."""


def key_bytes(key: str) -> bytes:
    """A state key as stored: the OS's bytes (names that are not UTF-8 carry surrogate escapes)."""
    return key.encode("utf-8", "surrogateescape")


def key_text(stored: bytes) -> str:
    return stored.decode("utf-8", "surrogateescape")


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) and check the ledger; raises Unreadable if it is damaged."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{path} was written by a newer ingestd (ledger version {version}); upgrade ingestd"
            )
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise Unreadable(f"quick_check: {'; '.join(problems)[:100]}")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise Unreadable(f"{type(exc).__name__}: {str(exc)[:100]}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def set_aside(path: Path) -> Path:
    """Move a damaged file (a database with its WAL and shared-memory files, or an old
    state.json) out of the way, kept for inspection, so a fresh one can take its place."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


@dataclass(slots=True)
class Legacy:
    """What the old state files held, and what became of each file."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # the file the records came from
    problem: str | None = None  # why a file could not be used


def read_legacy(state_dir: Path) -> Legacy | None:
    """state.json, or its .bak when state.json is damaged; None when neither exists.

    A damaged file is renamed `.corrupt-<time>` (as the old store did); one that cannot be read
    at all (EIO, EACCES) is left where it is.
    """
    found = Legacy()
    candidates = [state_dir / "state.json", state_dir / "state.json.bak"]
    if not any(path.exists() for path in candidates):
        return None
    for path in candidates:
        if not path.exists():
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            found.problem = f"{path.name} unreadable ({type(exc).__name__}: {str(exc)[:100]})"
            continue
        try:
            body = json.loads(data.decode("utf-8"))
            if not isinstance(body, dict) or body.get("version") != LEGACY_VERSION:
                version = body.get("version") if isinstance(body, dict) else "?"
                raise ValueError(f"unsupported state version {version}")
            files = body["files"]
            if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
                raise TypeError("files is not a mapping of records")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            found.problem = f"{path.name} unreadable ({type(exc).__name__}: {str(exc)[:100]})"
            with contextlib.suppress(OSError):
                set_aside(path)
            continue
        found.files, found.meta, found.source = files, dict(body.get("meta") or {}), path
        return found
    return found


def retire_legacy(state_dir: Path) -> None:
    """After the import committed: the JSON files are kept beside the ledger, never read again."""
    for name in ("state.json", "state.json.bak"):
        path = state_dir / name
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(f"{name}.migrated"))
