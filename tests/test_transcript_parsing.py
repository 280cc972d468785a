"""Claude Code and Codex CLI transcripts, line by line and end to end (issue 2, item 4).

Parser-level tests feed `TranscriptParser` hand-written lines shaped like the real files
(Claude Code 2.x envelopes, Codex `{timestamp, type, payload}` rollouts); the end-to-end tests
push the same kind of file through the real pipeline into the real embedded Qdrant and read
the stored payloads back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from conftest import CountingProvider, Events, engine_with, ingest, stored_points
from ingestd.engine import Engine
from ingestd.parsers.claude import RenderOptions
from ingestd.parsers.transcripts import FileIdentity, TranscriptParser
from ingestd.parsers.units import Unit
from ingestd.reader import Line

SESSION = "7f3c9a2e-1b4d-4e8f-9a6c-2d5e8f1a3b7c"
PROJECT = "-home-dev-shop-api"
CWD = "/home/dev/shop-api"
BRANCH = "feature/cart-totals"
# Random-looking bytes: base64 of them must never reach a payload or the model.
IMAGE_B64 = base64.b64encode(bytes(range(256)) * 8).decode()


# --- fixture lines -------------------------------------------------------------------------
def claude(
    kind: str,
    content: Any,
    uid: str,
    ts: str,
    *,
    session: str = SESSION,
    parent: str | None = None,
    role: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One Claude Code 2.x line (the envelope fields the real files carry)."""
    message: dict[str, Any] = {"role": role or kind, "content": content}
    if kind == "assistant":
        message = {"id": f"msg_{uid}", "type": "message", "model": "claude-sonnet-4-5", **message}
    line: dict[str, Any] = {
        "parentUuid": parent,
        "isSidechain": False,
        "userType": "external",
        "cwd": CWD,
        "sessionId": session,
        "version": "2.0.37",
        "gitBranch": BRANCH,
        "type": kind,
        "message": message,
        "uuid": uid,
        "timestamp": ts,
    }
    if kind == "assistant":
        line["requestId"] = f"req_{uid}"
    line.update(extra)
    return line


def claude_session(session: str = SESSION, tool_result: str | None = None) -> list[dict[str, Any]]:
    """A realistic session: summary, question, thinking + text + tool calls, tool result,
    a screenshot, the answer, and the bookkeeping lines Claude Code interleaves."""
    result = tool_result or "KINGFISHER total computed for 3 items; " + "cart line ok. " * 20
    return [
        {"type": "summary", "summary": "Cart totals rounding bug in checkout", "leafUuid": "u-0006"},
        {"type": "file-history-snapshot", "messageId": "u-0001", "snapshot": {}, "isSnapshotUpdate": False},
        claude(
            "user",
            "Why does the cart total drift by a cent on large orders?",
            "u-0001",
            "2025-11-12T18:31:18.697Z",
            session=session,
        ),
        claude(
            "assistant",
            [
                {"type": "thinking", "thinking": "PELICANTHOUGHT maybe float rounding", "signature": "sig"},
                {"type": "text", "text": "Let me look at how the totals are summed."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "Read",
                    "input": {"file_path": "/home/dev/shop-api/src/cart.py"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "Bash",
                    "input": {"command": "pytest -q tests/test_cart.py", "description": "run cart tests"},
                },
            ],
            "u-0002",
            "2025-11-12T18:31:32.217Z",
            session=session,
            parent="u-0001",
        ),
        claude(
            "user",
            [{"type": "tool_result", "tool_use_id": "toolu_01", "content": result}],
            "u-0003",
            "2025-11-12T18:31:40.000Z",
            session=session,
            parent="u-0002",
            toolUseResult={"stdout": result, "stderr": "", "interrupted": False},
        ),
        claude(
            "user",
            [
                {"type": "text", "text": "Here is the checkout page screenshot."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_B64}},
            ],
            "u-0004",
            "2025-11-12T18:32:05.000Z",
            session=session,
            parent="u-0003",
        ),
        {
            "type": "system",
            "subtype": "turn_duration",
            "durationMs": 5120,
            "sessionId": session,
            "uuid": "s-1",
            "timestamp": "2025-11-12T18:32:06.000Z",
        },
        claude(
            "assistant",
            [
                {
                    "type": "tool_use",
                    "id": "toolu_03",
                    "name": "Edit",
                    "input": {
                        "file_path": "/home/dev/shop-api/src/cart.py",
                        "old_string": "total += price",
                        "new_string": "total += Decimal(price)",
                    },
                },
                {"type": "text", "text": "Use Decimal for money; floats accumulate rounding error."},
            ],
            "u-0005",
            "2025-11-12T18:32:30.000Z",
            session=session,
            parent="u-0004",
        ),
        claude(
            "user",
            "Great, that fixed the GOLDFINCH test.",
            "u-0006",
            "2025-11-12T18:33:00.000Z",
            session=session,
            parent="u-0005",
        ),
    ]


