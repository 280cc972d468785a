"""The unit of parsed text that every parser yields and the chunker packs.

A unit is the smallest piece that must not be split across chunks unless it is too long on its
own: one transcript message, one document section, one PDF page. Units carry the byte range
of the input they came from, so that progress can be committed as a resumable offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Unit:
    text: str
    start: int
    end: int
    line: int = 0
    next_line: int = 0
    label: str = ""
    opens_section: bool = False  # starts at a heading: never packed with the section before it
    meta: dict[str, Any] = field(default_factory=dict)

    def rendered(self) -> str:
        return f"{self.label}: {self.text}" if self.label else self.text


@dataclass(slots=True)
class LineIssue:
    """A line that was skipped, with why; the reader logs these with file and line number."""

    line: int
    offset: int
    reason: str
