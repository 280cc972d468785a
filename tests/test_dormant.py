"""Dormancy: an idle daemon re-executes itself small, and wakes on a change or an API call.

The end-to-end test runs a real `ingestd run` (the real model and embedded Qdrant) through two
sleeps and two wakes; the in-process tests pin each way of waking and the lock hand-off.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import make_settings, run_cli, start_cli, subprocess_env
from ingestd.dormant import Dormant
from ingestd.errors import StateLocked
from ingestd.ledger import FileRecord, Ledger, Status
from ingestd.paths import LOCK_FD_ENV

HEAVY = ("qdrant_client", "fastembed", "onnxruntime", "numpy", "tokenizers", "semantic_text_splitter")


def test_the_dormant_image_imports_none_of_the_heavy_libraries() -> None:
    code = f"import sys, ingestd.cli, ingestd.dormant; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_lock_is_held_through_a_hand_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCK_FD_ENV, raising=False)
    first = Ledger(tmp_path)
    first.lock("daemon")
    first.hand_off_lock()  # what the old image does just before exec()
    fd = int(os.environ[LOCK_FD_ENV])
    assert os.get_inheritable(fd)
    with pytest.raises(StateLocked):
        _foreign_lock(tmp_path)
    adopted = Ledger(tmp_path)  # what the new image does
    adopted.lock("daemon")
    assert LOCK_FD_ENV not in os.environ and not os.get_inheritable(fd)
    with pytest.raises(StateLocked):
        _foreign_lock(tmp_path)
    adopted.unlock()
    _foreign_lock(tmp_path)  # free at last: does not raise


def test_a_stale_lock_descriptor_is_not_adopted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "other").open("w") as other:
        monkeypatch.setenv(LOCK_FD_ENV, str(other.fileno()))
        store = Ledger(tmp_path)
        store.lock("daemon")  # opens its own lock file; the unrelated descriptor stays open
        assert not other.closed and os.fstat(other.fileno())
        store.unlock()


def _foreign_lock(state_dir: Path) -> None:
    """Another process's attempt, as a CLI command would make it (no inherited descriptor)."""
    code = (
        "import sys; from pathlib import Path\n"
        "from ingestd.errors import StateLocked; from ingestd.ledger import Ledger\n"
        f"try: Ledger(Path({str(state_dir)!r})).lock('cli')\n"
        "except StateLocked: sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != LOCK_FD_ENV}
    result = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    if result.returncode == 3:
        raise StateLocked(str(state_dir))
    assert result.returncode == 0


def test_a_stop_signal_held_through_exec_still_stops_it_cleanly(tmp_path: Path) -> None:
    """What system.reexec leaves the next image: SIGTERM blocked and already pending."""
    env = subprocess_env(tmp_path)
    daemon = subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_THEN_RUN],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert daemon.wait(60) == 0, daemon.stderr.read() if daemon.stderr else ""
    finally:
        daemon.kill()


_BLOCKED_THEN_RUN = """
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
os.kill(os.getpid(), signal.SIGTERM)  # pending, as if sent while the image was replaced
sys.argv = ["ingestd", "run"]
from ingestd.cli import main
sys.exit(main())
"""


# --- in process: each way of waking ----------------------------------------------------------
async def _dormant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> tuple[Dormant, Any]:
    monkeypatch.delenv(LOCK_FD_ENV, raising=False)
    settings = make_settings(tmp_path, **overrides)
    ledger = Ledger(settings.ops.state_dir)
    ledger.open()
    ledger.rebuilt(
        {str(settings.watch.documents_dirs[0] / "old.md"): FileRecord("documents", Status.DELETED)}
    )
    ledger.close()
    dormant = Dormant(settings)
    task = asyncio.create_task(dormant.run())
    deadline = time.monotonic() + 20
    while (
        not (settings.ops.state_dir / "daemon.json").exists() or not dormant.watcher.watches[0].started_wall
    ):
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # past the start-up reconcile
    return dormant, task


def _release(dormant: Dormant) -> None:
    handle = dormant.ledger.handed_off_lock
    if handle is not None:
        handle.close()


async def test_a_change_wakes_the_dormant_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dormant, task = await _dormant(tmp_path, monkeypatch)
    try:
        assert not task.done(), "nothing changed, so it stays dormant"
        (dormant.settings.watch.documents_dirs[0] / "new.md").write_text("# New\nSomething to ingest.\n")
        assert await asyncio.wait_for(task, 20) == 0
        assert dormant.next_mode == "daemon"
        assert os.environ[LOCK_FD_ENV] == str(dormant.ledger.handed_off_lock.fileno())
        assert (dormant.settings.ops.state_dir / "daemon.json").exists(), "kept for the next image"
    finally:
        _release(dormant)


