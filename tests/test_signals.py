"""Signals on a real `ingestd run`: SIGTERM mid-import exits 0 in time and loses nothing;
SIGHUP is logged and ignored (configuration is read at start-up only). `ingestd import` stopped
by SIGTERM settles, says so, and the same command finishes the job."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import run_cli, start_cli, subprocess_env
from generators import markdown_document, write_transcript
from ledger_view import ledger_records

FILES = 12


def _corpus(tmp_path: Path) -> list[Path]:
    paths = []
    for index in range(FILES):
        path = tmp_path / "conv" / "proj" / f"s{index:02d}.jsonl"
        write_transcript(path, seed=300 + index, exchanges=5)
        paths.append(path)
        doc = tmp_path / "docs" / f"d{index:02d}.md"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(markdown_document(300 + index, 4))
        paths.append(doc)
    return paths


def _start(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_cli(env, "run", cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]


def _wait(condition: Any, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the daemon died"
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _status(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    out = run_cli(env, "status", "--json", cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def _done_on_disk(tmp_path: Path) -> int:
    try:
        files = ledger_records(tmp_path / "state")
    except sqlite3.Error:  # the daemon is still creating it
        return 0
    return sum(1 for r in files.values() if r.status == "done")


def _half_done(tmp_path: Path) -> list[tuple[str, int, int]]:
    """Files recorded `done` without having been read to their end (none of these grows)."""
    files = ledger_records(tmp_path / "state")
    return [
        (path, record.offset, os.path.getsize(path))
        for path, record in files.items()
        if record.status == "done" and record.offset != os.path.getsize(path)
    ]


def _reference_points(tmp_path: Path) -> dict[str, int]:
    """Points per kind from an uninterrupted `ingestd import` of the same corpus."""
    env = subprocess_env(tmp_path / "reference")
    env.update(CONVERSATIONS_DIRS=str(tmp_path / "conv"), DOCUMENTS_DIRS=str(tmp_path / "docs"))
    out = run_cli(env, "import", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    points = _status(env, tmp_path)["points"]
    return {name.split("-")[1]: count for name, count in points.items()}


def _stop(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, "SIGTERM must exit 0"
    return time.monotonic() - started


def test_sigterm_mid_import_then_restart_loses_nothing_and_sighup_is_ignored(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path)
    paths = _corpus(tmp_path)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    process = _start(env, tmp_path, first_log)
    try:

        def ingested() -> int:
            return sum(1 for e in _events(first_log) if e["event"] == "file.ingested")

        _wait(lambda: ingested() >= 3, 120, process)
        assert ingested() < len(paths), "the import finished before the signal: make the corpus larger"
        assert _stop(process) < 10
        events = _events(first_log)
        assert events[-1]["event"] == "daemon.stopped"
        interrupted = ledger_records(tmp_path / "state")
        assert sum(1 for r in interrupted.values() if r.status == "done") < len(paths)
        assert not _half_done(tmp_path), "SIGTERM marked a half-read file done"

        process = _start(env, tmp_path, second_log)
        info = tmp_path / "state" / "daemon.json"
        _wait(info.exists, 60, process)
        _wait(lambda: any(e["event"] == "daemon.ready" for e in _events(second_log)), 120, process)
        port = json.loads(info.read_text())["port"]
        process.send_signal(signal.SIGHUP)  # mid-import: logged, ignored
        _wait(lambda: _done_on_disk(tmp_path) == len(paths), 300, process)
        before = _status(env, tmp_path)
        process.send_signal(signal.SIGHUP)
        _wait(lambda: sum(1 for e in _events(second_log) if e["event"] == "daemon.sighup") >= 2, 30, process)
        time.sleep(0.5)
        assert process.poll() is None, "SIGHUP must not kill the daemon"
        after = _status(env, tmp_path)
        assert json.loads(info.read_text())["port"] == port
        for key in ("files", "points", "model", "store"):
            assert after[key] == before[key], key
        hups = [e for e in _events(second_log) if e["event"] == "daemon.sighup"]
        assert all(e["outcome"] == "ignored" for e in hups)
        assert _stop(process) < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    state = ledger_records(tmp_path / "state")
    assert {state[str(p)].status for p in paths} == {"done"}
    assert not _half_done(tmp_path)
    points = {name.split("-")[1]: count for name, count in after["points"].items()}
    reference = _reference_points(tmp_path)
    assert points == reference, (points, reference)  # nothing lost, nothing duplicated


def test_sigterm_mid_import_command_settles_and_the_same_command_resumes(tmp_path: Path) -> None:
    """`docker compose run ingestd import` stopped by `docker stop`: the command used to die of
    the signal; it now settles the batch in flight, commits it to the ledger and says how to resume."""
    env = subprocess_env(tmp_path)
    paths = _corpus(tmp_path)
    log = tmp_path / "import.log"
    process = start_cli(env, "import", cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.PIPE)
    try:

        def ingested() -> int:
            return sum(1 for e in _events(log) if e["event"] == "file.ingested")

        _wait(lambda: ingested() >= 3, 120, process)
        assert ingested() < len(paths), "the import finished before the signal: make the corpus larger"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, (process.returncode, stderr)
    assert b"interrupted by SIGTERM" in stderr and b"run the same command again" in stderr, stderr
    stops = [e for e in _events(log) if e["event"] == "import.interrupted"]
    assert len(stops) == 1 and stops[0]["outcome"] == "interrupted" and stops[0]["files_left"] > 0
    files = ledger_records(tmp_path / "state")
    done = {path for path, record in files.items() if record.status == "done"}
    assert done >= {e["path"] for e in _events(log) if e["event"] == "file.ingested"}, (
        "a finished file was lost"
    )
    assert len(done) < len(paths) and not _half_done(tmp_path)

    again = run_cli(env, "import", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    files = ledger_records(tmp_path / "state")
    assert {files[str(p)].status for p in paths} == {"done"}
    chunks = {
        kind: sum(r.chunks for r in files.values() if r.kind == kind)
        for kind in ("conversations", "documents")
    }
    points = {name.split("-")[1]: count for name, count in _status(env, tmp_path)["points"].items()}
    assert points == chunks, (points, chunks)  # nothing lost, nothing stored twice
