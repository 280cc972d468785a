"""Store outages and embedding failures: retried, reported truthfully, never the file's fault.

Store faults are injected around the real embedded Qdrant (errors, hanging calls, a batch that
half lands); the server-mode test points QDRANT_URL at a loopback port that refuses connections.
Embedding faults wrap the real FastEmbed provider and fail on chosen texts only.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    CountingProvider,
    Events,
    free_port,
    make_settings,
    run_cli,
    start_cli,
    stored_points,
    subprocess_env,
    until,
)
from generators import markdown_document, write_transcript
from ingestd.engine import Engine
from ingestd.errors import RetryLater
from ingestd.pipeline import FileJob
from ledger_view import ledger_records


class StoreFaults:
    """Wraps the real store's upsert: fail, hang, or land half a batch then fail."""

    def __init__(self, engine: Engine) -> None:
        self.real_upsert = engine.store.upsert
        self.down = False
        self.plan: list[str] = []
        self.calls = 0
        engine.store.upsert = self.upsert  # type: ignore[method-assign]

    async def upsert(self, kind: str, points: list[Any]) -> None:
        self.calls += 1
        action = "fail" if self.down else (self.plan.pop(0) if self.plan else "ok")
        if action == "fail":
            raise ConnectionError("injected: connection refused")
        if action == "hang":
            await asyncio.sleep(3600)  # the pipeline's wait_for(QDRANT_TIMEOUT_SECONDS) must cut this
        if action == "half":
            await self.real_upsert(kind, points[: max(1, len(points) // 2)])
            raise ConnectionError("injected: connection reset mid-batch")
        await self.real_upsert(kind, points)


@pytest.fixture
async def faulty(tmp_path: Path, counting: CountingProvider) -> Any:
    settings = make_settings(
        tmp_path, qdrant_timeout_seconds=0.5, retry_backoff_seconds=0.02, retry_backoff_max_seconds=0.16
    )
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    yield engine, StoreFaults(engine)
    await engine.close()


def _files(engine: Engine) -> tuple[Path, Path]:
    transcript = engine.settings.watch.conversations_dirs[0] / "p" / "outage.jsonl"
    write_transcript(transcript, seed=61, exchanges=4)
    document = engine.settings.watch.documents_dirs[0] / "outage.md"
    document.write_text(markdown_document(61, 4))
    return transcript, document


async def _start(engine: Engine, *paths: Path) -> list[FileJob]:
    jobs = []
    for path in paths:
        job = await engine.submit(path)
        assert isinstance(job, FileJob)
        jobs.append(job)
    return jobs


def _recorded_chunks(engine: Engine, job: FileJob) -> int:
    """The chunk count the ledger holds for a finished pass (the job's record is its start)."""
    record = engine.ledger.get(job.key)
    assert record is not None, job.key
    return record.chunks


async def test_store_down_retries_backs_off_and_lands(faulty: Any, events: Events) -> None:
    engine, faults = faulty
    transcript, document = _files(engine)
    faults.down = True
    jobs = await _start(engine, transcript, document)

    def retried(times: int) -> bool:
        return sum(1 for e in events() if e["event"] == "store.retry" and e["operation"] == "upsert") >= times

    await until(lambda: retried(8))
    # While it is down: status is truthful, nothing advanced, nothing crashed.
    assert engine.pipeline.status().store_available is False
    status = await engine.status()
    assert status["store"]["available"] is False
    assert "store upsert" in str(engine.pipeline.status().last_error)
    for path in (transcript, document):
        record = engine.ledger.get(str(path))
        assert record is not None and record.status == "pending" and record.resume_offset == 0
        assert record.chunks == 0
    on_disk = ledger_records(engine.settings.ops.state_dir)  # what another process reads: committed rows
    assert {r.status for r in on_disk.values()} == {"pending"}
    assert all(not job.done.is_set() for job in jobs)

    retries = [e for e in events() if e["event"] == "store.retry"]
    assert {e["path"] for e in retries} <= {str(transcript), str(document)}
    settings = engine.settings.embed
    for event in retries:
        attempt = event["attempt"]
        ceiling = min(settings.retry_backoff_max_seconds, settings.retry_backoff_seconds * 2 ** (attempt - 1))
        assert ceiling / 2 - 0.01 <= event["delay_s"] <= ceiling + 0.01, event  # jitter, capped
    attempts = [e["attempt"] for e in retries if e["path"] == retries[0]["path"]]
    assert attempts[:4] == [1, 2, 3, 4], attempts
    assert max(e["delay_s"] for e in retries) <= settings.retry_backoff_max_seconds + 0.01

    faults.down = False
    await asyncio.wait_for(asyncio.gather(*(job.done.wait() for job in jobs)), 60)
    assert [job.outcome.status for job in jobs if job.outcome] == ["done", "done"]
    assert engine.pipeline.status().store_available is True and (await engine.status())["store"]["available"]
    assert any(e["event"] == "store.recovered" for e in events())
    for job, kind in zip(jobs, ("conversations", "documents"), strict=True):
        assert await stored_points(engine.store, kind, job.key) == _recorded_chunks(engine, job) > 0


async def test_hanging_and_half_landed_batches(
    faulty: Any, events: Events, counting: CountingProvider
) -> None:
    engine, faults = faulty
    faults.plan = ["hang", "half", "fail", "hang", "half"]
    transcript, document = _files(engine)
    jobs = await _start(engine, transcript, document)
    await asyncio.wait_for(asyncio.gather(*(job.done.wait() for job in jobs)), 120)
    assert [job.outcome.status for job in jobs if job.outcome] == ["done", "done"]
    errors = [e["error"] for e in events() if e["event"] == "store.retry"]
    assert any("TimeoutError" in error for error in errors), errors
    assert any("mid-batch" in error for error in errors), errors
    # Replayed batches overwrite the same point IDs: exactly one point per chunk.
    for job, kind in zip(jobs, ("conversations", "documents"), strict=True):
        rows = await engine.store.scroll_all(kind, ["path", "ordinal"])
        ordinals = sorted(p["ordinal"] for _, p in rows if p["path"] == job.key)
        assert ordinals == list(range(_recorded_chunks(engine, job))), ordinals
    # Retrying the store never re-embeds: every chunk was embedded once.
    assert len(counting.texts) == sum(_recorded_chunks(engine, job) for job in jobs)


# --- embedding failures ------------------------------------------------------------------------
class PoisonProvider(CountingProvider):
    """The real model, except that any batch holding a poisoned text fails."""

    def __init__(self, inner: Any, marker: str) -> None:
        super().__init__(inner.inner if isinstance(inner, CountingProvider) else inner)
        self.marker = marker
        self.poisoned_calls = 0
        self.mixed_calls = 0
        self.gate: asyncio.Event | None = None  # holds the embed stage so that a batch fills up

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.gate is not None:
            await self.gate.wait()
        if any(self.marker in text for text in texts):
            self.mixed_calls += any(self.marker not in text for text in texts)
            self.poisoned_calls += 1
            raise RetryLater("injected: the model rejects this text")
        return await super().embed_documents(texts)


async def test_embedding_failure_quarantines_only_the_culprit(
    tmp_path: Path, counting: CountingProvider, events: Events
) -> None:
    settings = make_settings(tmp_path, retry_max_attempts=3, embed_batch_size=64)
    provider = PoisonProvider(counting, "NIGHTSHADE")
    engine = Engine(settings, provider=provider)
    await engine.open("test")
    try:
        docs = settings.watch.documents_dirs[0]
        good = []
        for index in range(4):
            path = docs / f"good-{index}.md"
            path.write_text(f"# Good {index}\n\nA healthy note number {index} about sailing boats.\n")
            good.append(path)
        poison = docs / "poison.md"
        poison.write_text("# Poison\n\nThis note mentions NIGHTSHADE and must not reach the store.\n")
        before = time.time()
        provider.gate = asyncio.Event()
        jobs = await _start(engine, good[0], poison, *good[1:])
        provider.gate.set()  # the first batch held good-0; the rest now share one batch
        await asyncio.wait_for(asyncio.gather(*(job.done.wait() for job in jobs)), 60)
        outcomes = {Path(job.key).name: job.outcome for job in jobs}
        statuses = {name: outcome.status if outcome else None for name, outcome in outcomes.items()}
        assert all(statuses[p.name] == "done" for p in good), outcomes
        assert statuses["poison.md"] == "quarantined", outcomes
        # One mixed batch, then the culprit alone within the budget of RETRY_MAX_ATTEMPTS.
        assert provider.mixed_calls == 1
        assert provider.poisoned_calls == 1 + settings.embed.retry_max_attempts
        record = engine.ledger.get(str(poison))
        assert record is not None and record.status == "quarantined"
        assert record.attempts == 1 and record.updated_at >= before
        assert "after 3 attempts" in (record.reason or "") and "rejects this text" in (record.reason or "")
        assert await stored_points(engine.store, "documents", str(poison)) == 0, "never stored, never done"
        retries = [e for e in events() if e["event"] == "embed.retry"]
        assert {e["path"] for e in retries} == {str(poison)} and [e["attempt"] for e in retries] == [1, 2]
        logged = [e for e in events() if e["event"] == "file.quarantined"]
        assert len(logged) == 1 and logged[0]["path"] == str(poison) and "reason" in logged[0]
        status = await engine.status()
        listed = status["problems"]["quarantined"]
        assert [entry["path"] for entry in listed] == [str(poison)]
        assert listed[0]["attempts"] == 1 and listed[0]["reason"] == record.reason
        # Quarantine holds while the file is unchanged ...
        assert (await engine.submit(poison)).status == "unchanged"  # type: ignore[union-attr]
        # ... and is lifted when it changes on disk.
        poison.write_text("# Poison\n\nThe note was cleaned up and now talks about sailing boats.\n")
        job = await engine.submit(poison)
        assert isinstance(job, FileJob)
        await job.done.wait()
        assert job.outcome is not None and job.outcome.status == "done"
        stored = await stored_points(engine.store, "documents", str(poison))
        assert stored == _recorded_chunks(engine, job) > 0
    finally:
        await engine.close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment on make_settings' folders (tmp_path/watch/…)."""
    return subprocess_env(
        tmp_path,
        CONVERSATIONS_DIRS=str(tmp_path / "watch" / "conversations"),
        DOCUMENTS_DIRS=str(tmp_path / "watch" / "documents"),
        **extra,
    )


async def test_retry_cli_requeues_a_quarantined_file(tmp_path: Path, counting: CountingProvider) -> None:
    settings = make_settings(tmp_path, retry_max_attempts=2)
    engine = Engine(settings, provider=PoisonProvider(counting, "NIGHTSHADE"))
    await engine.open("test")
    poison = settings.watch.documents_dirs[0] / "poison.md"
    poison.write_text("# Poison\n\nNIGHTSHADE once failed here, through no fault of the file.\n")
    job = await engine.submit(poison)
    assert isinstance(job, FileJob)
    await job.done.wait()
    assert job.outcome is not None and job.outcome.status == "quarantined"
    await engine.close()

    env = _env(tmp_path)
    status = json.loads((await asyncio.to_thread(run_cli, env, "status", "--json", cwd=tmp_path)).stdout)
    assert [entry["path"] for entry in status["problems"]["quarantined"]] == [str(poison)]
    retried = await asyncio.to_thread(run_cli, env, "retry", cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["retried"] == [str(poison)]
    imported = await asyncio.to_thread(run_cli, env, "import", cwd=tmp_path)  # the model is healthy now
    assert imported.returncode == 0, imported.stderr
    assert ledger_records(settings.ops.state_dir)[str(poison)].status == "done"


# --- server mode, store unreachable ------------------------------------------------------------
def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_server_mode_refused_connection_waits_and_reports(tmp_path: Path) -> None:
    refused, health_port = free_port(), free_port()  # nothing listens on `refused`
    env = _env(
        tmp_path,
        QDRANT_URL=f"http://127.0.0.1:{refused}",
        HEALTH_PORT=str(health_port),
        RETRY_BACKOFF_SECONDS="0.1",
        RETRY_BACKOFF_MAX_SECONDS="0.5",
        QDRANT_TIMEOUT_SECONDS="2",
    )
    (tmp_path / "watch" / "documents" / "a.md").write_text("# A\n\nWaiting for the store.\n")
    process = start_cli(env, "run", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        answer: tuple[int, dict[str, Any]] | None = None
        while time.monotonic() < deadline:
            assert process.poll() is None, "the daemon exited instead of waiting for the store"
            try:
                answer = _get(f"http://127.0.0.1:{health_port}/health")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        assert answer is not None, "/health never answered"
        code, body = answer
        assert code == 503 and body["status"] == "degraded", body
        assert body["store_reachable"] is False and body["ready"] is False
        time.sleep(3)  # several retries later it is still up, still waiting
        assert process.poll() is None
        code, body = _get(f"http://127.0.0.1:{health_port}/health")
        assert code == 503 and body["store_reachable"] is False
        assert "store connect" in str(body["last_error"])
        status = run_cli(env, "status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["store"]["available"] is False
        assert all(count is None for count in report["points"].values())
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, "SIGTERM while waiting for the store must exit 0"
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = process.stdout.read() if process.stdout else ""
    retries = [json.loads(line) for line in log.splitlines() if '"store.retry"' in line]
    assert len(retries) >= 3 and retries[0]["operation"] == "connect"
    assert [r["attempt"] for r in retries[:3]] == [1, 2, 3]