async def test_an_api_call_wakes_it_with_503_and_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dormant, task = await _dormant(tmp_path, monkeypatch)
    try:
        port = dormant.health.bound_port
        health = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{port}/health")
        assert health["status"] == "ok" and health["dormant"] is True and health["model_loaded"] is False
        metrics = await asyncio.to_thread(_get_text, f"http://127.0.0.1:{port}/metrics")
        assert "ingestd_model_loaded 0.0" in metrics and "ingestd_store_up" not in metrics
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/search",
            data=json.dumps({"query": "x"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as failure:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
        assert failure.value.code == 503 and failure.value.headers["Retry-After"] == "3"
        assert "waking" in json.loads(failure.value.read())["error"]
        assert await asyncio.wait_for(task, 20) == 0 and dormant.next_mode == "daemon"
    finally:
        _release(dormant)


async def test_a_stop_beats_a_wake_under_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dormant, task = await _dormant(tmp_path, monkeypatch)
    try:
        dormant.wake("/api/search", "API call")
        dormant.stop()  # what SIGTERM calls, before the loop got to re-execute
        assert await asyncio.wait_for(task, 20) == 0
        assert dormant.next_mode is None, "it exits; it does not start the full daemon"
        assert not (dormant.settings.ops.state_dir / "daemon.json").exists()
        assert LOCK_FD_ENV not in os.environ
    finally:
        _release(dormant)


async def test_a_missing_state_wakes_it_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCK_FD_ENV, raising=False)
    dormant = Dormant(make_settings(tmp_path))  # no ledger: the full daemon must rebuild it
    try:
        assert await asyncio.wait_for(dormant.run(), 20) == 0
        assert dormant.next_mode == "daemon"
    finally:
        _release(dormant)


def _get_json(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(_get_text(url))
    return answer


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


# --- a real daemon, end to end ---------------------------------------------------------------
def test_an_idle_daemon_sleeps_small_and_wakes_on_search_and_on_a_new_file(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path, EMBED_IDLE_UNLOAD_SECONDS="2", LOG_LEVEL="INFO")
    (tmp_path / "docs" / "zebra.md").write_text("# Zebra\nThe zebra crossing by the mill was repainted.\n")
    log = tmp_path / "daemon.log"
    daemon = start_cli(env, "run", cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    process = psutil.Process(daemon.pid)
    try:
        awake_rss = _until_dormant(tmp_path, daemon, process, log)
        dormant_rss = process.memory_info().rss / 1e6
        assert dormant_rss < 100, f"dormant RSS {dormant_rss:.0f} MB"
        assert dormant_rss < awake_rss / 2, (dormant_rss, awake_rss)

        found = run_cli(env, "search", "zebra crossing repainted", "--json", cwd=tmp_path, timeout=120)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["hits"][0]["path"].endswith("zebra.md")

        _until_dormant(tmp_path, daemon, process, log)
        (tmp_path / "docs" / "hawks.md").write_text("# Hawks\nKettles of hawks migrate over the ridge.\n")
        answer = _search_until(env, tmp_path, "hawks migrating over the ridge", "hawks.md")
        assert answer["hits"][0]["path"].endswith("hawks.md")

        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        names = [e["event"] for e in events]
        assert names.count("daemon.dormant") >= 2 and names.count("daemon.waking") >= 2
        assert all("path" in e and "outcome" in e for e in events)
        assert _daemon_file(tmp_path)["pid"] == daemon.pid, "the same process throughout"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
    assert code == 0
    assert not (tmp_path / "state" / "daemon.json").exists()


def _until_dormant(
    tmp_path: Path, daemon: subprocess.Popen[bytes], process: psutil.Process, log: Path, limit: float = 120
) -> float:
    """Wait for the next daemon.dormant line; the highest RSS seen while awake."""
    before = log.read_text().count('"daemon.dormant"') if log.exists() else 0
    peak = 0.0
    deadline = time.monotonic() + limit
    while log.read_text().count('"daemon.dormant"') <= before:
        assert daemon.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "never went dormant"
        if "--dormant" not in process.cmdline():
            peak = max(peak, process.memory_info().rss / 1e6)
        time.sleep(0.1)
    time.sleep(0.5)
    return peak


def _search_until(env: dict[str, str], cwd: Path, query: str, name: str, limit: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        out = run_cli(env, "search", query, "--json", "--kind", "documents", cwd=cwd, timeout=120)
        assert out.returncode == 0, out.stderr
        answer: dict[str, Any] = json.loads(out.stdout)
        if any(hit["path"].endswith(name) for hit in answer["hits"]):
            return answer
        assert time.monotonic() < deadline, f"{name} never searchable"
        time.sleep(0.5)


def _daemon_file(tmp_path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((tmp_path / "state" / "daemon.json").read_text())
    return info
