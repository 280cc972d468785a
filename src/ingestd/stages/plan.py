"""Whether a file is new, unchanged, resumed (appended to) or rewritten: the heart of appends.

`decide` is a pure function of the record, what was seen of the file now, and its kind, so the
rules are tested as a table. `observe` does the reads, and only those `decide` can need: the
stat alone settles most files, and a changed head means no tail is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from ingestd.discovery import Target
from ingestd.ledger import FileRecord, Status
from ingestd.parsers.documents import WHOLE_FILE
from ingestd.reader import FINGERPRINT_BYTES, fingerprint
from ingestd.stages.items import stat_signature

T = TypeVar("T")
Signature = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
# Statuses whose progress is not trusted: a change means everything again, under a new generation.
_RESTART = frozenset({Status.SKIPPED, Status.FAILED, Status.DELETED, Status.FORGOTTEN})


class Plan(StrEnum):
    NEW = "new"
    UNCHANGED = "unchanged"
    RESUME = "resume"
    REWRITE = "rewrite"


@dataclass(frozen=True, slots=True)
class Observation:
    """The file as it is now. A reading is None when it was not taken (not needed)."""

    signature: Signature
    whole_file: bool  # a format parsed as a whole (HTML, PDF): resumed from the start
    head_fp: str | None = None  # fingerprint of the first record.head_len bytes
    ends_line: bool | None = None  # whether the byte before record.offset is a newline
    tail_fp: str | None = None  # fingerprint of the bytes the record's tail_fp covers
    unreadable: bool = False  # a read failed (the file may be changing): start again

    @property
    def size(self) -> int:
        return self.signature[0]


def decide(record: FileRecord | None, seen: Observation, kind: str) -> Plan:
    settled = _by_stat(record, seen)
    if settled is not None:
        return settled
    assert record is not None  # _by_stat settles a file without a record
    if seen.unreadable:
        return Plan.REWRITE
    if _missing(seen.head_fp) != record.head_fp:
        return Plan.REWRITE
    if _reads_line_end(record, kind) and not _missing(seen.ends_line):
        return Plan.REWRITE  # the unterminated last line it had may have grown
    if _reads_tail(record) and _missing(seen.tail_fp) != record.tail_fp:
        return Plan.REWRITE
    return Plan.RESUME


def observe(target: Target, record: FileRecord | None, info: os.stat_result) -> Observation:
    """Stat first; then the head, the line end and the tail, stopping at the first that differs."""
    signature = stat_signature(info)
    seen = Observation(signature, target.path.suffix.lower() in WHOLE_FILE)
    if record is None or _by_stat(record, seen) is not None:
        return seen
    path = target.real
    try:
        head_fp = fingerprint(path, 0, record.head_len)
        if head_fp != record.head_fp:
            return Observation(signature, seen.whole_file, head_fp)
        ends_line = _ends_line(path, record.offset) if _reads_line_end(record, target.kind) else None
        if ends_line is False:
            return Observation(signature, seen.whole_file, head_fp, ends_line)
        tail_fp = None
        if _reads_tail(record):
            start = _tail_start(record, target.kind)
            tail_fp = fingerprint(path, start, record.offset - start)
    except OSError:
        return Observation(signature, seen.whole_file, unreadable=True)
    return Observation(signature, seen.whole_file, head_fp, ends_line, tail_fp)


def _by_stat(record: FileRecord | None, seen: Observation) -> Plan | None:
    """The plan when the stat alone settles it, else None (the fingerprints must be read)."""
    if record is None:
        return Plan.NEW
    if record.reingest:  # an explicit retry: everything again, under a new generation
        return Plan.REWRITE
    if record.status != Status.PENDING and record.signature() == seen.signature:
        return Plan.UNCHANGED
    if record.status in _RESTART:
        return Plan.REWRITE
    # A pending file's offset is still 0: its resume point is what it must not shrink below.
    shrunk = seen.size < max(record.offset, record.resume_offset, record.head_len)
    if seen.whole_file or shrunk:
        return Plan.RESUME if seen.whole_file and record.status == Status.PENDING else Plan.REWRITE
    return None


def _reads_line_end(record: FileRecord, kind: str) -> bool:
    return kind == "documents" and record.offset > 0


def _reads_tail(record: FileRecord) -> bool:
    return record.status != Status.PENDING  # a pending file's tail was never fingerprinted


def _tail_start(record: FileRecord, kind: str) -> int:
    return 0 if kind == "documents" else max(0, record.offset - FINGERPRINT_BYTES)


def _missing(reading: T | None) -> T:
    if reading is None:
        raise ValueError("the observation lacks a reading the plan needs (observe takes it)")
    return reading


def _ends_line(path: os.PathLike[str], offset: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(offset - 1)
        return handle.read(1) == b"\n"
