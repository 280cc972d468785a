"""JSONL transcripts (Claude Code and Codex CLI) from lines to units.

A bad line never stops a file: invalid JSON, JSON of an unexpected shape, nesting too deep to
parse, or a line over the length cap is recorded with its line number and skipped. Unknown line
types are counted, so a new Claude Code release shows up in the logs rather than as lost text.
A skip reason names the kind of problem only, never text of the line: it is logged, and a line
can hold anything (a JSON string line is often a pasted secret).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestd.parsers.claude import (
    CLAUDE_TYPES,
    Rendered,
    RenderOptions,
    is_claude_line,
    render_claude,
    unknown_type,
)
from ingestd.parsers.codex import is_codex_line, render_codex
from ingestd.parsers.units import LineIssue, Unit
from ingestd.reader import Line

MAX_ISSUES_KEPT = 20
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Project and session of one transcript file, from its place under the root.

    The layout is authoritative for `<session>.jsonl` and `<session>/subagents/…`; for
    `agent-*.jsonl` and Codex rollouts the lines know better (sessionId, session_meta), and the
    name is only the fallback. Computed once per file; `payload` applies it to each chunk.
    """

    project: str | None  # Claude Code's project folder
    session: str | None  # None: the lines say
    fallback: str | None  # the session when no line says
    rollout: bool  # Codex files rollouts by date, so the folder names no project

    @classmethod
    def of(cls, path: Path, root: Path) -> FileIdentity:
        parts = path.relative_to(root).parts
        project = parts[0] if len(parts) > 1 else None
        rollout = path.stem.startswith("rollout-")
        if "subagents" in parts[:-1]:
            return cls(project, parts[parts.index("subagents") - 1], None, rollout)
        if path.stem.startswith("agent-") or rollout:
            found = _UUID.findall(path.stem)
            return cls(project, None, found[-1] if found else path.stem, rollout)
        return cls(project, path.stem, None, rollout)

    def payload(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A chunk's project, project name and session. A rollout's project is its working
        directory (session_meta.cwd) in Claude's spelling (`/a/b.c` -> `-a-b-c`), so both tools'
        sessions of one project share the name; without a cwd the folder is the fallback."""
        cwd = meta.get("cwd")
        cwd = cwd.rstrip("/") if isinstance(cwd, str) and cwd.strip("/") else None
        out: dict[str, Any] = {
            "project": _NOT_ALNUM.sub("-", cwd) if cwd and self.rollout else self.project,
            "session": self.session or meta.get("session") or self.fallback,
        }
        if cwd:
            out["project_name"] = cwd.rsplit("/", 1)[-1]
        return out


class TranscriptParser:
    def __init__(self, path: Path, root: Path, options: RenderOptions) -> None:
        self.identity = FileIdentity.of(path, root)
        self.options = options
        self.counts: Counter[str] = Counter()
        self.issues: list[LineIssue] = []
        self.context: dict[str, Any] = {}

    def prime(self, first_line: bytes) -> None:
        """Read file-level context (Codex's session_meta) when resuming past the first line."""
        obj, problem = _loads(first_line)
        if problem is None and isinstance(obj, dict):
            self._remember_context(obj)

    def parse(self, line: Line) -> Unit | None:
        if line.data is None:
            return self._skip(line, "line longer than MAX_LINE_BYTES")
        if not line.data.strip():
            self.counts["blank"] += 1
            return None
        obj, problem = _loads(line.data)
        if problem is not None:
            return self._skip(line, problem)
        if not isinstance(obj, dict):
            return self._skip(line, f"unexpected JSON shape: {_json_kind(obj)}, not an object")
        self._remember_context(obj)
        rendered = self._render(obj)
        if isinstance(rendered, str):
            self.counts[rendered.split(":", 1)[0]] += 1
            if rendered.startswith("unknown"):
                self.counts[rendered] += 1
            return None
        self.counts["kept"] += 1
        meta = {**self.context, **{k: v for k, v in rendered.meta.items() if v not in (None, [], "")}}
        if self.identity.session:
            meta["session"] = self.identity.session
        # Otherwise the session is the line's own, or the last one seen; a unit with neither
        # (a summary opening an agent file) takes its chunk's, or the file name's (`payload`).
        return Unit(
            text=rendered.text,
            start=line.start,
            end=line.end,
            line=line.number,
            next_line=line.number + 1,
            label=rendered.label,
            meta=meta,
        )

    def _render(self, obj: dict[str, Any]) -> Rendered | str:
        if is_codex_line(obj):
            return render_codex(obj, self.options)
        if is_claude_line(obj) or obj.get("type") in CLAUDE_TYPES:
            return render_claude(obj, self.options)
        if "instructions" in obj and "id" in obj:  # legacy Codex header
            return "ignored:header"
        return unknown_type(obj.get("type"))

    def _remember_context(self, obj: dict[str, Any]) -> None:
        if isinstance(obj.get("sessionId"), str) and obj["sessionId"]:
            self.context["session"] = obj["sessionId"]  # Claude: a summary line carries none
        if obj.get("type") != "session_meta" or not isinstance(obj.get("payload"), dict):
            return
        payload = obj["payload"]
        git = payload.get("git") if isinstance(payload.get("git"), dict) else {}
        for key, value in (
            ("session", payload.get("id")),
            ("cwd", payload.get("cwd")),
            ("git_branch", git.get("branch")),
        ):
            if isinstance(value, str) and value:
                self.context[key] = value

    def _skip(self, line: Line, reason: str) -> Unit | None:
        self.counts["malformed"] += 1
        if len(self.issues) < MAX_ISSUES_KEPT:
            self.issues.append(LineIssue(line=line.number, offset=line.start, reason=reason))
        return None


def _loads(data: bytes) -> tuple[Any, str | None]:
    """Parsed JSON and None, or None and why it could not be parsed. The reason is a separate
    value: a line that is a JSON string parses to a string too, and must not become the reason.
    The decoder's messages name a position and an expectation, never the text at it."""
    try:
        return json.loads(data), None
    except UnicodeDecodeError:
        return None, "line is not valid UTF-8"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:
        return None, f"invalid JSON: {str(exc)[:80]}"


def _json_kind(value: Any) -> str:
    """What JSON value a line holds, in words: the reason says this, never the value itself."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__
