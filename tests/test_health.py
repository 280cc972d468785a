"""/health, /metrics and the progress log of a daemon running in-process on the real model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import CountingProvider, captured_logs, make_settings, until
from generators import markdown_document, transcript_of_size, write_transcript
from ingestd.daemon import Daemon
from ingestd.engine import Engine
from ingestd.errors import Fatal
from voyage_server import VoyageServer


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with captured_logs("INFO") as captured:
        yield captured


async def start(
    tmp_path: Path, counting: CountingProvider, **overrides: Any
) -> tuple[Daemon, asyncio.Task[int]]:
    settings = make_settings(
        tmp_path, health_host="127.0.0.1", reconcile_seconds=0, watch_probe_seconds=0, **overrides
    )
    daemon = Daemon(settings, engine=Engine(settings, provider=counting))
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 60)
    return daemon, task


@pytest.fixture
async def daemon(tmp_path: Path, counting: CountingProvider) -> AsyncIterator[Daemon]:
    daemon, task = await start(tmp_path, counting, retry_max_attempts=1)
    yield daemon
    daemon.request_stop()
    assert await asyncio.wait_for(task, 15) == 0


async def get(daemon: Daemon, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{daemon.health.bound_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def test_health_reports_ok_with_every_field(daemon: Daemon) -> None:
    status, content_type, body = await get(daemon, "/health")
    assert status == 200 and content_type.startswith("application/json")
    import json

    health = json.loads(body)
    assert health["status"] == "ok" and health["ready"] is True and health["store_reachable"] is True
    for key in (
        "model_loaded",
        "queue_depth",
        "oldest_pending_age_s",
        "files_quarantined",
        "last_error",
        "watchers",
        "watch_probe",
        "rss_mb",
    ):
        assert key in health, key
    assert {w["mode"] for w in health["watchers"].values()} == {"events"}


async def test_metrics_cover_files_chunks_timings_and_condition(
    daemon: Daemon, counting: CountingProvider
) -> None:
    settings = daemon.settings
    good = settings.watch.documents_dirs[0] / "notes.md"
    good.write_text(markdown_document(3, 4))
    transcript = settings.watch.conversations_dirs[0] / "proj" / "s.jsonl"
    write_transcript(transcript, seed=5, exchanges=3)
    state = daemon.engine.ledger
    await until(lambda: all((r := state.get(str(p))) and r.status == "done" for p in (good, transcript)))

    counting.fail_next = 100  # the next file cannot be embedded: quarantined after one attempt
    bad = settings.watch.documents_dirs[0] / "bad.md"
    bad.write_text("# Doomed\n\nThis document will not embed.\n")
    await until(lambda: (r := state.get(str(bad))) is not None and r.status == "quarantined")
    counting.fail_next = 0

    status, content_type, body = await get(daemon, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    found = samples(body)
    outcomes = {(labels["kind"], labels["outcome"]) for labels, _ in found["ingestd_files_total"]}
    assert {("documents", "done"), ("conversations", "done"), ("documents", "quarantined")} <= outcomes
    assert any(value >= 1 for _, value in found["ingestd_file_failures_total"])
    assert found["ingestd_chunks_embedded_total"][0][1] > 0
    assert found["ingestd_embed_seconds_count"][0][1] > 0
    assert found["ingestd_upsert_seconds_count"][0][1] > 0
    for gauge in ("ingestd_queue_depth", "ingestd_files_queued", "ingestd_backlog_age_seconds"):
        assert gauge in found, gauge
    assert found["ingestd_rss_bytes"][0][1] > 10_000_000
    assert found["ingestd_model_loaded"][0][1] == 1.0
    assert found["ingestd_store_up"][0][1] == 1.0
    modes = {
        (labels["root"], labels["ingestd_watcher_mode"]): v for labels, v in found["ingestd_watcher_mode"]
    }
    for watch in daemon.watcher.watches:
        assert modes[(str(watch.root), "events")] == 1.0 and modes[(str(watch.root), "polling")] == 0.0

    health = await daemon.health_report()
    assert health["files_quarantined"] == 1 and str(bad) in (health["last_error"] or "")


class RefusingProvider(CountingProvider):
    """The real model behind credentials the service refuses: all embedding halts."""

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise Fatal("the provider refused the credentials")


async def test_health_is_degraded_when_embedding_halted(tmp_path: Path, counting: CountingProvider) -> None:
    daemon, task = await start(tmp_path, RefusingProvider(counting.inner))
    try:
        assert (await get(daemon, "/health"))[0] == 200
        (daemon.settings.watch.documents_dirs[0] / "notes.md").write_text(markdown_document(3, 2))
        await until(lambda: daemon.engine.pipeline.status().embedding_halted is not None, 60)
        status, _, body = await get(daemon, "/health")
        assert status == 503 and '"status": "degraded"' in body and "refused the credentials" in body
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 15) == 0


async def test_progress_lines_while_busy_then_only_heartbeats(
    tmp_path: Path, counting: CountingProvider, logs: list[MutableMapping[str, Any]]
) -> None:
    daemon, task = await start(tmp_path, counting, progress_log_seconds=0.3, heartbeat_seconds=1.0)
    try:
        for n in range(3):
            write_transcript(
                daemon.settings.watch.conversations_dirs[0] / "p" / f"s{n}.jsonl", seed=40 + n, exchanges=4
            )
        await until(lambda: daemon.engine.pipeline.status().files_done >= 3)
        await until(lambda: any(e["event"] == "progress" and e["files_done"] >= 3 for e in logs))
        line = next(e for e in logs if e["event"] == "progress" and e["files_done"] >= 3)
        for key in ("chunks_done", "chunks_per_s", "files_per_s", "queue", "backlog_s", "rss_mb"):
            assert key in line, key
        assert line["outcome"] == "busy" and line["path"] == str(daemon.settings.ops.state_dir)
        assert line["chunks_done"] > 0 and line["rss_mb"] > 0

        await asyncio.sleep(1.0)  # one more tick reports the end of the burst, then it is idle
        busy_lines = sum(e["event"] == "progress" for e in logs)
        beats = sum(e["event"] == "heartbeat" for e in logs)
        await asyncio.sleep(3.0)
        assert sum(e["event"] == "progress" for e in logs) == busy_lines, "silent while idle"
        new_beats = [e for e in logs if e["event"] == "heartbeat"][beats:]
        assert 1 <= len(new_beats) <= 4 and all(e["outcome"] == "idle" for e in new_beats)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 15) == 0


# --- /api errors ------------------------------------------------------------------------------
async def post(daemon: Daemon, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{daemon.health.bound_port}/api/{action}"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return response.status, await response.json()


@pytest.fixture
async def voyage_server() -> AsyncIterator[VoyageServer]:
    loopback = await VoyageServer().start()
    yield loopback
    await loopback.stop()


async def test_search_while_voyage_refuses_the_key_is_a_503_with_the_reason(
    tmp_path: Path, voyage_server: VoyageServer
) -> None:
    bad_key = "pa-WrongKey0123456789abcdef"
    settings = make_settings(
        tmp_path,
        embedding_provider="voyage",
        voyage_api_key=bad_key,
        voyage_base_url=voyage_server.base_url,
        health_host="127.0.0.1",
    )
    daemon = Daemon(settings, engine=Engine(settings))
    daemon.ready.set()  # as once started: what fails here is the provider
    await daemon.health.start()
    try:
        for _ in range(2):  # the refusal itself, then the halted provider answering locally
            status, body = await post(daemon, "search", {"query": "flaky test"})
            assert status == 503
            assert body["error"].startswith("embedding unavailable:") and "VOYAGE_API_KEY" in body["error"]
            assert bad_key not in body["error"]
        assert len(voyage_server.requests) == 1
        status, body = await post(daemon, "search", {})
        assert status == 400, "a bad request is still the client's fault"
    finally:
        await daemon.health.stop()
        await daemon.engine.close()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
async def test_search_while_qdrant_is_down_is_a_503_with_the_reason(
    tmp_path: Path, voyage_server: VoyageServer
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = make_settings(
        tmp_path,
        embedding_provider="voyage",
        voyage_api_key=voyage_server.api_key,
        voyage_base_url=voyage_server.base_url,
        qdrant_url=f"http://127.0.0.1:{closed}",
        qdrant_timeout_seconds=2,
    )
    daemon = Daemon(settings, engine=Engine(settings))
    running = asyncio.create_task(daemon.run())  # it waits for Qdrant: it never gets ready
    try:
        await until(lambda: not daemon.engine.pipeline.status().store_available, 30)
        status, body = await post(daemon, "search", {"query": "flaky test"})
        assert status == 503 and body["error"].startswith("vector store unavailable:"), body
        # qdrant-client checks the server's version on a thread; let its warning land here.
        await until(lambda: not any("_check_compatibility" in t.name for t in threading.enumerate()), 10)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(running, 20) == 0


# --- backlog age --------------------------------------------------------------------------------
class GatedProvider(CountingProvider):
    """The real model, but embedding waits for the test to open the gate."""

    def __init__(self, inner: CountingProvider) -> None:
        super().__init__(inner.inner)
        self.gate = asyncio.Event()

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        await self.gate.wait()
        return await super().embed_documents(texts)


async def test_backlog_age_counts_files_taken_off_the_queue_but_not_finished(
    tmp_path: Path, counting: CountingProvider
) -> None:
    gated = GatedProvider(counting)
    daemon, task = await start(tmp_path, gated)
    try:
        path = daemon.settings.watch.documents_dirs[0] / "slow.md"
        path.write_text(markdown_document(7, 2))
        await until(lambda: daemon.engine.pipeline.job(str(path)) is not None and not len(daemon.queue))
        await asyncio.sleep(1.2)
        health = await daemon.health_report()
        assert health["files_queued"] == 0 and health["files_in_flight"] == 1
        assert health["oldest_pending_age_s"] >= 1.0, "an in-flight file is still backlog"
        _, _, body = await get(daemon, "/metrics")
        assert samples(body)["ingestd_backlog_age_seconds"][0][1] >= 1.0
        gated.gate.set()
        await until(lambda: (r := daemon.engine.ledger.get(str(path))) is not None and r.status == "done")
        await until(lambda: daemon.engine.pipeline.status().files_in_flight == 0)
        assert (await daemon.health_report())["oldest_pending_age_s"] == 0.0, "finished files are forgotten"
    finally:
        gated.gate.set()
        daemon.request_stop()
        assert await asyncio.wait_for(task, 15) == 0


async def test_progress_counts_the_chunks_of_a_file_still_being_read(
    tmp_path: Path, counting: CountingProvider, logs: list[MutableMapping[str, Any]]
) -> None:
    """A long transcript takes minutes: its stored chunks show before the file is finished."""
    daemon, task = await start(tmp_path, counting, progress_log_seconds=0.3)
    try:
        path = daemon.settings.watch.conversations_dirs[0] / "p" / "long.jsonl"
        transcript_of_size(path, seed=44, size=3_000_000)
        await until(lambda: any(e["event"] == "progress" and e["chunks_done"] > 0 for e in logs), 120)
        line = next(e for e in logs if e["event"] == "progress" and e["chunks_done"] > 0)
        assert line["files_done"] == 0 and line["in_flight"] == 1, line
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
