"""Codex CLI rollout lines (`{timestamp, type, payload}`) to text.

Only `response_item` lines are rendered: `event_msg` lines repeat the same messages for the UI,
and embedding both would store every message twice. Older rollouts have no envelope: a bare
header line, then bare response items; both shapes are accepted.
"""

from __future__ import annotations

from typing import Any

from ingestd.parsers.claude import Rendered, RenderOptions, cap, compact_json, unknown_type

_IGNORED_TYPES = frozenset({"event_msg", "turn_context", "world_state", "inter_agent_communication_metadata"})
_IGNORED_ITEMS = frozenset({"ghost_snapshot", "image_generation_call", "web_search_call"})


def is_codex_line(obj: dict[str, Any]) -> bool:
    return "payload" in obj or (obj.get("type") in ("message", "function_call") and "role" in obj)


def render_codex(obj: dict[str, Any], options: RenderOptions) -> Rendered | str:
    kind = obj.get("type")
    payload = obj.get("payload")
    if "payload" not in obj:  # legacy rollout: the line is the item itself
        kind, payload = "response_item", obj
    if not isinstance(payload, dict):
        return unknown_type(kind)
    timestamp = obj.get("timestamp")
    if kind == "session_meta":
        return "ignored:session_meta"
    if kind == "compacted":
        message = payload.get("message")
        if isinstance(message, str) and message.strip():
            return Rendered("summary", message.strip(), {"timestamp": timestamp, "role": "summary"})
        return "empty"
    if kind in _IGNORED_TYPES:
        return f"ignored:{kind}"
    if kind != "response_item":
        return unknown_type(kind)
    return _render_item(payload, timestamp, options)


def _render_item(item: dict[str, Any], timestamp: Any, options: RenderOptions) -> Rendered | str:
    kind = item.get("type")
    meta: dict[str, Any] = {"timestamp": timestamp, "uuid": item.get("id"), "tools": []}
    if kind == "message":
        role = str(item.get("role") or "unknown")
        if role in ("developer", "system"):
            return "ignored:instructions"
        text = "\n".join(_texts(item.get("content"))).strip()
        if not text:
            return "empty"
        return Rendered(role, text, {**meta, "role": role})
    if kind == "reasoning":
        if not options.include_thinking:
            return "ignored:reasoning"
        text = "\n".join(_texts(item.get("summary"))).strip()
        return Rendered("assistant", f"(thinking) {text}", {**meta, "role": "assistant"}) if text else "empty"
    if kind in ("function_call", "custom_tool_call", "local_shell_call", "tool_call"):
        name = str(item.get("name") or kind)
        arguments = item.get("arguments", item.get("input", item.get("action")))
        text = f"[tool_use {name}] {compact_json(arguments, options.tool_input_max_chars)}"
        return Rendered("assistant", text, {**meta, "role": "assistant", "tools": [name]})
    if kind in ("function_call_output", "custom_tool_call_output", "tool_result"):
        output = item.get("output")
        body = output if isinstance(output, str) else compact_json(output, options.tool_result_max_chars)
        if not body:
            return "empty"
        return Rendered(
            "tool", "[tool_result] " + cap(body, options.tool_result_max_chars), {**meta, "role": "tool"}
        )
    if kind in _IGNORED_ITEMS:
        return f"ignored:{kind}"
    return unknown_type(kind)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        str(block["text"])
        for block in content
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    ]
