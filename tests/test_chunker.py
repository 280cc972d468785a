"""Chunking: the token limit, role labels, and append stability (the basis of cheap appends)."""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from generators import ClaudeSession, dump, paragraph, simple_pdf
from ingestd.chunker import Chunk, Packer, Position, Splitter, TokenCounter
from ingestd.embedding.fastembed_provider import FastEmbedProvider
from ingestd.parsers.claude import RenderOptions
from ingestd.parsers.documents import decoded_units, html_units, pdf_units
from ingestd.parsers.transcripts import TranscriptParser
from ingestd.parsers.units import Unit
from ingestd.reader import read_lines
from ingestd.system import rss_mb


@pytest.fixture(scope="module")
def counter(provider: FastEmbedProvider) -> TokenCounter:
    return provider.counter


def chunks_of(
    path: Path, counter: TokenCounter, start: int = 0, ordinal: int = 0, line: int = 1
) -> list[Chunk]:
    async def collect() -> list[Chunk]:
        parser = TranscriptParser(path, path.parent.parent, RenderOptions())
        packer = Packer(counter, 128, 16, markdown=True, first_ordinal=ordinal)
        out: list[Chunk] = []
        async for each in read_lines(path, start, line, 4096, 1 << 20):
            unit = parser.parse(each)
            if unit is not None:
                out.extend(packer.feed(unit))
        tail = packer.flush()
        return [*out, tail] if tail else out

    return asyncio.run(collect())


def test_chunks_respect_the_limit_and_keep_labels(tmp_path: Path, counter: TokenCounter) -> None:
    session = ClaudeSession(3, "s")
    long_text = paragraph(random.Random(1), 80)
    path = tmp_path / "p" / "s.jsonl"
    path.parent.mkdir()
    path.write_bytes(dump([*session.lines(5), session.user(long_text), session.user("short one")]))
    chunks = chunks_of(path, counter)
    tokenizer = counter.tokenizer
    for chunk in chunks:
        assert len(tokenizer.encode(chunk.text).ids) <= 128  # counted with [CLS] and [SEP]
        assert chunk.text.split(":", 1)[0] in {"user", "assistant", "summary"}
    # The packer sums the units' counts instead of counting each chunk again: still exact.
    assert [c.tokens for c in chunks] == [len(tokenizer.encode(c.text).ids) for c in chunks]
    pieces = [c for c in chunks if c.meta.get("roles") == ["user"] and c.tokens > 100]
    assert len(pieces) >= 3, "the long message was split, each piece labelled"


@pytest.mark.parametrize("seed", range(6))
def test_resuming_at_any_commit_point_gives_the_same_chunks(
    tmp_path: Path, counter: TokenCounter, seed: int
) -> None:
    """For every chunk's resume position, chunking from there reproduces the rest exactly."""
    rng = random.Random(seed)
    session = ClaudeSession(seed, "s")
    lines = list(session.lines(rng.randint(3, 12)))
    lines.insert(rng.randint(1, len(lines)), session.user(paragraph(rng, rng.randint(20, 60))))
    path = tmp_path / "p" / "s.jsonl"
    path.parent.mkdir()
    path.write_bytes(dump(lines))
    whole = chunks_of(path, counter)
    for chunk in whole:
        resumed = chunks_of(path, counter, chunk.resume.offset, chunk.resume.ordinal, chunk.resume.line)
        expected = [c for c in whole if c.ordinal >= chunk.resume.ordinal]
        assert [(c.ordinal, c.text) for c in resumed] == [(c.ordinal, c.text) for c in expected]


