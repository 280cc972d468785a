"""What the ledger holds: a file's record, its status, and what the transitions are given.

Plain dataclasses, apart from the SQLite code, so the pipeline's stages and the pure plan can
use them without touching storage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ingestd.ledger_db import COLUMNS, key_bytes


class Status(StrEnum):
    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    DELETED = "deleted"
    FORGOTTEN = "forgotten"


FAILURES = frozenset({Status.SKIPPED, Status.FAILED, Status.QUARANTINED})


@dataclass(slots=True)
class FileRecord:
    kind: str
    status: Status = Status.PENDING
    reason: str | None = None
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    head_len: int = 0
    head_fp: str = ""
    tail_fp: str = ""
    offset: int = 0  # bytes consumed: the end of the last complete line read
    resume_offset: int = 0  # where the first chunk not yet stored begins
    resume_ordinal: int = 0
    resume_line: int = 1
    generation: int = 0
    chunks: int = 0
    attempts: int = 0
    redactions: int = 0
    reingest: bool = False  # retried by name: read again from scratch, under a new generation
    updated_at: float = field(default_factory=time.time)

    def signature(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)

    def row(self, key: str) -> tuple[Any, ...]:
        values = [getattr(self, name) for name in COLUMNS]
        values[COLUMNS.index("status")] = str(self.status)
        values[COLUMNS.index("reingest")] = int(self.reingest)
        return (key_bytes(key), *values)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> FileRecord:
        record = cls(**dict(zip(COLUMNS, row[1:], strict=True)))
        record.status = Status(record.status)
        record.reingest = bool(record.reingest)
        return record

    @classmethod
    def from_legacy(cls, data: Mapping[str, Any]) -> FileRecord:
        """A record as today's state.json held it (unknown fields ignored, as that store did)."""
        record = cls(**{name: data[name] for name in COLUMNS if name in data})
        record.status = Status(record.status)
        return record


@dataclass(frozen=True, slots=True)
class ResumePoint:
    offset: int
    ordinal: int
    line: int


@dataclass(frozen=True, slots=True)
class Final:
    """What a finished pass learned, written by `done`."""

    offset: int
    head_len: int
    head_fp: str
    tail_fp: str
    chunks: int
    resume_offset: int | None
    resume_ordinal: int | None
    redactions: int


@dataclass(slots=True)
class OpenReport:
    source: str  # "ledger", "migrated", "new"
    problem: str | None = None
    migrated: int = 0
