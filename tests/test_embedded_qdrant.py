"""Embedded Qdrant runs in a child process: the daemon's memory holds none of its points."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from qdrant_client import models

from ingestd.embedded_qdrant import EmbeddedQdrant, EmbeddedQdrantGone, open_when_free
from ingestd.logs import concerning

VECTORS = models.VectorParams(size=4, distance=models.Distance.COSINE)


async def _collection_with_a_point(qdrant: EmbeddedQdrant) -> None:
    await qdrant.create_collection("notes", vectors_config=VECTORS)
    await qdrant.tune("notes")
    point = models.PointStruct(id=1, vector=[1.0, 0.0, 0.0, 0.0], payload={"text": "kept"})
    await qdrant.upsert("notes", points=[point], wait=True)


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


async def test_the_points_live_in_a_child_that_close_ends(tmp_path: Path) -> None:
    qdrant = EmbeddedQdrant(tmp_path / "qdrant")
    await _collection_with_a_point(qdrant)
    pid = qdrant.pid
    assert pid is not None and pid != os.getpid()
    assert psutil.Process(pid).ppid() == os.getpid()
    records = await qdrant.retrieve("notes", ids=[1], with_payload=True)
    assert [record.payload for record in records] == [{"text": "kept"}]
    await qdrant.close()
    assert _gone(pid)
    reopened = open_when_free(str(tmp_path / "qdrant"))  # the folder's lock went with the child
    try:
        assert reopened.count("notes", exact=True).count == 1
    finally:
        reopened.close()


async def test_an_error_in_the_child_is_raised_as_itself(tmp_path: Path) -> None:
    qdrant = EmbeddedQdrant(tmp_path / "qdrant")
    try:
        with pytest.raises(ValueError, match="Collection missing not found"):
            await qdrant.get_collection("missing")
        assert await qdrant.collection_exists("missing") is False  # the child is still serving
    finally:
        await qdrant.close()


async def test_a_killed_child_is_an_outage_and_the_next_call_starts_another(tmp_path: Path) -> None:
    qdrant = EmbeddedQdrant(tmp_path / "qdrant")
    try:
        await _collection_with_a_point(qdrant)
        first = qdrant.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        with pytest.raises(EmbeddedQdrantGone, match="killed by SIGKILL") as caught:
            await qdrant.count("notes", exact=True)
        assert isinstance(caught.value, OSError)  # what the store retry and /health call an outage
        assert (await qdrant.count("notes", exact=True)).count == 1  # committed before the kill
        assert qdrant.pid not in (None, first)
    finally:
        await qdrant.close()


async def test_the_childs_own_log_lines_name_the_callers_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    qdrant = EmbeddedQdrant(tmp_path / "qdrant", log_format="json")
    try:
        await qdrant.create_collection("notes", vectors_config=VECTORS)
        with concerning("notes/today.md"):
            # Local mode warns that payload indexes have no effect: a line from the child.
            await qdrant.create_payload_index("notes", "path", field_schema=models.PayloadSchemaType.KEYWORD)
    finally:
        await qdrant.close()
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("event") == "library.warning"]
    assert warned, lines
    assert warned[0]["path"] == "notes/today.md" and warned[0]["outcome"] == "continued"
    assert "Payload indexes have no effect" in warned[0]["message"]


def test_the_child_dies_with_a_daemon_killed_by_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, time
        from pathlib import Path
        from ingestd.embedded_qdrant import EmbeddedQdrant

        async def main():
            qdrant = EmbeddedQdrant(Path({str(tmp_path / "qdrant")!r}))
            await qdrant.collection_exists("notes")
            print(qdrant.pid, flush=True)
            time.sleep(60)

        asyncio.run(main())
        """
    )
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        child = int(daemon.stdout.readline())
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert _gone(child), "embedded Qdrant outlived its daemon"
        open_when_free(str(tmp_path / "qdrant")).close()
    finally:
        daemon.kill()
        daemon.wait()


async def test_calls_reach_the_child_in_the_order_they_were_made(tmp_path: Path) -> None:
    qdrant = EmbeddedQdrant(tmp_path / "qdrant")
    try:
        await qdrant.create_collection("notes", vectors_config=VECTORS)
        writes = [
            qdrant.upsert(
                "notes",
                points=[models.PointStruct(id=1, vector=[1.0, 0.0, 0.0, 0.0], payload={"version": version})],
                wait=True,
            )
            for version in range(20)
        ]
        await asyncio.gather(*writes)
        records = await qdrant.retrieve("notes", ids=[1], with_payload=True)
        assert records[0].payload == {"version": 19}
    finally:
        await qdrant.close()


async def test_the_event_loop_runs_while_the_child_works(tmp_path: Path) -> None:
    """Local mode in the daemon's own process would hold the loop for the whole upsert."""
    qdrant = EmbeddedQdrant(tmp_path / "qdrant")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    try:
        await qdrant.create_collection("notes", vectors_config=VECTORS)
        await qdrant.tune("notes")
        points = [
            models.PointStruct(id=n, vector=[1.0, float(n), 0.0, 0.0], payload={"text": f"note {n}"})
            for n in range(2000)
        ]
        ticker = asyncio.create_task(tick())
        await qdrant.upsert("notes", points=points, wait=True)
        ticker.cancel()
        assert ticks >= 3, "the loop was blocked while embedded Qdrant stored 2,000 points"
        assert (await qdrant.count("notes", exact=True)).count == 2000
    finally:
        await qdrant.close()
