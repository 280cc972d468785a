"""The daemon running in-process, and the CLI against it and without it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import (
    CountingProvider,
    announced_port,
    captured_logs,
    ingest,
    make_settings,
    run_cli,
    start_cli,
    stored_points,
    subprocess_env,
    until,
)
from generators import ClaudeSession, dump, markdown_document, write_transcript
from ingestd import cli
from ingestd.daemon import Daemon
from ingestd.engine import Engine
from ledger_view import ledger_record


@pytest.fixture
async def daemon(tmp_path: Path, counting: CountingProvider) -> AsyncIterator[Daemon]:
    settings = make_settings(tmp_path, reconcile_seconds=2.0)
    daemon = Daemon(settings, engine=Engine(settings, provider=counting))
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 60)
    yield daemon
    daemon.request_stop()
    assert await asyncio.wait_for(task, 15) == 0


async def test_dropped_files_become_searchable(daemon: Daemon) -> None:
    settings = daemon.settings
    doc = settings.watch.documents_dirs[0] / "kernel.md"
    doc.write_text("# Kernel notes\n\nThe watchdog reboots the router when the kernel panics.\n")
    transcript = settings.watch.conversations_dirs[0] / "proj" / "sess.jsonl"
    session = write_transcript(transcript, seed=21, exchanges=2)

    async def found(query: str, path: Path) -> bool:
        hits = await daemon.engine.search(query, None, None, 3)
        return any(hit["path"] == str(path) for hit in hits)

    await until(lambda: found("router reboots after kernel panic", doc), limit_s=30, step=0.1)
    await until(lambda: found("flaky test", transcript), limit_s=30, step=0.1)
    # A live session appends; the new message becomes searchable too.
    with transcript.open("ab") as handle:
        handle.write(dump([session.user("Why does the zebra crossing sensor drift at dusk?")]))
    await until(lambda: found("zebra crossing sensor drift", transcript), limit_s=30, step=0.1)
    # Deleting the document purges it.
    doc.unlink()
    await until(lambda: _count(daemon, "documents", doc), limit_s=30, step=0.1)
    health = await daemon.health_report()
    assert health["status"] == "ok" and health["store_reachable"] is True


class BrokenProvider(CountingProvider):
    """A provider with a bug, not a signal the retry policy knows: the embed stage dies of it."""

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("injected stage failure")


async def test_a_dead_stage_stops_the_daemon_with_an_error_and_loses_nothing(
    tmp_path: Path, counting: CountingProvider
) -> None:
    """A stage that dies would leave the daemon up, embedding nothing, for good: it must exit
    non-zero (the container restarts it) and the file must still be ingested after the restart."""
    settings = make_settings(tmp_path)
    daemon = Daemon(settings, engine=Engine(settings, provider=BrokenProvider(counting.inner)))
    with captured_logs("ERROR") as logs:
        running = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 60)
        doc = settings.watch.documents_dirs[0] / "notes.md"
        doc.write_text(markdown_document(4, 2))
        assert await asyncio.wait_for(running, 60) == 1
    crashes = [event for event in logs if event["event"] == "daemon.task_crashed"]
    assert len(crashes) == 1, logs
    assert crashes[0]["task"] == "embed-stage"
    assert "injected stage failure" in crashes[0]["error"]
    restarted = Engine(settings, provider=counting)
    await restarted.open("test")
    try:
        record = restarted.ledger.get(str(doc))
        assert record is None or record.status != "done"  # never claimed done
        outcome = await ingest(restarted, doc, limit_s=60)
        assert outcome.status == "done" and outcome.chunks > 0
        assert await stored_points(restarted.store, "documents", str(doc)) == outcome.chunks
    finally:
        await restarted.close()


def test_import_stops_with_an_error_when_a_stage_dies(
    tmp_path: Path,
    counting: CountingProvider,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used to wait for good; now `ingestd import` names the stage and exits 1."""
    for name, value in subprocess_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "docs" / "notes.md").write_text(markdown_document(4, 2))
    monkeypatch.setattr("ingestd.engine.build_provider", lambda _: BrokenProvider(counting.inner))
    assert cli.main(["import"]) == 1
    error = capsys.readouterr().err
    assert re.search(r"ingestd: embed-stage stopped .*injected stage failure.*notes\.md stays pending", error)


