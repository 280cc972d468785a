"""The plan is a pure function of (record, observation, kind): each rule is one row."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from ingestd.discovery import Target
from ingestd.ledger import FileRecord, Status
from ingestd.reader import fingerprint
from ingestd.stages.plan import Observation, Plan, decide, observe

SIG = (1000, 11, 12, 13)
GROWN = (1500, 21, 22, 13)
SMALLER = (100, 21, 22, 13)
DONE = FileRecord(
    kind="conversations",
    status=Status.DONE,
    size=1000,
    mtime_ns=11,
    ctime_ns=12,
    inode=13,
    head_len=1000,
    head_fp="head",
    tail_fp="tail",
    offset=1000,
    resume_offset=900,
)
PENDING = replace(DONE, status=Status.PENDING, offset=0, tail_fp="")
DOC = replace(DONE, kind="documents")


def seen(
    signature: tuple[int, int, int, int] = GROWN,
    whole_file: bool = False,
    head_fp: str | None = None,
    ends_line: bool | None = None,
    tail_fp: str | None = None,
    unreadable: bool = False,
) -> Observation:
    return Observation(signature, whole_file, head_fp, ends_line, tail_fp, unreadable)


ROWS = [
    ("no record", None, seen(whole_file=False), "conversations", Plan.NEW),
    ("retried by name", replace(DONE, reingest=True), seen(SIG, False), "conversations", Plan.REWRITE),
    ("unchanged stat", DONE, seen(SIG, False), "conversations", Plan.UNCHANGED),
    (
        "quarantined, same stat",
        replace(DONE, status=Status.QUARANTINED),
        seen(SIG, False),
        "conversations",
        Plan.UNCHANGED,
    ),
    ("pending, same stat: resumed", PENDING, seen(SIG, False, "head"), "conversations", Plan.RESUME),
    (
        "skipped, changed",
        replace(DONE, status=Status.SKIPPED),
        seen(whole_file=False),
        "conversations",
        Plan.REWRITE,
    ),
    (
        "failed, changed",
        replace(DONE, status=Status.FAILED),
        seen(whole_file=False),
        "conversations",
        Plan.REWRITE,
    ),
    (
        "deleted, back",
        replace(DONE, status=Status.DELETED),
        seen(whole_file=False),
        "conversations",
        Plan.REWRITE,
    ),
    (
        "forgotten, changed",
        replace(DONE, status=Status.FORGOTTEN),
        seen(whole_file=False),
        "conversations",
        Plan.REWRITE,
    ),
    ("whole-file pending", PENDING, seen(whole_file=True), "documents", Plan.RESUME),
    ("whole-file done, changed", DOC, seen(whole_file=True), "documents", Plan.REWRITE),
    ("shrunk below the offset", DONE, seen(SMALLER, False), "conversations", Plan.REWRITE),
    ("pending shrunk below resume point", PENDING, seen(SMALLER, False), "conversations", Plan.REWRITE),
    ("head changed", DONE, seen(whole_file=False, head_fp="other"), "conversations", Plan.REWRITE),
    (
        "document's last line unterminated",
        DOC,
        seen(whole_file=False, head_fp="head", ends_line=False),
        "documents",
        Plan.REWRITE,
    ),
    (
        "tail changed",
        DONE,
        seen(whole_file=False, head_fp="head", tail_fp="other"),
        "conversations",
        Plan.REWRITE,
    ),
    (
        "document prefix changed",
        DOC,
        seen(whole_file=False, head_fp="head", ends_line=True, tail_fp="x"),
        "documents",
        Plan.REWRITE,
    ),
    (
        "grown append",
        DONE,
        seen(whole_file=False, head_fp="head", tail_fp="tail"),
        "conversations",
        Plan.RESUME,
    ),
    (
        "document appended after a newline",
        DOC,
        seen(whole_file=False, head_fp="head", ends_line=True, tail_fp="tail"),
        "documents",
        Plan.RESUME,
    ),
    (
        "quarantined, grown: resumed",
        replace(DONE, status=Status.QUARANTINED),
        seen(whole_file=False, head_fp="head", tail_fp="tail"),
        "conversations",
        Plan.RESUME,
    ),
    (
        "pending grown: tail not compared",
        PENDING,
        seen(whole_file=False, head_fp="head"),
        "conversations",
        Plan.RESUME,
    ),
    ("unreadable", DONE, seen(whole_file=False, unreadable=True), "conversations", Plan.REWRITE),
]


@pytest.mark.parametrize(
    ("record", "observation", "kind", "plan"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_decide(record: FileRecord | None, observation: Observation, kind: str, plan: Plan) -> None:
    assert decide(record, observation, kind) is plan


def test_a_reading_the_plan_needs_must_be_taken() -> None:
    with pytest.raises(ValueError, match="lacks a reading"):
        decide(DONE, seen(whole_file=False), "conversations")


def _target(path: Path, kind: str = "conversations") -> Target:
    return Target(path=path, real=path, kind=kind, root=path.parent)


def _done_record(path: Path, kind: str) -> FileRecord:
    info = os.stat(path)
    size = info.st_size
    tail_start = 0 if kind == "documents" else max(0, size - 4096)
    return FileRecord(
        kind=kind,
        status=Status.DONE,
        size=size,
        mtime_ns=info.st_mtime_ns,
        ctime_ns=info.st_ctime_ns,
        inode=info.st_ino,
        head_len=min(4096, size),
        head_fp=fingerprint(path, 0, min(4096, size)),
        tail_fp=fingerprint(path, tail_start, size - tail_start),
        offset=size,
    )


def test_observe_reads_nothing_when_the_stat_settles_it(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    record = _done_record(path, "conversations")
    observation = observe(_target(path), record, os.stat(path))
    assert (observation.head_fp, observation.ends_line, observation.tail_fp) == (None, None, None)
    assert decide(record, observation, "conversations") is Plan.UNCHANGED


def test_observe_an_append_and_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    record = _done_record(path, "conversations")
    with path.open("ab") as handle:
        handle.write(b'{"b": 2}\n')
    observation = observe(_target(path), record, os.stat(path))
    assert observation.tail_fp == record.tail_fp
    assert decide(record, observation, "conversations") is Plan.RESUME
    path.write_bytes(b'{"c": 3}\n' * 1001)  # same length class, new head
    observation = observe(_target(path), record, os.stat(path))
    assert observation.head_fp != record.head_fp and observation.tail_fp is None  # stopped there
    assert decide(record, observation, "conversations") is Plan.REWRITE


def test_observe_a_document_whose_last_line_grew(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"# Title\n\nno newline at the end")
    record = _done_record(path, "documents")
    with path.open("ab") as handle:
        handle.write(b" and more\n")
    observation = observe(_target(path, "documents"), record, os.stat(path))
    assert observation.ends_line is False and observation.tail_fp is None
    assert decide(record, observation, "documents") is Plan.REWRITE


def test_observe_a_file_that_vanished_mid_look(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    record = _done_record(path, "conversations")
    with path.open("ab") as handle:
        handle.write(b'{"b": 2}\n')
    info = os.stat(path)
    path.unlink()
    observation = observe(_target(path), record, info)
    assert observation.unreadable and decide(record, observation, "conversations") is Plan.REWRITE
