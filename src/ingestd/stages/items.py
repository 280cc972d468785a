"""What travels between the stages: a file's pass, its chunks, and the batches made of them.

The stages share only these types. A `FileJob` is the ticket of one pass over one file: the
read stage counts the chunks it emits, the commit stage counts those Qdrant acknowledged, and
the pass settles when the two meet after reading has ended.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from ingestd.chunker import Chunk
from ingestd.discovery import Target
from ingestd.ledger import FileRecord, Final, Status
from ingestd.parsers.transcripts import FileIdentity


@dataclass(slots=True)
class Outcome:
    """What became of one look at a file; `status` is a ledger Status or "busy"/"unchanged"."""

    path: str
    kind: str
    status: str
    reason: str | None = None
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Failure:
    status: Status
    reason: str


@dataclass(eq=False)
class FileJob:
    """One pass over one file; completes when every chunk it produced is acknowledged."""

    target: Target
    record: FileRecord  # as the pass began: generation, resume point, signature
    fresh: bool  # started from nothing (no chunk of this generation can exist yet)
    started: float = field(default_factory=time.monotonic)
    queued_at: float = field(default_factory=time.monotonic)  # the daemon sets its queue time
    emitted: int = 0
    acked: int = 0
    embedded: int = 0
    reused: int = 0
    redactions: int = 0
    chunks: int = 0  # highest ordinal acknowledged + 1, as in the ledger
    reading: bool = True
    interrupted: bool = False  # reading was stopped: settle what was emitted, stay pending
    failure: Failure | None = None
    final: Final | None = None  # what the finished read learned, for the ledger's `done`
    counts: Counter[str] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None
    bytes_read: int = 0
    identity: FileIdentity | None = None  # a transcript's project and session, for its payloads

    @property
    def key(self) -> str:
        return self.target.key

    @property
    def kind(self) -> str:
        return self.target.kind

    @property
    def live(self) -> bool:
        """Whether its chunks are still wanted: a failed pass stores nothing more."""
        return self.failure is None

    @property
    def settled(self) -> bool:
        return not self.reading and self.acked >= self.emitted

    def fail(self, status: Status, reason: str) -> None:
        """The first failure wins; nothing more will be acknowledged, so the pass settles now."""
        if self.failure is None:
            self.failure = Failure(status, reason)
            self.acked = self.emitted


@dataclass(slots=True)
class Pending:
    """A chunk on its way to the store."""

    job: FileJob
    chunk: Chunk


@dataclass(slots=True)
class EmbeddedBatch:
    """Chunks with their vectors, in the order they were read."""

    items: list[Pending]
    vectors: list[list[float]]


@dataclass(slots=True)
class StoredBatch:
    """Chunks Qdrant has acknowledged (or already held, when `reused`): ready to commit."""

    items: list[Pending]
    reused: bool = False


def stat_signature(info: os.stat_result) -> tuple[int, int, int, int]:
    """What a record compares to tell whether a file changed since its last pass."""
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def reason_label(reason: str | None) -> str:
    """A reason's kind, for a metric label: the words before any detail."""
    return (reason or "unknown").split("(")[0].split(":")[0].strip()[:40]
