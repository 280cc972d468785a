"""`ingestd status` in text mode: per-file redaction counts, and every printed reason masked."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ingestd import cli
from ingestd.logs import register_secret

SECRET = "qdrant-cli-key-7e1b4f9d2c"  # no known shape: only registration can mask it


def status_answer(redactions: dict[str, int], problems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "files": {"done": len(redactions), "skipped": 1},
        "problems": problems,
        "points": {"ingestd-conversations-x": 10, "ingestd-documents-x": None},
        "redactions": redactions,
        "model": {"fingerprint": "fastembed:minilm", "loaded": False},
        "store": {"location": "/tmp/state/qdrant", "available": True},
        "state": {"path": "/tmp/state/ledger.db", "files": len(redactions) + 1},
    }


def test_status_lists_the_files_with_most_redactions(capsys: pytest.CaptureFixture[str]) -> None:
    redactions = {f"/docs/file-{n:02d}.md": n for n in range(1, 13)}  # 12 files, 78 redactions
    redactions["/docs/also-twelve.md"] = 12  # a tie is broken by path
    assert cli.print_answer("status", status_answer(redactions, {}), as_json=False) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("redactions: 90 in 13 files")
    listed = [line.split() for line in lines[start + 1 : start + 1 + cli.TOP_REDACTED_FILES]]
    assert listed[:3] == [
        ["12", "/docs/also-twelve.md"],
        ["12", "/docs/file-12.md"],
        ["11", "/docs/file-11.md"],
    ]
    assert [int(count) for count, _ in listed] == sorted((int(c) for c, _ in listed), reverse=True)
    assert listed[-1] == ["4", "/docs/file-04.md"]
    assert lines[start + 1 + cli.TOP_REDACTED_FILES].strip().startswith("… and 3 more files")
    assert not any("file-03.md" in line for line in lines), "only the top files are listed"


def test_status_without_redactions_prints_no_redaction_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.print_answer("status", status_answer({}, {}), as_json=False) == 0
    assert "redactions" not in capsys.readouterr().out


def test_status_reasons_are_masked_and_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(SECRET)
    problem = {
        "path": f"/docs/[/odd]/{SECRET}.pdf",
        "reason": f"corrupt PDF: fetched with key {SECRET}",
        "attempts": 1,
        "updated_at": time.time(),
    }
    answer = status_answer({f"/docs/{SECRET}.md": 2}, {"skipped": [problem]})
    assert cli.print_answer("status", answer, as_json=False) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "skipped /docs/[/odd]/[REDACTED].pdf: corrupt PDF: fetched with key [REDACTED]" in out
    assert "2  /docs/[REDACTED].md" in out


def test_daemon_errors_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(SECRET)
    assert cli.print_answer("search", {"error": f"vector store unavailable: {SECRET}"}, as_json=False) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "ingestd search: vector store unavailable: [REDACTED]" in err
