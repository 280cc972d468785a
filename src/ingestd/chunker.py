"""Units to chunks, counted with the embedding model's own tokenizer.

Packing is greedy and left to right, so the chunks of a file depend only on its content: the
chunks of a transcript's prefix are the chunks of the whole file, except that the last one may
still grow. That is what lets an append re-open just the trailing chunk, and what makes a run
interrupted by kills store exactly the points of an uninterrupted one.

A unit too long for one chunk is split with semantic-text-splitter (by Markdown structure, then
sentences and words) using the same tokenizer, and every piece keeps the unit's role label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from semantic_text_splitter import MarkdownSplitter, TextSplitter
from tokenizers import Tokenizer

from ingestd import protocols
from ingestd.parsers.units import Unit

Splitter = MarkdownSplitter | TextSplitter

SPECIAL_TOKENS = 2  # [CLS] and [SEP], added by the model to every input
SEPARATOR = "\n\n"
REDACTED = "[REDACTED:"  # how a redaction placeholder starts (see ingestd.redaction)
MAX_LIST = 50  # per-chunk metadata lists (uuids, files) are capped to keep payloads small


@dataclass(slots=True)
class Position:
    """Where to restart reading if every chunk up to a given one is stored.

    For a format parsed as a whole that is always the file's start, at ordinal 0: its units
    have no byte offsets to resume from, so a resumed read parses the file again and the
    chunks Qdrant already holds are verified, not embedded again.
    """

    offset: int  # bytes
    ordinal: int  # of the first chunk the restarted read produces
    line: int


def _file_start() -> Position:
    return Position(0, 0, 1)


@dataclass(slots=True)
class Chunk:
    text: str
    ordinal: int
    start: int  # byte offset of its first unit (for a whole-file format, of the file: 0)
    end: int  # byte offset just past its last unit (for a whole-file format, the file's size)
    tokens: int
    resume: Position
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.blake2b(self.text.encode("utf-8"), digest_size=16).hexdigest()


class TokenCounter:
    """The model's tokenizer with truncation and padding off, so counts are true lengths."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self._splitters: dict[tuple[bool, int, int], Splitter] = {}
        self.separator = self.count(SEPARATOR)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def splitter(self, markdown: bool, capacity: int, overlap: int) -> Splitter:
        """A splitter that counts with this tokenizer, cached per capacity (labels vary it).

        `from_huggingface_tokenizer` would give each splitter its own copy of the tokenizer:
        6 MB of vocabulary apiece, kept for the process's life. Counting through `count`
        shares the one tokenizer, gives the same pieces, and splits 30–45 % slower.
        """
        key = (markdown, capacity, min(overlap, capacity - 1))
        if key not in self._splitters:
            kind = MarkdownSplitter if markdown else TextSplitter
            self._splitters[key] = kind.from_callback(self.count, capacity=key[1], overlap=key[2])
        return self._splitters[key]