def jsonl(lines: Iterable[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def lines_of(data: bytes) -> list[Line]:
    out, start = [], 0
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        out.append(Line(data=raw.rstrip(b"\n"), start=start, end=start + len(raw), number=number))
        start += len(raw)
    return out


def parse(
    path: Path, root: Path, lines: Iterable[Any], **options: Any
) -> tuple[list[Unit], TranscriptParser]:
    parser = TranscriptParser(path, root, RenderOptions(**options))
    units = [unit for line in lines_of(jsonl(lines)) if (unit := parser.parse(line)) is not None]
    return units, parser


ROOT = Path("/watch/conversations")
SESSION_FILE = ROOT / PROJECT / f"{SESSION}.jsonl"


def by_uuid(units: list[Unit]) -> dict[str, Unit]:
    return {str(unit.meta.get("uuid")): unit for unit in units}


# --- Claude Code, parser level -------------------------------------------------------------
def test_user_and_assistant_text_kept_with_role_labels() -> None:
    units, parser = parse(SESSION_FILE, ROOT, claude_session())
    got = by_uuid(units)
    assert got["u-0001"].label == "user"
    assert got["u-0001"].text == "Why does the cart total drift by a cent on large orders?"
    assert got["u-0001"].rendered().startswith("user: Why does the cart total")
    assert got["u-0002"].label == "assistant"
    assert got["u-0002"].text.startswith("Let me look at how the totals are summed.")
    assert got["u-0005"].rendered().endswith("assistant: " + got["u-0005"].text)
    assert "Use Decimal for money" in got["u-0005"].text
    # Every message line is one unit, in file order; the bookkeeping lines are not.
    assert [u.meta.get("uuid") for u in units] == [
        "u-0006",
        "u-0001",
        "u-0002",
        "u-0003",
        "u-0004",
        "u-0005",
        "u-0006",
    ]
    assert [u.line for u in units] == [1, 3, 4, 5, 6, 8, 9]
    assert parser.counts["kept"] == 7 and parser.counts["ignored"] == 2  # snapshot + system


def test_tool_use_is_tool_name_plus_compact_input() -> None:
    units, _ = parse(SESSION_FILE, ROOT, claude_session())
    text = by_uuid(units)["u-0002"].text
    assert '[tool_use Read] {"file_path":"/home/dev/shop-api/src/cart.py"}' in text
    assert '[tool_use Bash] {"command":"pytest -q tests/test_cart.py","description":"run cart tests"}' in text
    edit = by_uuid(units)["u-0005"].text
    assert edit.startswith('[tool_use Edit] {"file_path":"/home/dev/shop-api/src/cart.py","old_string":')


def test_tool_use_input_is_capped() -> None:
    huge = {"file_path": "src/big.py", "content": "x = 1\n" * 5000}
    line = claude("assistant", [{"type": "tool_use", "id": "t", "name": "Write", "input": huge}], "u-1", "t")
    units, _ = parse(SESSION_FILE, ROOT, [line], tool_input_max_chars=100)
    (unit,) = units
    rendered = '{"file_path":"src/big.py","content":"' + "x = 1\\n" * 20
    assert unit.text == "[tool_use Write] " + rendered[:100] + " …[truncated]"
    assert unit.meta["files"] == ["src/big.py"]


def test_tool_result_text_kept_and_capped_at_tool_result_max_chars() -> None:
    body = "KINGFISHER " + "".join(f"row {n:04d} ok; " for n in range(400)) + "ZEBRAFINCH"
    units, _ = parse(SESSION_FILE, ROOT, claude_session(tool_result=body), tool_result_max_chars=300)
    text = by_uuid(units)["u-0003"].text
    assert text == "[tool_result] " + body[:300] + " …[truncated]"
    assert "ZEBRAFINCH" not in text
    # Under the cap the result is kept whole; list-of-blocks content is joined.
    short = claude(
        "user",
        [
            {
                "type": "tool_result",
                "tool_use_id": "t",
                "content": [{"type": "text", "text": "3 passed"}, {"type": "text", "text": "in 0.2s"}],
            }
        ],
        "u-9",
        "2025-11-12T18:40:00.000Z",
    )
    (unit,) = parse(SESSION_FILE, ROOT, [short], tool_result_max_chars=300)[0]
    assert unit.text == "[tool_result] 3 passed\nin 0.2s"
    assert unit.label == "user"


def test_summary_lines_kept() -> None:
    units, _ = parse(SESSION_FILE, ROOT, claude_session())
    first = units[0]
    assert (first.label, first.text) == ("summary", "Cart totals rounding bug in checkout")
    assert first.rendered() == "summary: Cart totals rounding bug in checkout"
    assert first.meta["uuid"] == "u-0006"  # the leaf it summarises
    compact = claude(
        "user", "This session is being continued: we fixed rounding.", "u-7", "t", isCompactSummary=True
    )
    (unit,) = parse(SESSION_FILE, ROOT, [compact])[0]
    assert unit.label == "summary" and unit.meta["role"] == "summary"


def test_thinking_dropped_by_default_and_kept_when_included() -> None:
    units, _ = parse(SESSION_FILE, ROOT, claude_session())
    assert all("PELICANTHOUGHT" not in unit.text for unit in units)
    only_thinking = claude(
        "assistant", [{"type": "thinking", "thinking": "hmm", "signature": "s"}], "u-8", "t"
    )
    dropped, parser = parse(SESSION_FILE, ROOT, [only_thinking])
    assert dropped == [] and parser.counts["empty"] == 1

    units, _ = parse(SESSION_FILE, ROOT, claude_session(), include_thinking=True)
    text = by_uuid(units)["u-0002"].text
    assert text.startswith("(thinking) PELICANTHOUGHT maybe float rounding\nLet me look")


def test_images_dropped_by_default_and_a_placeholder_when_included() -> None:
    units, _ = parse(SESSION_FILE, ROOT, claude_session())
    assert by_uuid(units)["u-0004"].text == "Here is the checkout page screenshot."
    assert all(IMAGE_B64[:40] not in unit.text and "[image" not in unit.text for unit in units)

    units, _ = parse(SESSION_FILE, ROOT, claude_session(), include_images=True)
    text = by_uuid(units)["u-0004"].text
    # "Kept" is a placeholder naming the media type: base64 means nothing to a text model.
    assert text == "Here is the checkout page screenshot.\n[image image/png]"
    assert all(IMAGE_B64[:40] not in unit.text for unit in units)


def test_message_metadata() -> None:
    units, _ = parse(SESSION_FILE, ROOT, claude_session())
    meta = by_uuid(units)["u-0002"].meta
    assert meta["uuid"] == "u-0002" and meta["timestamp"] == "2025-11-12T18:31:32.217Z"
    assert meta["role"] == "assistant" and meta["session"] == SESSION
    assert meta["cwd"] == CWD and meta["git_branch"] == BRANCH
    assert meta["tools"] == ["Read", "Bash"]
    assert meta["files"] == ["/home/dev/shop-api/src/cart.py"]  # Bash has no file input
    assert "sidechain" not in meta or meta["sidechain"] is False
    notebook = claude(
        "assistant",
        [
            {
                "type": "tool_use",
                "id": "a",
                "name": "NotebookEdit",
                "input": {"notebook_path": "nb/eda.ipynb"},
            },
            {"type": "tool_use", "id": "b", "name": "Grep", "input": {"pattern": "TODO", "path": "src/"}},
        ],
        "u-10",
        "t",
    )
    (unit,) = parse(SESSION_FILE, ROOT, [notebook])[0]
    assert unit.meta["tools"] == ["NotebookEdit", "Grep"] and unit.meta["files"] == ["nb/eda.ipynb", "src/"]


def test_session_comes_from_the_file_name() -> None:
    # The layout is authoritative for `<project>/<session>.jsonl`, even over a line's sessionId.
    lines = [claude("user", "hello there", "u-1", "t", session="something-else")]
    (unit,) = parse(SESSION_FILE, ROOT, lines)[0]
    assert unit.meta["session"] == SESSION


def test_ignored_unknown_and_malformed_lines_are_counted() -> None:
    good = claude("user", "still here after the bad lines", "u-2", "t")
    lines: list[Any] = [
        b"{not json",
        {"type": "queue-operation", "operation": "enqueue", "sessionId": SESSION},
        {"type": "brand-new-type", "sessionId": SESSION, "message": {"content": "x"}},
        b"[1, 2]",
        b"",
        good,
    ]
    units, parser = parse(SESSION_FILE, ROOT, lines)
    assert [u.text for u in units] == ["still here after the bad lines"] and units[0].line == 6
    assert parser.counts["malformed"] == 2 and parser.counts["blank"] == 1
    assert parser.counts["ignored"] == 1
    assert parser.counts["unknown"] == 1 and parser.counts["unknown:brand-new-type"] == 1
    assert [(issue.line, issue.reason.split(":")[0]) for issue in parser.issues] == [
        (1, "invalid JSON"),
        (4, "unexpected JSON shape"),
    ]


SECRET = "hunter2"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'"my db password is hunter2"', "a string"),
        (b'["my db password is hunter2"]', "an array"),
        (b"42", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_a_line_that_is_not_an_object_is_skipped_by_its_kind_alone(line: bytes, kind: str) -> None:
    """A JSON string line used to become its own skip reason, logged in full (issue 16)."""
    good = claude("user", "still here after the odd line", "u-2", "t")
    units, parser = parse(SESSION_FILE, ROOT, [line, good])
    assert [u.text for u in units] == ["still here after the odd line"]
    assert [(issue.line, issue.reason) for issue in parser.issues] == [
        (1, f"unexpected JSON shape: {kind}, not an object")
    ]
    assert parser.counts["malformed"] == 1


def test_unknown_types_are_counted_without_free_text() -> None:
    """The line counts are logged with the file's outcome: a type that is not a type name
    (here a sentence holding a password) is counted, but not by its text."""
    lines: list[Any] = [
        {"type": "my db password is hunter2", "sessionId": SESSION, "message": {"content": "x"}},
        {"type": "brand-new-type", "sessionId": SESSION},
        {"timestamp": "t", "type": "my db password is hunter2", "payload": {"type": "x"}},
        {"timestamp": "t", "type": "response_item", "payload": {"type": "hunter2 is the password"}},
    ]
    units, parser = parse(SESSION_FILE, ROOT, lines)
    assert units == [] and parser.issues == []
    assert parser.counts["unknown:(not a type name)"] == 3 and parser.counts["unknown:brand-new-type"] == 1
    assert SECRET not in repr(parser.counts)


async def test_secret_lines_reach_neither_the_logs_nor_the_store(
    engine: Engine, counting: CountingProvider, events: Events
) -> None:
    lines: list[Any] = [
        b'"my db password is hunter2"',
        {"type": "my db password is hunter2", "sessionId": SESSION, "message": {"content": "x"}},
        claude("user", "the build is green again", "u-1", "t"),
    ]
    path = write(engine.settings.watch.conversations_dirs[0] / PROJECT / f"{SESSION}.jsonl", lines)
    outcome = await ingest(engine, path)
    assert outcome.status == "done" and outcome.chunks == 1
    logged = events()
    skipped = [e for e in logged if e["event"] == "line.skipped"]
    assert [(e["path"], e["line"], e["reason"]) for e in skipped] == [
        (str(path), 1, "unexpected JSON shape: a string, not an object")
    ]
    assert SECRET not in json.dumps(logged)
    assert not any(SECRET in text for text in counting.texts)
    assert SECRET not in json.dumps(await payloads(engine, path))


# --- subagents -----------------------------------------------------------------------------
def agent_lines(session_id: str, agent: str) -> list[dict[str, Any]]:
    common: dict[str, Any] = {"isSidechain": True, "agentId": agent}
    return [
        claude(
            "user",
            "Search the repo for TODO comments",
            "a-1",
            "2025-12-16T00:00:02.200Z",
            session=session_id,
            **common,
        ),
        claude(
            "assistant",
            [
                {"type": "text", "text": "Searching."},
                {"type": "tool_use", "name": "Grep", "input": {"pattern": "TODO", "path": "src"}},
            ],
            "a-2",
            "2025-12-16T00:00:02.300Z",
            session=session_id,
            parent="a-1",
            **common,
        ),
    ]


def test_subagents_folder_belongs_to_its_parent_session() -> None:
    # Real files there carry their own "agent-…" sessionId: the folder names the session.
    path = ROOT / PROJECT / SESSION / "subagents" / "agent-a0ad4f44468bdf20d.jsonl"
    units, _ = parse(path, ROOT, agent_lines("agent-a0ad4f44468bdf20d", "a0ad4f44468bdf20d"))
    assert len(units) == 2
    assert {u.meta["session"] for u in units} == {SESSION}
    assert all(u.meta["sidechain"] is True and u.meta["agent_id"] == "a0ad4f44468bdf20d" for u in units)


def test_top_level_agent_file_uses_the_session_id_inside_its_lines() -> None:
    path = ROOT / PROJECT / "agent-test123.jsonl"
    units, _ = parse(path, ROOT, agent_lines(SESSION, "test123"))
    assert {u.meta["session"] for u in units} == {SESSION}
    # Without a sessionId in any line, the chunk falls back to the file's name.
    (unit,) = parse(path, ROOT, [{"type": "summary", "summary": "Found 3 TODOs", "leafUuid": "a-2"}])[0]
    assert "session" not in unit.meta
    assert FileIdentity.of(path, ROOT).payload(unit.meta)["session"] == "agent-test123"


def test_summary_after_messages_in_agent_file_stays_in_the_parent_session() -> None:
    path = ROOT / PROJECT / "agent-test123.jsonl"
    lines = [
        *agent_lines(SESSION, "test123"),
        {"type": "summary", "summary": "Found 3 TODOs", "leafUuid": "a-2"},
    ]
    units, _ = parse(path, ROOT, lines)
    assert [u.meta["session"] for u in units] == [SESSION, SESSION, SESSION]


# --- Codex CLI, parser level ---------------------------------------------------------------
CODEX_SESSION = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
ROLLOUT = ROOT / "2025" / "10" / "30" / f"rollout-2025-10-30T11-00-00-{CODEX_SESSION}.jsonl"


def codex_lines(output: str = "3 passed in 0.41s") -> list[Any]:
    def at(second: int, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"timestamp": f"2025-10-30T11:00:{second:02d}.000Z", "type": kind, "payload": payload}

    question = "Why is test_checkout flaky on CI?"
    answer = "The fixture shares a socket between workers; give each worker its own port."
    return [
        at(
            0,
            "session_meta",
            {
                "id": CODEX_SESSION,
                "timestamp": "2025-10-30T11:00:00.000Z",
                "cwd": "/work/codex-proj",
                "originator": "codex_cli_rs",
                "cli_version": "0.51.0",
                "git": {"branch": "dev"},
            },
        ),
        at(
            1,
            "response_item",
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}],
            },
        ),
        at(
            2,
            "turn_context",
            {"cwd": "/work/codex-proj", "model": "gpt-5-codex", "approval_policy": "on-request"},
        ),
        at(
            3,
            "response_item",
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]},
        ),
        at(3, "event_msg", {"type": "user_message", "message": question, "images": []}),
        at(
            4,
            "response_item",
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "OSPREYTHOUGHT"}],
                "encrypted_content": "gAAAA",
            },
        ),
        at(
            5,
            "response_item",
            {
                "type": "function_call",
                "name": "shell",
                "call_id": "call_1",
                "arguments": json.dumps({"command": ["pytest", "-x", "tests/test_checkout.py"]}),
            },
        ),
        at(6, "response_item", {"type": "function_call_output", "call_id": "call_1", "output": output}),
        at(7, "event_msg", {"type": "token_count", "info": {"total_token_usage": {"input_tokens": 1420}}}),
        at(
            8,
            "response_item",
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": answer}]},
        ),
        at(8, "event_msg", {"type": "agent_message", "message": answer + " HERONCOPY"}),
        at(9, "brand_new_envelope", {"anything": True}),
        at(9, "response_item", {"type": "future_item_kind", "id": "x"}),
    ]


