"""Documents to units: Markdown by heading, text and code by paragraph, PDF by page, HTML text.

Text formats stream line by line, so a large text file costs no more memory than a section;
sections are cut at headings (Markdown outside code fences) or at blank lines once a section has
some body, and hard-capped in size. PDF and HTML need the whole file and are parsed off the
event loop. Binary and undecodable files are refused with one reason, before any text is stored.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from pathlib import Path

from ingestd.errors import DocumentError
from ingestd.parsers.units import Unit
from ingestd.reader import Line

MARKDOWN = frozenset({".md", ".markdown", ".mdx"})
TEXT = frozenset({".txt", ".rst", ".text", ".org", ".adoc", ".csv", ".log"})
CODE = frozenset(
    {
        ".py",
        ".pyi",
        ".js",
        ".jsx",
        ".ts",
        ".tsx",
        ".mjs",
        ".cjs",
        ".go",
        ".rs",
        ".java",
        ".kt",
        ".kts",
        ".scala",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".cxx",
        ".hpp",
        ".hh",
        ".cs",
        ".rb",
        ".php",
        ".swift",
        ".m",
        ".mm",
        ".sh",
        ".bash",
        ".zsh",
        ".fish",
        ".ps1",
        ".sql",
        ".r",
        ".jl",
        ".lua",
        ".pl",
        ".pm",
        ".dart",
        ".ex",
        ".exs",
        ".erl",
        ".hs",
        ".ml",
        ".clj",
        ".vue",
        ".svelte",
        ".css",
        ".scss",
        ".toml",
        ".yaml",
        ".yml",
        ".json",
        ".ini",
        ".cfg",
        ".proto",
        ".graphql",
        ".tf",
        ".nix",
        ".zig",
    }
)
HTML = frozenset({".html", ".htm", ".xhtml"})
PDF = frozenset({".pdf"})
SUPPORTED = MARKDOWN | TEXT | CODE | HTML | PDF
WHOLE_FILE = HTML | PDF  # parsed as a whole: resumed from the start, with stored chunks verified

SECTION_SOFT_BYTES = 1500
SECTION_HARD_BYTES = 32 * 1024
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"PK\x03\x04", b"\x7fELF", b"%PDF")


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED


def sniff_text(head: bytes, suffix: str) -> str:
    """Refuse what is not UTF-8 text before reading further; returns the encoding to use."""
    if suffix in PDF:
        if not head.startswith(b"%PDF"):
            raise DocumentError("not a PDF (missing %PDF header)")
        return "pdf"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(_BINARY_MAGIC):
        raise DocumentError("binary file (known file signature) with a text extension")
    if b"\x00" in head:
        if _looks_like_bomless_utf16(head):
            return "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
        raise DocumentError("binary file (contains NUL bytes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a code point cut by the sniff window
            raise DocumentError(f"not valid UTF-8 (byte {exc.start})") from None
    return "utf-8"


def _looks_like_bomless_utf16(head: bytes) -> bool:
    """NULs on one byte parity only: a run of NULs (binary, sparse files) has them on both."""
    even, odd = head[0::2], head[1::2]
    if len(head) < 8:
        return False
    even_zeros, odd_zeros = even.count(0) / len(even), odd.count(0) / len(odd)
    return (even_zeros > 0.4 and odd_zeros < 0.05) or (odd_zeros > 0.4 and even_zeros < 0.05)


class SectionBuilder:
    """Groups decoded lines into sections; Markdown headings always start a new one."""

    def __init__(self, suffix: str) -> None:
        self.markdown = suffix in MARKDOWN
        self.lines: list[str] = []
        self.size = 0
        self.start = 0
        self.first_line = 0
        self.end = 0
        self.next_line = 0
        self.heading: str | None = None
        self.opens_heading = False
        self.in_fence = False

    def feed(self, line: Line) -> list[Unit]:
        if line.data is None:
            raise DocumentError(f"line {line.number} is longer than MAX_LINE_BYTES")
        try:
            text = line.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(
                f"not valid UTF-8 (line {line.number}, byte {line.start + exc.start})"
            ) from None
        out: list[Unit] = []
        heading = self.skim(text)
        boundary = heading is not None
        if not boundary and not text.strip() and self.size >= SECTION_SOFT_BYTES and not self.in_fence:
            boundary = True
        if self.size + len(text) > SECTION_HARD_BYTES:
            boundary = True
        if boundary and self.lines:
            out.extend(self.flush())
        if not self.lines:
            self.start, self.first_line = line.start, line.number
            self.opens_heading = heading is not None
        if heading is not None:
            self.heading = heading
        self.lines.append(text.rstrip("\r\n"))
        self.size += len(text)
        self.end = line.end
        self.next_line = line.number + 1
        return out

    def skim(self, text: str) -> str | None:
        """Track code fences; returns the heading this line opens, if any."""
        if not self.markdown:
            return None
        if _FENCE.match(text):
            self.in_fence = not self.in_fence
            return None
        match = None if self.in_fence else _HEADING.match(text)
        return match.group(2) if match else None

    def replay(self, text: str) -> None:
        """A line before a mid-file resume point: only its effect on heading and fence state,
        so the sections after the point come out as in a full read."""
        heading = self.skim(text)
        if heading is not None:
            self.heading = heading

    def flush(self) -> list[Unit]:
        text = "\n".join(self.lines).strip()
        unit = Unit(
            text=text,
            start=self.start,
            end=self.end,
            line=self.first_line,
            next_line=self.next_line,
            meta={"heading": self.heading} if self.heading else {},
            opens_section=self.opens_heading,
        )
        self.lines, self.size = [], 0
        return [unit] if text else []


def pdf_units(data: bytes) -> Iterator[Unit]:
    """One unit per page, numbered in `meta["page"]`; a page has no byte range of its own."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("encrypted PDF (a password is needed)")
        pages = reader.pages
        for number, page in enumerate(pages):
            text = (page.extract_text() or "").strip()
            if text:
                yield Unit(text=text, start=0, end=len(data), whole_file=True, meta={"page": number + 1})
    except DocumentError:
        raise
    # The exception's type only: pypdf's messages quote the bytes it choked on, file content.
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, RecursionError, OSError) as exc:
        raise DocumentError(f"corrupt PDF ({type(exc).__name__})") from None
    except Exception as exc:
        if "cryptography" in str(exc) or "AES" in str(exc):
            raise DocumentError("encrypted PDF (AES, cannot be decrypted)") from None
        raise DocumentError(f"unreadable PDF ({type(exc).__name__})") from None


def html_units(data: bytes) -> Iterator[Unit]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    text = re.sub(r"\n\s*\n+", "\n\n", soup.get_text("\n")).strip()
    yield from _paragraph_units(text, len(data), {"heading": title} if title else {})


def decoded_units(data: bytes, encoding: str) -> Iterator[Unit]:
    """Whole-file text in another encoding (UTF-16), already known to be small enough."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not valid {encoding.upper()} (byte {exc.start})") from None
    yield from _paragraph_units(text.lstrip("\ufeff"), len(data), {})


def _paragraph_units(text: str, file_bytes: int, meta: dict[str, object]) -> Iterator[Unit]:
    """Sections of a whole-file text (decoded or extracted, so no section has a byte range)."""
    buffer: list[str] = []
    size = 0
    for paragraph in text.split("\n\n"):
        buffer.append(paragraph)
        size += len(paragraph)
        if size >= SECTION_SOFT_BYTES:
            yield Unit("\n\n".join(buffer).strip(), 0, file_bytes, whole_file=True, meta=meta)
            buffer, size = [], 0
    rest = "\n\n".join(buffer).strip()
    if rest:
        yield Unit(rest, 0, file_bytes, whole_file=True, meta=meta)