class Packer:
    def __init__(
        self,
        counter: protocols.TokenCounter,
        max_tokens: int,
        overlap: int,
        markdown: bool,
        first_ordinal: int,
    ) -> None:
        self.counter = counter
        self.budget = max_tokens - SPECIAL_TOKENS
        self.overlap = overlap
        self.markdown = markdown
        self.ordinal = first_ordinal
        self.open: list[Unit] = []
        self.open_tokens = 0

    def feed(self, unit: Unit) -> list[Chunk]:
        """Chunks that this unit closes; the unit itself may stay in the open chunk."""
        text = unit.rendered()
        tokens = self.counter.count(text)
        joined = tokens + (self.counter.separator if self.open else 0)
        if self.open and not unit.opens_section and self.open_tokens + joined <= self.budget:
            self.open.append(unit)
            self.open_tokens += joined
            return []
        closed = self._close_open() if self.open else []
        if tokens <= self.budget:
            self.open, self.open_tokens = [unit], tokens
            return closed
        return closed + self._split(unit)

    def flush(self) -> Chunk | None:
        """The open chunk at the end of the input; it resumes at its own start."""
        if not self.open:
            return None
        first = self.open[0]
        chunk = self._make(
            _file_start() if first.whole_file else Position(first.start, self.ordinal, first.line)
        )
        self.open, self.open_tokens = [], 0
        return chunk

    def _close_open(self) -> list[Chunk]:
        last = self.open[-1]
        chunk = self._make(
            _file_start() if last.whole_file else Position(last.end, self.ordinal + 1, last.next_line)
        )
        self.ordinal += 1
        self.open, self.open_tokens = [], 0
        return [chunk]

    def _make(self, resume: Position) -> Chunk:
        """The open units' counts summed: WordPiece splits at whitespace, so joining whole units
        adds only the separator's tokens (none for MiniLM), and a second count would be waste."""
        units = self.open
        return Chunk(
            text=SEPARATOR.join(unit.rendered() for unit in units),
            ordinal=self.ordinal,
            start=units[0].start,
            end=units[-1].end,
            tokens=self.open_tokens + SPECIAL_TOKENS,
            resume=resume,
            meta=merge_meta(unit.meta | {"role": unit.label} for unit in units),
        )

    def _split(self, unit: Unit) -> list[Chunk]:
        """Pieces of an oversized unit; until the last is stored, resume re-splits the unit."""
        label = f"{unit.label}: " if unit.label else ""
        label_tokens = self.counter.count(label) if label else 0
        capacity = self.budget - label_tokens
        pieces = self._pieces(unit.text, capacity)
        in_meta = sum(value.count(REDACTED) for value in unit.meta.values() if isinstance(value, str))
        first_ordinal = self.ordinal
        chunks = []
        for index, (piece, tokens) in enumerate(pieces):
            last = index == len(pieces) - 1
            if unit.whole_file:
                resume = _file_start()
            elif last:
                resume = Position(unit.end, self.ordinal + 1, unit.next_line)
            else:
                resume = Position(unit.start, first_ordinal, unit.line)
            text = label + piece
            meta = unit.meta | {"role": unit.label}
            if meta.get("redactions"):  # a piece counts only the placeholders it (and its metadata) holds
                meta["redactions"] = min(int(meta["redactions"]), piece.count(REDACTED) + in_meta)
            chunks.append(
                Chunk(
                    text=text,
                    ordinal=self.ordinal,
                    start=unit.start,
                    end=unit.end,
                    tokens=label_tokens + tokens + SPECIAL_TOKENS,
                    resume=resume,
                    meta=merge_meta([meta]),
                )
            )
            self.ordinal += 1
        return chunks

    def _pieces(self, text: str, capacity: int) -> list[tuple[str, int]]:
        located = self.counter.splitter(self.markdown, capacity, self.overlap).chunk_indices(text)
        if self.markdown and _cuts_a_word(text, located):
            # semantic-text-splitter 0.33's Markdown parser can end a piece inside a word
            # ("let'" + "s"), which no query can match: plain-text splitting never does.
            located = self.counter.splitter(False, capacity, self.overlap).chunk_indices(text)
        pieces: list[tuple[str, int]] = []
        for _, piece in located:
            pieces.extend(self._enforce(piece, capacity))
        return pieces

    def _enforce(self, piece: str, capacity: int) -> list[tuple[str, int]]:
        """Each piece with its count (the encoding is needed for that anyway), and the limit
        kept even if the splitter returns a piece whole that it could not cut. It counts with
        `count` itself, so no test input reaches the windowing: it guards the model's limit."""
        encoding = self.counter.tokenizer.encode(piece, add_special_tokens=False)
        if len(encoding.ids) <= capacity:
            return [(piece, len(encoding.ids))]
        out = []
        for begin in range(0, len(encoding.ids), capacity):
            window = encoding.offsets[begin : begin + capacity]
            out.append((piece[window[0][0] : window[-1][1]], len(window)))
        return out


def _cuts_a_word(text: str, located: list[tuple[int, str]]) -> bool:
    """Does any piece end between two letters of one word (an apostrophe counts as a letter)?"""
    for offset, piece in located[:-1]:
        end = offset + len(piece)
        if 0 < end < len(text) and _in_word(text[end - 1]) and _in_word(text[end]):
            return True
    return False


def _in_word(char: str) -> bool:
    return char.isalnum() or char in "'’"


def merge_meta(metas: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Chunk metadata from its units: first and last timestamps, and the union of lists."""
    merged: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {"roles": [], "uuids": [], "tools": [], "files": []}
    for meta in metas:
        for key, target in (("role", "roles"), ("uuid", "uuids")):
            value = meta.get(key)
            if value and value not in lists[target]:
                lists[target].append(value)
        for key in ("tools", "files"):
            for value in meta.get(key) or []:
                if value not in lists[key]:
                    lists[key].append(value)
        timestamp = meta.get("timestamp")
        if isinstance(timestamp, str):
            merged.setdefault("timestamp_first", timestamp)
            merged["timestamp_last"] = timestamp
        for key in ("session", "cwd", "git_branch", "heading", "page", "agent_id"):
            if meta.get(key) not in (None, ""):
                merged.setdefault(key, meta[key])
        if meta.get("sidechain"):
            merged["sidechain"] = True
        if meta.get("redactions"):
            merged["redactions"] = merged.get("redactions", 0) + int(meta["redactions"])
    merged.update({key: values[:MAX_LIST] for key, values in lists.items() if values})
    return merged