def test_codex_user_and_assistant_text_kept_without_event_msg_copies() -> None:
    units, parser = parse(ROLLOUT, ROOT, codex_lines())
    assert [(u.label, u.line) for u in units] == [
        ("user", 4),
        ("assistant", 7),
        ("tool", 8),
        ("assistant", 10),
    ]
    assert units[0].text == "Why is test_checkout flaky on CI?"
    assert units[3].text.startswith("The fixture shares a socket")
    assert units[1].text.startswith("[tool_use shell] ") and "tests/test_checkout.py" in units[1].text
    assert units[1].meta["tools"] == ["shell"]
    assert units[2].text == "[tool_result] 3 passed in 0.41s"
    joined = "\n".join(u.text for u in units)
    assert "HERONCOPY" not in joined and "OSPREYTHOUGHT" not in joined and "permissions" not in joined
    assert joined.count("Why is test_checkout flaky") == 1
    # session_meta names the session, cwd and branch for every unit.
    assert {(u.meta["session"], u.meta["cwd"], u.meta["git_branch"]) for u in units} == {
        (CODEX_SESSION, "/work/codex-proj", "dev")
    }
    assert units[0].meta["timestamp"] == "2025-10-30T11:00:03.000Z"
    assert parser.counts["kept"] == 4
    assert parser.counts["ignored"] == 7  # session_meta, developer, turn_context, reasoning, 3 event_msg
    assert parser.counts["unknown"] == 2
    assert parser.counts["unknown:brand_new_envelope"] == 1 and parser.counts["unknown:future_item_kind"] == 1


