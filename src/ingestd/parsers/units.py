"""The unit of parsed text that every parser yields and the chunker packs.

A unit is the smallest piece that must not be split across chunks unless it is too long on its
own: one transcript message, one document section, one PDF page. `start` and `end` are always
byte offsets in the file, so that progress can be committed as a resumable offset. A unit of a
format parsed as a whole (PDF, HTML, UTF-16 text) has no byte range of its own: it says so with
`whole_file`, its range is the whole file, and a read can restart only at the file's start. What
stood in for offsets there before is named: a PDF unit's page is `meta["page"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Unit:
    text: str
    start: int  # byte offset of the input the unit came from
    end: int  # byte offset just past it
    line: int = 0  # line number of `start` (a whole-file unit has none: 0)
    next_line: int = 0  # line number of `end`
    label: str = ""
    opens_section: bool = False  # starts at a heading: never packed with the section before it
    whole_file: bool = False  # from a format parsed as a whole: start..end is the whole file
    meta: dict[str, Any] = field(default_factory=dict)

    def rendered(self) -> str:
        return f"{self.label}: {self.text}" if self.label else self.text


@dataclass(slots=True)
class LineIssue:
    """A line that was skipped, with why; the reader logs these with file and line number."""

    line: int
    offset: int
    reason: str
