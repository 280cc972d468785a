"""The read stage: a file, from its resume point, as a stream of parsed units.

Transcripts and line-oriented documents are streamed in blocks, so memory stays flat whatever
the file's size; whole-file formats (PDF, HTML, non-UTF-8 text) are bounded by
DOCUMENT_MAX_BYTES and parsed off the event loop. The reader notes how far it consumed; what
the pass learned about the file at the end (its fingerprints) is `finish`'s to compute.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from ingestd.errors import DocumentError
from ingestd.ledger import Final
from ingestd.logs import get_logger
from ingestd.parsers.claude import RenderOptions
from ingestd.parsers.documents import (
    PDF,
    WHOLE_FILE,
    SectionBuilder,
    decoded_units,
    html_units,
    pdf_units,
    sniff_text,
)
from ingestd.parsers.transcripts import TranscriptParser
from ingestd.parsers.units import Unit
from ingestd.reader import Line, head_and_tail, read_lines
from ingestd.settings import ReadSettings
from ingestd.stages.items import FileJob, stat_signature

log = get_logger("ingestd.stages.read")
BIG_LINE = 64 * 1024  # lines above this are parsed off the event loop
WHITESPACE = b" \t\r\n\x0b\x0c"


class FileReader:
    def __init__(self, settings: ReadSettings) -> None:
        self.settings = settings
        self.options = RenderOptions(
            tool_result_max_chars=settings.tool_result_max_chars,
            include_thinking=settings.include_thinking,
            include_images=settings.include_images,
        )

    def units(self, job: FileJob) -> AsyncIterator[Unit]:
        """The file's units from the job's resume point; `job.bytes_read` follows along."""
        if job.kind == "conversations":
            return self._transcript(job)
        return self._document(job, job.target.path.suffix.lower())

    async def _transcript(self, job: FileJob) -> AsyncIterator[Unit]:
        target, record = job.target, job.record
        parser = TranscriptParser(target.path, target.root, self.options)
        job.identity = parser.identity
        if record.resume_offset > 0:
            parser.prime(await asyncio.to_thread(_first_line, target.real, self.settings.max_line_bytes))
        reported = 0
        async for line in self._lines(job, include_partial=False):
            if line.data is not None and len(line.data) > BIG_LINE:
                unit = await asyncio.to_thread(parser.parse, line)
            else:
                unit = parser.parse(line)
            for issue in parser.issues[reported:]:
                log.warning(
                    "line.skipped", path=job.key, line=issue.line, reason=issue.reason, outcome="skipped"
                )
            reported = len(parser.issues)
            if unit is not None:
                yield unit
        job.counts.update(parser.counts)

    async def _document(self, job: FileJob, suffix: str) -> AsyncIterator[Unit]:
        target, record = job.target, job.record
        head = await asyncio.to_thread(_head, target.real)
        if not head.strip(WHITESPACE) and suffix not in PDF:
            raise DocumentError("empty file (no text)")
        encoding = sniff_text(head, suffix)
        if encoding != "utf-8" or suffix in WHOLE_FILE:
            size = os.path.getsize(target.real)
            if size > self.settings.document_max_bytes:
                raise DocumentError(f"file of {size} bytes exceeds DOCUMENT_MAX_BYTES for this format")
            units = await asyncio.to_thread(_whole_file_units, target.real, suffix, encoding)
            if not units:
                raise DocumentError("no extractable text")
            job.bytes_read = size
            for unit in units:
                yield unit
            return
        sections = SectionBuilder(suffix)
        if sections.markdown and record.resume_offset > 0:
            # Heading and code-fence state at the resume point come from the lines before it.
            await asyncio.to_thread(_skim, sections, target.real, record.resume_offset)
        async for line in self._lines(job, include_partial=True):
            for unit in sections.feed(line):
                yield unit
        for unit in sections.flush():
            yield unit

    async def _lines(self, job: FileJob, include_partial: bool) -> AsyncIterator[Line]:
        record = job.record
        async for line in read_lines(
            job.target.real,
            record.resume_offset,
            record.resume_line,
            self.settings.read_block_bytes,
            self.settings.max_line_bytes,
            include_partial=include_partial,
        ):
            yield line
            job.bytes_read = line.end - record.resume_offset

    @staticmethod
    def consumed(job: FileJob) -> int:
        """Bytes of the file this pass has read to the end of: where the next pass may append."""
        if job.kind == "documents" and job.target.path.suffix.lower() in WHOLE_FILE:
            return job.bytes_read
        return job.record.resume_offset + job.bytes_read

    @staticmethod
    async def finish(job: FileJob, chunks: int, resumable: bool) -> Final:
        """The fingerprints of what was read, so the next pass can tell an append from a rewrite.
        `resumable`: the last chunk closed at the end of the input (no open trailing chunk)."""
        consumed = FileReader.consumed(job)
        head_len, head_fp, tail_fp = await asyncio.to_thread(
            head_and_tail, job.target.real, consumed, job.kind == "documents"
        )
        return Final(
            offset=consumed,
            head_len=head_len,
            head_fp=head_fp,
            tail_fp=tail_fp,
            chunks=chunks,
            resume_offset=consumed if resumable else None,
            resume_ordinal=chunks if resumable else None,
            redactions=0,
        )

    @staticmethod
    def warn_if_changed(job: FileJob) -> None:
        """A file that changed while it was read is logged; its record keeps the signature seen
        before the read, so the next pass (file event or reconcile scan) looks at it again."""
        try:
            now = stat_signature(os.stat(job.target.real))
        except OSError:
            return
        if now != job.record.signature():
            # Growth is normal for a live transcript (appended to while read); anything else warns.
            grew = job.kind == "conversations" and now[0] >= job.record.size
            (log.debug if grew else log.warning)(
                "file.changed_while_reading",
                path=job.key,
                kind=job.kind,
                reason="changed while being read; read again on the next pass",
                size_before=job.record.size,
                size_now=now[0],
                outcome="re-read later",
            )


def _whole_file_units(path: Path, suffix: str, encoding: str) -> list[Unit]:
    data = path.read_bytes()
    if suffix in PDF:
        return list(pdf_units(data))
    if encoding != "utf-8":
        return list(decoded_units(data, encoding))
    return list(html_units(data))


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(8192)


def _skim(sections: SectionBuilder, path: Path, end: int) -> None:
    """Replay the lines before `end` into the builder's heading and fence state (no text kept)."""
    with path.open("rb") as handle:
        position = 0
        for data in handle:
            position += len(data)
            if position > end:
                return
            sections.replay(data.decode("utf-8", "replace"))


def _first_line(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.readline(min(limit, 1 << 20))