def test_codex_reasoning_kept_when_thinking_included_and_output_capped() -> None:
    units, _ = parse(
        ROLLOUT, ROOT, codex_lines(output="y" * 500), include_thinking=True, tool_result_max_chars=50
    )
    texts = [u.text for u in units]
    assert "(thinking) OSPREYTHOUGHT" in texts
    assert "[tool_result] " + "y" * 50 + " …[truncated]" in texts


def test_codex_invalid_json_line_does_not_stop_the_file() -> None:
    lines = codex_lines()
    lines.insert(4, b'{"timestamp":"2025-10-30T11:00:03.500Z","type":"response_item","payload":{"type":')
    units, parser = parse(ROLLOUT, ROOT, lines)
    assert [(issue.line, issue.reason.startswith("invalid JSON")) for issue in parser.issues] == [(5, True)]
    assert parser.counts["malformed"] == 1
    assert [u.line for u in units] == [4, 8, 9, 11]  # everything after the bad line still parsed


def test_codex_resume_primes_session_meta() -> None:
    data = jsonl(codex_lines())
    lines = lines_of(data)
    parser = TranscriptParser(ROLLOUT, ROOT, RenderOptions())
    parser.prime(lines[0].data or b"")
    units = [u for line in lines[9:] if (u := parser.parse(line)) is not None]
    assert [u.label for u in units] == ["assistant"]
    assert units[0].meta["session"] == CODEX_SESSION and units[0].meta["git_branch"] == "dev"


