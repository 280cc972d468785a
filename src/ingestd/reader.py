"""Bounded, resumable reads: lines from a byte offset, in blocks, never the whole file.

Memory stays flat whatever the file size: a line longer than the cap is skipped while it
streams past (its bytes are never held), and a final line without a newline is left for a
later read, because a transcript that is still being written ends mid-line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiofiles

FINGERPRINT_BYTES = 4096


@dataclass(slots=True)
class Line:
    data: bytes | None  # None: longer than the cap, skipped
    start: int
    end: int
    number: int


async def read_lines(
    path: Path,
    start: int,
    first_line: int,
    block_bytes: int,
    max_line_bytes: int,
    include_partial: bool = False,
) -> AsyncIterator[Line]:
    """Yield complete lines from `start`; stop at the last newline seen.

    `include_partial` also yields an unterminated last line: right for documents, whose last
    line often has no newline, wrong for transcripts, where it is a line still being written.
    """
    number = first_line
    line_start = start
    pending: list[bytes] = []
    pending_len = 0
    oversized = False
    async with aiofiles.open(path, "rb") as handle:
        await handle.seek(start)
        position = start
        while True:
            block = await handle.read(block_bytes)
            if not block:
                if include_partial and (pending or oversized):
                    data = None if oversized else b"".join(pending)
                    yield Line(data=data, start=line_start, end=position, number=number)
                return
            cursor = 0
            while cursor < len(block):
                newline = block.find(b"\n", cursor)
                if newline < 0:
                    piece_len = len(block) - cursor
                    if not oversized and pending_len + piece_len > max_line_bytes:
                        oversized, pending, pending_len = True, [], 0
                    if not oversized:
                        pending.append(block[cursor:])
                        pending_len += piece_len
                    break
                end = position + newline + 1
                if not oversized and pending_len + newline - cursor > max_line_bytes:
                    oversized = True
                data = None if oversized else b"".join([*pending, block[cursor:newline]])
                yield Line(data=data, start=line_start, end=end, number=number)
                number += 1
                line_start = end
                pending, pending_len, oversized = [], 0, False
                cursor = newline + 1
            position += len(block)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def fingerprint(path: Path, start: int, length: int) -> str:
    """Hash of `length` bytes at `start`: how rewrites are told apart from appends.

    Hashed in blocks, so a whole-prefix fingerprint of a large document costs no memory.
    """
    hasher = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        handle.seek(start)
        while length > 0:
            block = handle.read(min(length, 1 << 20))
            if not block:
                break
            hasher.update(block)
            length -= len(block)
    return hasher.hexdigest()


def head_and_tail(path: Path, offset: int, whole_prefix: bool = False) -> tuple[int, str, str]:
    """Fingerprints of the file's head and of the bytes just before `offset`.

    `whole_prefix` fingerprints everything before `offset`: documents are edited in place, and an
    edit in the middle that keeps the size leaves head and last 4 KiB unchanged.
    """
    head_len = min(FINGERPRINT_BYTES, os.path.getsize(path))
    tail_start = 0 if whole_prefix else max(0, offset - FINGERPRINT_BYTES)
    return head_len, fingerprint(path, 0, head_len), fingerprint(path, tail_start, offset - tail_start)