async def _count(daemon: Daemon, kind: str, path: Path) -> bool:
    return await stored_points(daemon.engine.store, kind, str(path)) == 0


async def test_reconcile_catches_what_events_missed(daemon: Daemon) -> None:
    daemon.watcher.stop()  # no more events: only the periodic reconcile scan can find the file
    await asyncio.sleep(0.3)
    doc = daemon.settings.watch.documents_dirs[0] / "quiet.md"
    doc.write_text(markdown_document(5, 2))
    await until(lambda: _present(daemon, doc), limit_s=30, step=0.1)


async def _present(daemon: Daemon, path: Path) -> bool:
    record = daemon.engine.ledger.get(str(path))
    return record is not None and record.status == "done"


def test_cli_import_status_search_forget_without_daemon(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path)
    write_transcript(tmp_path / "conv" / "proj" / "a.jsonl", seed=31, exchanges=3)
    (tmp_path / "docs" / "readme.md").write_text(
        "# Lighthouse\n\nThe lighthouse keeper logs the fog horn schedule.\n"
    )
    (tmp_path / "docs" / "bad.md").write_bytes(b"\x00\x01\x02binary")
    result = run_cli(env, "import", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "imported 2 files" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {e["outcome"] for e in events if e["event"] == "file.ingested"} == {"done"}
    assert all("path" in e and "outcome" in e for e in events)

    status = run_cli(env, "status", "--json", cwd=tmp_path)
    body = json.loads(status.stdout)
    assert body["files"] == {"done": 2, "skipped": 1}
    assert body["problems"]["skipped"][0]["reason"].startswith("binary file")
    assert all(count and count > 0 for count in body["points"].values())

    search = run_cli(env, "search", "fog horn schedule", "--kind", "documents", "-k", "1", cwd=tmp_path)
    assert search.returncode == 0 and "readme.md" in search.stdout and "lighthouse keeper" in search.stdout
    conv = run_cli(env, "search", "flaky test", "--project", "proj", "--json", cwd=tmp_path)
    assert json.loads(conv.stdout)["hits"][0]["project"] == "proj"

    forget = run_cli(env, "forget", str(tmp_path / "docs" / "readme.md"), cwd=tmp_path)
    assert forget.returncode == 0, forget.stderr
    again = run_cli(env, "search", "fog horn schedule", "--kind", "documents", "--json", cwd=tmp_path)
    assert all(not h["path"].endswith("readme.md") for h in json.loads(again.stdout)["hits"])

    unchanged = run_cli(env, "import", cwd=tmp_path)  # a plain rescan leaves it forgotten
    assert "imported 0 files" in unchanged.stderr, unchanged.stderr
    readd = run_cli(env, "import", str(tmp_path / "docs" / "readme.md"), cwd=tmp_path)
    assert readd.returncode == 0 and "imported 1 files" in readd.stderr, readd.stderr
    back = run_cli(env, "search", "fog horn schedule", "--kind", "documents", "-k", "1", cwd=tmp_path)
    assert "readme.md" in back.stdout, "naming a forgotten file re-adds it"


def test_daemon_subprocess_serves_cli_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path)
    daemon = start_cli(env, "run", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        announced_port(tmp_path / "state")
        session = ClaudeSession(41, "live")
        path = tmp_path / "conv" / "proj" / "live.jsonl"
        path.parent.mkdir(parents=True)
        path.write_bytes(dump(session.lines(2)))
        deadline = time.monotonic() + 60
        hits: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            out = run_cli(env, "search", "flaky test", "--json", cwd=tmp_path)
            if out.returncode == 0 and (hits := json.loads(out.stdout)["hits"]):
                break
            time.sleep(0.5)
        assert hits and hits[0]["path"] == str(path)
        status = json.loads(run_cli(env, "status", "--json", cwd=tmp_path).stdout)
        assert status["files"].get("done") == 1
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = daemon.stdout.read() if daemon.stdout else ""
    assert '"event": "daemon.stopped"' in log
    record = ledger_record(tmp_path / "state", str(path))
    assert record is not None and record.status == "done"