# --- end to end: real pipeline, real embedded Qdrant ---------------------------------------
FIELDS = [
    "path",
    "text",
    "project",
    "project_name",
    "session",
    "uuids",
    "roles",
    "timestamp_first",
    "timestamp_last",
    "git_branch",
    "cwd",
    "tools",
    "files",
    "sidechain",
    "agent_id",
    "ordinal",
]


async def payloads(engine: Engine, path: Path) -> list[dict[str, Any]]:
    rows = await engine.store.scroll_all("conversations", FIELDS)
    return sorted((p for _, p in rows if p["path"] == str(path)), key=lambda p: int(p["ordinal"]))


def write(path: Path, lines: Iterable[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jsonl(lines))
    return path


async def test_claude_session_end_to_end_payloads(engine: Engine, counting: CountingProvider) -> None:
    body = "KINGFISHER " + "".join(f"row {n:04d} ok; " for n in range(400)) + "ZEBRAFINCH"
    path = write(
        engine.settings.watch.conversations_dirs[0] / PROJECT / f"{SESSION}.jsonl",
        claude_session(tool_result=body),
    )
    outcome = await ingest(engine, path)
    assert outcome.status == "done" and outcome.chunks >= 2
    rows = await payloads(engine, path)
    assert len(rows) == outcome.chunks == await stored_points(engine.store, "conversations", str(path))
    text = "\n".join(str(p["text"]) for p in rows)
    embedded = "\n".join(counting.texts)
    for stored in (text, embedded):
        assert "user: Why does the cart total drift" in stored
        assert "assistant: Let me look at how the totals are summed." in stored
        assert '[tool_use Read] {"file_path":"/home/dev/shop-api/src/cart.py"}' in stored
        assert "summary: Cart totals rounding bug in checkout" in stored
        assert "KINGFISHER" in stored and "…[truncated]" in stored
        assert "ZEBRAFINCH" not in stored  # beyond the default 2000-character cap
        assert "PELICANTHOUGHT" not in stored and "[image" not in stored and IMAGE_B64[:40] not in stored
    # Metadata: the folder and cwd name the project; the file names the session.
    assert {p["project"] for p in rows} == {PROJECT}
    assert {p["project_name"] for p in rows} == {"shop-api"}
    assert {p["session"] for p in rows} == {SESSION}
    assert {p["git_branch"] for p in rows} == {BRANCH} and {p["cwd"] for p in rows} == {CWD}
    uuids = [u for p in rows for u in p.get("uuids", [])]
    assert set(uuids) == {f"u-000{n}" for n in range(1, 7)}
    assert {r for p in rows for r in p["roles"]} == {"summary", "user", "assistant"}
    assert {t for p in rows for t in p.get("tools", [])} == {"Read", "Bash", "Edit"}
    assert {f for p in rows for f in p.get("files", [])} == {"/home/dev/shop-api/src/cart.py"}
    stamps = [(p["timestamp_first"], p["timestamp_last"]) for p in rows if "timestamp_first" in p]
    assert stamps[0][0] == "2025-11-12T18:31:18.697Z" and stamps[-1][1] == "2025-11-12T18:33:00.000Z"
    assert all(first <= last for first, last in stamps)
    # The project filter of search finds the session by folder name and by cwd name.
    for project in (PROJECT, "shop-api"):
        hits = await engine.search("cart total rounding with Decimal", "conversations", project, 3)
        assert hits and {hit["session"] for hit in hits} == {SESSION}


async def test_include_settings_keep_thinking_images_and_set_the_cap(
    tmp_path: Path, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INCLUDE_THINKING", "true")
    monkeypatch.setenv("INCLUDE_IMAGES", "true")
    monkeypatch.setenv("TOOL_RESULT_MAX_CHARS", "120")
    body = "KINGFISHER " + "".join(f"row {n:04d} ok; " for n in range(40)) + "ZEBRAFINCH"
    async with engine_with(tmp_path, counting) as engine:
        assert engine.settings.read.include_thinking and engine.settings.read.include_images
        path = write(
            engine.settings.watch.conversations_dirs[0] / PROJECT / f"{SESSION}.jsonl",
            claude_session(tool_result=body),
        )
        assert (await ingest(engine, path)).status == "done"
        text = "\n".join(str(p["text"]) for p in await payloads(engine, path))
    assert "(thinking) PELICANTHOUGHT maybe float rounding" in text
    assert "Here is the checkout page screenshot.\n[image image/png]" in text
    assert IMAGE_B64[:40] not in text and IMAGE_B64[:40] not in "\n".join(counting.texts)
    assert "[tool_result] " + body[:120] + " …[truncated]" in text
    assert "row 0039" not in text and "ZEBRAFINCH" not in text


async def test_subagent_files_are_part_of_their_session_end_to_end(engine: Engine) -> None:
    root = engine.settings.watch.conversations_dirs[0]
    main = write(root / PROJECT / f"{SESSION}.jsonl", claude_session())
    beside = write(root / PROJECT / "agent-1f2e3d4c.jsonl", agent_lines(SESSION, "1f2e3d4c"))
    nested = write(
        root / PROJECT / SESSION / "subagents" / "agent-a0ad4f44468bdf20d.jsonl",
        agent_lines("agent-a0ad4f44468bdf20d", "a0ad4f44468bdf20d"),
    )
    for path in (main, beside, nested):
        assert (await ingest(engine, path)).status == "done"
    for path in (beside, nested):
        rows = await payloads(engine, path)
        assert rows, path
        assert {p["session"] for p in rows} == {SESSION}
        assert {p["project"] for p in rows} == {PROJECT}
        assert all(p.get("sidechain") is True for p in rows)
        assert {t for p in rows for t in p.get("tools", [])} == {"Grep"}
    assert {p["agent_id"] for p in await payloads(engine, nested)} == {"a0ad4f44468bdf20d"}
    # Search within the project returns the subagent's text under the parent session.
    hits = await engine.search("search the repo for TODO comments", "conversations", PROJECT, 5)
    assert any("Search the repo for TODO" in str(hit["text"]) and hit["session"] == SESSION for hit in hits)


async def test_codex_rollout_end_to_end(engine: Engine, counting: CountingProvider, events: Events) -> None:
    lines = codex_lines()
    lines.insert(4, b'{"timestamp":"2025-10-30T11:00:03.500Z","type":"response_item","payload":{"type":')
    rollout = write(engine.settings.watch.conversations_dirs[0] / "2025" / "10" / "30" / ROLLOUT.name, lines)
    outcome = await ingest(engine, rollout)
    assert outcome.status == "done" and outcome.chunks >= 1
    rows = await payloads(engine, rollout)
    assert len(rows) == outcome.chunks == await stored_points(engine.store, "conversations", str(rollout))
    text = "\n".join(str(p["text"]) for p in rows)
    assert text.count("user: Why is test_checkout flaky on CI?") == 1
    assert text.count("assistant: The fixture shares a socket") == 1  # after the bad line: still there
    assert "[tool_use shell]" in text and "tool: [tool_result] 3 passed in 0.41s" in text
    assert "HERONCOPY" not in text and "OSPREYTHOUGHT" not in text
    assert sum(t.count("Why is test_checkout flaky") for t in counting.texts) == 1  # embedded once
    assert {(p["session"], p["project"], p["project_name"], p["git_branch"]) for p in rows} == {
        (CODEX_SESSION, "-work-codex-proj", "codex-proj", "dev")
    }
    assert {t for p in rows for t in p.get("tools", [])} == {"shell"}
    logged = events()
    skipped = [e for e in logged if e["event"] == "line.skipped"]
    assert [(e["path"], e["line"]) for e in skipped] == [(str(rollout), 5)]
    assert skipped[0]["reason"].startswith("invalid JSON")
    done = next(e for e in logged if e["event"] == "file.ingested" and e["path"] == str(rollout))
    assert done["lines"]["malformed"] == 1 and done["lines"]["unknown"] == 2
    assert done["lines"]["unknown:brand_new_envelope"] == 1 and done["lines"]["unknown:future_item_kind"] == 1
    assert done["lines"]["kept"] == 4


async def test_agent_file_starting_with_a_summary_stays_in_the_parent_session(engine: Engine) -> None:
    summary = {"type": "summary", "summary": "Found 3 TODOs", "leafUuid": "a-2"}
    path = write(
        engine.settings.watch.conversations_dirs[0] / PROJECT / "agent-1f2e3d4c.jsonl",
        [summary, *agent_lines(SESSION, "1f2e3d4c")],
    )
    assert (await ingest(engine, path)).status == "done"
    rows = await payloads(engine, path)
    assert rows and {p["session"] for p in rows} == {SESSION}
