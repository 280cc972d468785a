"""Claude Code transcript lines (`~/.claude/projects/<project>/<session>.jsonl`) to text.

One JSONL line is one unit: user and assistant text, `tool_use` as the tool name with a compact
rendering of its input, `tool_result` text capped in length, and summaries. Thinking blocks and
base64 images are dropped unless the settings include them (an image is then a short
placeholder: base64 carries no meaning for a text embedding model).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# Line types Claude Code writes that carry no conversation text; they are skipped silently.
# Anything not listed here and not handled is counted as unknown.
_IGNORED_TYPES = frozenset(
    {
        "system",
        "file-history-snapshot",
        "queue-operation",
        "attachment",
        "progress",
        "permission-mode",
        "last-prompt",
        "custom-title",
        "ai-title",
        "agent-name",
        "mode",
        "worktree-state",
        "pr-link",
        "frame-link",
        "relocated",
        "bridge-session",
        "started",
        "result",
    }
)
CLAUDE_TYPES = _IGNORED_TYPES | {"user", "assistant", "summary"}
_FILE_KEYS = ("file_path", "notebook_path", "path")
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")


@dataclass(frozen=True, slots=True)
class RenderOptions:
    tool_result_max_chars: int = 2000
    include_thinking: bool = False
    include_images: bool = False
    tool_input_max_chars: int = 600


@dataclass(slots=True)
class Rendered:
    label: str
    text: str
    meta: dict[str, Any]


def is_claude_line(obj: dict[str, Any]) -> bool:
    return "payload" not in obj and ("sessionId" in obj or "message" in obj or "leafUuid" in obj)


def render_claude(obj: dict[str, Any], options: RenderOptions) -> Rendered | str:
    """Render one line; a string result is the reason the line was skipped."""
    kind = obj.get("type")
    if kind == "summary":
        summary = obj.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            return "empty-summary"
        return Rendered("summary", summary.strip(), {"uuid": obj.get("leafUuid")})
    if kind in _IGNORED_TYPES:
        return f"ignored:{kind}"
    if kind not in ("user", "assistant"):
        return unknown_type(kind)
    if obj.get("isMeta"):
        return "ignored:meta"
    message = obj.get("message")
    if not isinstance(message, dict):
        return "unknown:no-message"
    role = "summary" if obj.get("isCompactSummary") else str(message.get("role") or kind)
    tools: list[str] = []
    files: list[str] = []
    parts = _render_content(message.get("content"), options, tools, files)
    text = "\n".join(part for part in parts if part).strip()
    if not text:
        return "empty"
    meta: dict[str, Any] = {
        "uuid": obj.get("uuid"),
        "timestamp": obj.get("timestamp"),
        "role": role,
        "session": obj.get("sessionId"),
        "cwd": obj.get("cwd"),
        "git_branch": obj.get("gitBranch") or None,
        "sidechain": bool(obj.get("isSidechain")),
        "agent_id": obj.get("agentId"),
        "tools": tools,
        "files": files,
    }
    return Rendered(role, text, meta)


def _render_content(content: Any, options: RenderOptions, tools: list[str], files: list[str]) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            parts.append(_render_block(block, options, tools, files))
    return parts


def _render_block(block: dict[str, Any], options: RenderOptions, tools: list[str], files: list[str]) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text") or "")
    if kind == "thinking":
        return f"(thinking) {block.get('thinking', '')}" if options.include_thinking else ""
    if kind == "tool_use":
        name = str(block.get("name") or "tool")
        tools.append(name)
        tool_input = block.get("input")
        if isinstance(tool_input, dict):
            files.extend(str(tool_input[k]) for k in _FILE_KEYS if isinstance(tool_input.get(k), str))
        return f"[tool_use {name}] {compact_json(tool_input, options.tool_input_max_chars)}"
    if kind == "tool_result":
        body = _render_content(block.get("content"), options, tools, files)
        text = "\n".join(part for part in body if part)
        return "[tool_result] " + cap(text, options.tool_result_max_chars) if text else ""
    if kind == "image":
        if not options.include_images:
            return ""
        source = block.get("source")
        media = source.get("media_type", "unknown") if isinstance(source, dict) else "unknown"
        return f"[image {media}]"
    return ""


def unknown_type(kind: Any) -> str:
    """The count label of a line type no parser knows. The counts are logged, so the type is
    named only if it looks like a type name (a new release's "brand-new-type"): a line's type
    field can hold any text, a secret included."""
    if kind is None or (isinstance(kind, str) and _TYPE_NAME.fullmatch(kind)):
        return f"unknown:{kind}"
    return "unknown:(not a type name)"


def compact_json(value: Any, limit: int) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        text = str(value)
    return cap(text, limit)


def cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " …[truncated]"