def test_a_prefix_chunks_like_the_whole_except_its_open_tail(tmp_path: Path, counter: TokenCounter) -> None:
    session = ClaudeSession(9, "s")
    body = dump(session.lines(10))
    path = tmp_path / "p" / "s.jsonl"
    path.parent.mkdir()
    path.write_bytes(body)
    whole = chunks_of(path, counter)
    cut = body.index(b"\n", len(body) // 2) + 1
    path.write_bytes(body[:cut])
    prefix = chunks_of(path, counter)
    assert [(c.ordinal, c.text) for c in prefix[:-1]] == [
        (c.ordinal, c.text) for c in whole[: len(prefix) - 1]
    ]
    assert whole[len(prefix) - 1].text.startswith(prefix[-1].text)


def whole_file_inputs() -> list[tuple[str, bytes, list[Unit]]]:
    rng = random.Random(7)
    pages = [f"Page {n} of the tide report. " + paragraph(rng, 30) for n in range(6)]
    pdf = simple_pdf(pages)
    html = (
        "<html><head><title>Tides</title></head><body>"
        + "".join(f"<p>{paragraph(rng, 60)}</p>\n\n" for _ in range(12))
        + "</body></html>"
    ).encode()
    utf16 = "\n\n".join(paragraph(rng, 60) for _ in range(12)).encode("utf-16")
    return [
        ("pdf", pdf, list(pdf_units(pdf))),
        ("html", html, list(html_units(html))),
        ("utf-16", utf16, list(decoded_units(utf16, "utf-16"))),
    ]


def pack(counter: TokenCounter, units: list[Unit], first_ordinal: int = 0) -> list[Chunk]:
    packer = Packer(counter, 64, 8, markdown=False, first_ordinal=first_ordinal)
    chunks = [chunk for unit in units for chunk in packer.feed(unit)]
    tail = packer.flush()
    return [*chunks, tail] if tail else chunks


def test_whole_file_units_have_byte_offsets_and_resume_at_the_start(counter: TokenCounter) -> None:
    """Issue 16: PDF pages and paragraph ordinals stood in for byte offsets, so a PDF's record
    resumed at "offset 3, ordinal 5" while the read restarts at page 1: every chunk got another
    ordinal and nothing stored could be verified. Now a whole-file chunk resumes at the file's
    start, ordinal 0, and re-reading from there reproduces every chunk at its own ordinal."""
    for name, data, units in whole_file_inputs():
        assert len(units) > 2, name
        assert all(u.whole_file and (u.start, u.end) == (0, len(data)) for u in units), name
        chunks = pack(counter, units)
        assert len(chunks) > 2, name
        assert all((c.start, c.end) == (0, len(data)) for c in chunks), name
        assert {(c.resume.offset, c.resume.ordinal, c.resume.line) for c in chunks} == {(0, 0, 1)}, name
        for chunk in chunks:
            resumed = pack(counter, units, chunk.resume.ordinal)
            assert [(c.ordinal, c.text) for c in resumed] == [(c.ordinal, c.text) for c in chunks], name
    pdf_chunks = pack(counter, whole_file_inputs()[0][2])
    assert pdf_chunks[0].meta["page"] == 1 and pdf_chunks[-1].meta["page"] == 6, "pages are named"


def test_line_units_resume_where_their_bytes_end(counter: TokenCounter) -> None:
    units = [Unit(f"line {n} " + "word " * 20, 100 * n, 100 * n + 100, n + 1, n + 2) for n in range(8)]
    chunks = pack(counter, units)
    closed = chunks[:-1]
    assert closed and all(c.resume == Position(c.end, c.ordinal + 1, c.end // 100 + 1) for c in closed), (
        "a closed chunk resumes at the byte its last unit ends"
    )
    assert chunks[-1].resume == Position(chunks[-1].start, chunks[-1].ordinal, chunks[-1].start // 100 + 1)


def test_reader_skips_overlong_lines_and_waits_for_newlines(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"short\n" + b"x" * 5000 + b"\nok\npartial")

    async def collect(include_partial: bool) -> list[tuple[bytes | None, int]]:
        return [
            (line.data, line.number) async for line in read_lines(path, 0, 1, 1024, 1000, include_partial)
        ]

    assert asyncio.run(collect(False)) == [(b"short", 1), (None, 2), (b"ok", 3)]
    assert asyncio.run(collect(True))[-1] == (b"partial", 4)


@pytest.mark.parametrize("markdown", [True, False])
def test_split_pieces_never_end_inside_a_word(counter: TokenCounter, markdown: bool) -> None:
    # semantic-text-splitter's Markdown parser once cut this between "let'" and "s".
    text = (
        "The user opened the file index.html in the IDE. This may or may not be related to the task.\n"
        "OK, so this was just so you know what there is now, but after more than a decade I want to "
        "pick it up again and fix the broken APIs. Also, I deleted config.ru, as a first step let's "
        "figure out what would be the simplest way to serve it up on localhost (as I believe running "
        "off file:// has some limitations)"
    )
    packer = Packer(counter, 100, 0, markdown=markdown, first_ordinal=0)
    pieces = [
        chunk.text.removeprefix("user: ") for chunk in packer.feed(Unit(text, 0, len(text), label="user"))
    ]
    assert len(pieces) >= 2, "the unit is longer than one chunk"
    words = text.split()
    stored = " ".join(pieces).split()
    assert stored == words, "every word of the unit is in one piece, whole"


def test_overlap_repeats_text_between_pieces_and_zero_repeats_none(counter: TokenCounter) -> None:
    text = paragraph(random.Random(5), 120)

    def pieces(overlap: int) -> list[str]:
        packer = Packer(counter, 64, overlap, markdown=False, first_ordinal=0)
        return [
            chunk.text.removeprefix("user: ") for chunk in packer.feed(Unit(text, 0, len(text), label="user"))
        ]

    plain, overlapped = pieces(0), pieces(16)
    assert len(plain) >= 3
    assert " ".join(plain).split() == text.split(), "without overlap the pieces are the text, once"
    repeated = len(" ".join(overlapped).split()) - len(text.split())
    assert repeated > 0, "with overlap, a piece starts with words the one before ended with"
    assert all(len(counter.tokenizer.encode(piece).ids) <= 64 for piece in overlapped)


class SplittersHandedOut:
    """A real counter that notes every splitter it hands the packer (each one is kept, so
    distinct objects are distinct splitters built)."""

    def __init__(self, inner: TokenCounter) -> None:
        self.inner = inner
        self.tokenizer, self.separator = inner.tokenizer, inner.separator
        self.distinct: dict[int, Splitter] = {}

    def count(self, text: str) -> int:
        return self.inner.count(text)

    def splitter(self, markdown: bool, capacity: int, overlap: int) -> Splitter:
        made = self.inner.splitter(markdown, capacity, overlap)
        self.distinct[id(made)] = made
        return made


def test_splitters_for_many_labels_share_the_one_tokenizer(counter: TokenCounter) -> None:
    # Each label length is a capacity and so a splitter of its own; one built by
    # from_huggingface_tokenizer held a 6 MB copy of the vocabulary for the process's life.
    fresh = SplittersHandedOut(TokenCounter(Tokenizer.from_str(counter.tokenizer.to_str())))
    text = paragraph(random.Random(9), 150)
    gc.collect()
    before = rss_mb()
    for width in range(1, 13):
        label = " ".join(["role"] * width)
        packer = Packer(fresh, 64, 0, markdown=width % 2 == 0, first_ordinal=0)
        chunks = packer.feed(Unit(text, 0, len(text), label=label))
        assert len(chunks) >= 3 and all(chunk.tokens <= 64 for chunk in chunks)
    assert len(fresh.distinct) >= 12, "each label's capacity has a splitter of its own"
    gc.collect()
    assert rss_mb() - before < 20, "twelve copies of the tokenizer would add about 72 MB"
