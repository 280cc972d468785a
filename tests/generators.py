"""Deterministic fixtures modelled on real Claude Code and Codex CLI files (no ../shared needed).

The shapes follow what Claude Code 1.0–2.x writes: `user`/`assistant` lines with string or
block content (`text`, `thinking`, `tool_use`, `tool_result`, `image`), `summary` lines, and
the bookkeeping types (`file-history-snapshot`, `system`, …) that carry no conversation text.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORDS = [
    "flaky",
    "test",
    "fixture",
    "retry",
    "timeout",
    "database",
    "migration",
    "index",
    "query",
    "cache",
    "memory",
    "leak",
    "thread",
    "async",
    "await",
    "socket",
    "handler",
    "parser",
    "token",
    "chunk",
    "embedding",
    "vector",
    "search",
    "collection",
    "upsert",
    "docker",
    "compose",
    "volume",
    "mount",
    "permission",
    "kernel",
    "signal",
    "restart",
    "deploy",
    "branch",
    "merge",
    "rebase",
    "commit",
    "review",
    "refactor",
    "module",
    "function",
    "class",
    "method",
    "interface",
    "provider",
    "settings",
    "config",
]
TOOLS = ("Bash", "Read", "Edit", "Write", "Grep", "Glob", "TodoWrite")


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng, rng.randint(6, 16)) for _ in range(sentences))


class ClaudeSession:
    """Builds Claude Code JSONL lines for one session, with a uuid chain like the real thing."""

    def __init__(self, seed: int, session: str | None = None, cwd: str = "/home/dev/project") -> None:
        self.rng = random.Random(seed)
        self.session = session or str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.cwd = cwd
        self.parent: str | None = None
        self.clock = 1_700_000_000

    def _envelope(self, kind: str, message: dict[str, Any], **extra: Any) -> dict[str, Any]:
        self.clock += self.rng.randint(1, 30)
        uid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        line = {
            "parentUuid": self.parent,
            "isSidechain": False,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session,
            "version": "2.0.14",
            "gitBranch": "main",
            "type": kind,
            "message": message,
            "uuid": uid,
            "timestamp": _timestamp(self.clock),
            **extra,
        }
        self.parent = uid
        return line

    def user(self, text: str) -> dict[str, Any]:
        return self._envelope("user", {"role": "user", "content": text})

    def assistant(self, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        message = {
            "id": f"msg_{self.rng.getrandbits(48):x}",
            "role": "assistant",
            "model": "claude-sonnet-4",
            "content": blocks,
        }
        return self._envelope("assistant", message, requestId=f"req_{self.rng.getrandbits(40):x}")

    def tool_result(self, tool_id: str, text: str) -> dict[str, Any]:
        content = [{"type": "tool_result", "tool_use_id": tool_id, "content": text}]
        return self._envelope("user", {"role": "user", "content": content})

    def image(self, size: int) -> dict[str, Any]:
        data = base64.b64encode(self.rng.randbytes(size)).decode()
        content = [
            {"type": "text", "text": "Here is a screenshot of the failing page."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        ]
        return self._envelope("user", {"role": "user", "content": content})

    def exchange(self) -> list[dict[str, Any]]:
        """One realistic turn: question, thinking + tool call, tool result, answer."""
        rng = self.rng
        tool_id = f"toolu_{rng.getrandbits(64):x}"
        tool = rng.choice(TOOLS)
        lines = [
            self.user(paragraph(rng, rng.randint(1, 3))),
            self.assistant(
                [
                    {"type": "thinking", "thinking": "SECRET-THOUGHT " + sentence(rng, 8), "signature": "x"},
                    {"type": "text", "text": paragraph(rng, rng.randint(1, 2))},
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": tool,
                        "input": {"file_path": f"src/{rng.choice(WORDS)}.py", "command": sentence(rng, 4)},
                    },
                ]
            ),
            self.tool_result(tool_id, paragraph(rng, rng.randint(1, 6))),
            self.assistant([{"type": "text", "text": paragraph(rng, rng.randint(1, 4))}]),
        ]
        if rng.random() < 0.1:
            lines.append({"type": "file-history-snapshot", "messageId": self.parent, "snapshot": {}})
        return lines

    def lines(self, exchanges: int) -> Iterator[dict[str, Any]]:
        yield {
            "type": "summary",
            "summary": "Fixing the flaky " + self.rng.choice(WORDS) + " test",
            "leafUuid": "leaf-1",
        }
        for _ in range(exchanges):
            yield from self.exchange()


def _timestamp(clock: int) -> str:
    return f"2025-10-{1 + clock % 27:02d}T{clock % 24:02d}:{clock % 60:02d}:00.000Z"


def dump(lines: Any) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def write_transcript(path: Path, seed: int, exchanges: int, session: str | None = None) -> ClaudeSession:
    path.parent.mkdir(parents=True, exist_ok=True)
    session_obj = ClaudeSession(seed, session or path.stem)
    path.write_bytes(dump(session_obj.lines(exchanges)))
    return session_obj


def transcript_of_size(path: Path, seed: int, size: int) -> None:
    """A transcript of roughly `size` bytes, written in a streaming way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    session = ClaudeSession(seed, path.stem)
    written = 0
    with path.open("wb") as handle:
        for line in session.lines(10**9):
            data = json.dumps(line).encode() + b"\n"
            handle.write(data)
            written += len(data)
            if written >= size:
                return


def codex_rollout(seed: int, turns: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ts = "2025-10-30T11:00:00.000Z"
    lines: list[dict[str, Any]] = [
        {
            "timestamp": ts,
            "type": "session_meta",
            "payload": {"id": f"sess-{seed}", "cwd": "/work/codex-proj", "git": {"branch": "dev"}},
        },
        {"timestamp": ts, "type": "turn_context", "payload": {"cwd": "/work/codex-proj", "model": "gpt-5"}},
    ]
    for _ in range(turns):
        question = paragraph(rng, 2)
        lines += [
            {
                "timestamp": ts,
                "type": "response_item",
                "payload": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": question}],
                },
            },
            {"timestamp": ts, "type": "event_msg", "payload": {"type": "user_message", "message": question}},
            {
                "timestamp": ts,
                "type": "response_item",
                "payload": {
                    "type": "function_call",
                    "name": "shell",
                    "arguments": json.dumps({"command": ["pytest", "-x"]}),
                    "call_id": "c1",
                },
            },
            {
                "timestamp": ts,
                "type": "response_item",
                "payload": {"type": "function_call_output", "call_id": "c1", "output": paragraph(rng, 2)},
            },
            {
                "timestamp": ts,
                "type": "response_item",
                "payload": {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": paragraph(rng, 2)}],
                },
            },
        ]
    return lines


def markdown_document(seed: int, sections: int) -> str:
    rng = random.Random(seed)
    parts = [f"# Notes {seed}\n\nIntro. {paragraph(rng, 2)}\n"]
    for index in range(sections):
        parts.append(f"## Section {index}: {rng.choice(WORDS)}\n\n{paragraph(rng, rng.randint(2, 12))}\n")
        if rng.random() < 0.3:
            parts.append("```python\n# a heading-like comment inside code\ndef f():\n    return 1\n```\n")
    return "\n".join(parts)


def simple_pdf(pages: list[str]) -> bytes:
    """A small valid PDF with one line of Helvetica text per page (no PDF library needed)."""
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for index, text in enumerate(pages):
        content = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * index} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
