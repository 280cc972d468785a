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
    path: Path, start: int, first_line: int, block_bytes: int, max_line_bytes: int
) -> AsyncIterator[Line]:
    """Yield complete lines from `start`; stop at the last newline seen."""
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
    """Hash of `length` bytes at `start`: how rewrites are told apart from appends."""
    with path.open("rb") as handle:
        handle.seek(start)
        return digest(handle.read(length))


def head_and_tail(path: Path, offset: int) -> tuple[int, str, str]:
    """Fingerprints of the file's head and of the bytes just before `offset`."""
    head_len = min(FINGERPRINT_BYTES, os.path.getsize(path))
    tail_start = max(0, offset - FINGERPRINT_BYTES)
    return head_len, fingerprint(path, 0, head_len), fingerprint(path, tail_start, offset - tail_start)
