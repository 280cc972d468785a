"""Vectors by text digest, on disk under `state/`, so repeated text is embedded once.

Transcripts repeat themselves (tool results, system reminders, files read twice), and a
rewritten or re-imported file repeats all of its text. One SQLite file per model fingerprint
keeps vectors of different models apart; the table is capped at EMBED_CACHE_MAX_ENTRIES and
evicts the least recently used rows. Calls are short and run in a worker thread.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from array import array
from pathlib import Path

EVICT_EVERY = 1000  # inserts between checks of the size cap


class EmbeddingCache:
    def __init__(self, directory: Path, fingerprint: str, max_entries: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest()
        self.path = directory / f"embed-cache-{name}.sqlite"
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (digest TEXT PRIMARY KEY, vector BLOB NOT NULL, used INTEGER)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS vectors_used ON vectors(used)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?)", (fingerprint,))
        self._clock = self._db.execute("SELECT COALESCE(MAX(used), 0) FROM vectors").fetchone()[0]
        self._inserts = 0

    def get_many(self, digests: list[str]) -> dict[str, list[float]]:
        if not digests:
            return {}
        with self._lock:
            marks = ",".join("?" * len(digests))
            rows = self._db.execute(
                f"SELECT digest, vector FROM vectors WHERE digest IN ({marks})", digests
            ).fetchall()
            if rows:
                self._clock += 1
                self._db.execute(
                    f"UPDATE vectors SET used = ? WHERE digest IN ({marks})", [self._clock, *digests]
                )
        return {digest: array("f", blob).tolist() for digest, blob in rows}

    def put_many(self, items: dict[str, list[float]]) -> None:
        if not items:
            return
        with self._lock:
            self._clock += 1
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(digest, array("f", vector).tobytes(), self._clock) for digest, vector in items.items()],
            )
            self._db.execute("COMMIT")
            self._inserts += len(items)
            if self._inserts >= EVICT_EVERY:
                self._inserts = 0
                self._evict()

    def _evict(self) -> None:
        count = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        excess = count - self.max_entries
        if excess > 0:
            self._db.execute(
                "DELETE FROM vectors WHERE digest IN (SELECT digest FROM vectors ORDER BY used LIMIT ?)",
                (excess,),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
