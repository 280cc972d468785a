"""Security properties: no writes under watched folders, no escape through links, secrets
never printed, HTTP on loopback by default."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from conftest import CountingProvider, announced_port, make_settings, run_cli, start_cli, subprocess_env
from generators import markdown_document, write_transcript
from ingestd.daemon import Daemon
from ingestd.engine import Engine
from ingestd.pipeline import Outcome
from ingestd.settings_sections import OpsSettings

QDRANT_KEY = "qdrant-key-4f9d2c7e1b"
VOYAGE_KEY = "pa-voyagekey8a7b6c5d4e3f"


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            info = os.lstat(os.path.join(directory, name))
            out[os.path.join(directory, name)] = (info.st_size, info.st_mtime_ns, info.st_mode)
    return out


async def test_daemon_never_writes_inside_watched_folders(tmp_path: Path, counting: CountingProvider) -> None:
    settings = make_settings(tmp_path, reconcile_seconds=0.5)
    for index in range(3):
        write_transcript(
            settings.watch.conversations_dirs[0] / "p" / f"s{index}.jsonl", seed=400 + index, exchanges=2
        )
        (settings.watch.documents_dirs[0] / f"d{index}.md").write_text(markdown_document(400 + index, 2))
    watch = tmp_path / "watch"
    before = _snapshot(watch)
    dir_mtimes = {d: os.stat(d).st_mtime_ns for d, _, _ in os.walk(watch)}
    daemon = Daemon(settings, engine=Engine(settings, provider=counting))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        for _ in range(600):
            if daemon.engine.ledger.summary().get("done") == 6:
                break
            await asyncio.sleep(0.1)
        assert daemon.engine.ledger.summary().get("done") == 6
        await asyncio.sleep(1.2)  # a reconcile scan or two
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
    assert _snapshot(watch) == before, "files under the watched roots changed"
    assert {d: os.stat(d).st_mtime_ns for d, _, _ in os.walk(watch)} == dir_mtimes, "an entry was created"


async def test_paths_outside_the_roots_are_refused(engine: Engine, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nThe vault code is in here.\n")
    docs = engine.settings.watch.documents_dirs[0]
    (docs / "link.md").symlink_to(outside / "secret.md")
    (docs / "linked-dir").symlink_to(outside, target_is_directory=True)
    for path in (docs / "link.md", docs / "linked-dir" / "secret.md", outside / "secret.md"):
        result = await engine.submit(path)
        if path.parent == outside:
            assert result is None, "a path outside every root is not ours"
        else:
            assert isinstance(result, Outcome), result
            assert result.status == "skipped" and "outside" in (result.reason or ""), result
    rows = await engine.store.scroll_all("documents", ["text"])
    assert all("vault code" not in str(p["text"]) for _, p in rows)


def test_keys_are_redacted_in_logs_health_and_status(tmp_path: Path) -> None:
    """Errors quote paths and server answers: a key inside one must be masked wherever it shows.

    QDRANT_KEY has no known shape, so only the configured-key registry can mask it, in the
    daemon and in a CLI that merely talks to the daemon alike. Its file names hold it here.
    """
    env = subprocess_env(tmp_path, LOG_LEVEL="DEBUG", QDRANT_API_KEY=QDRANT_KEY, VOYAGE_API_KEY=VOYAGE_KEY)
    docs = tmp_path / "docs"
    (docs / "a.md").write_text(f"# Keys\n\nA note that quotes {VOYAGE_KEY} by mistake.\n")
    outputs = _daemon_outputs(env, tmp_path, docs / f"export-{QDRANT_KEY}.pdf")
    (docs / f"notes-{QDRANT_KEY}.pdf").write_bytes(b"not a pdf at all\n")
    for args in (["import"], ["status", "--json"], ["status"], ["-v", "status"]):
        result = run_cli(env, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    body = json.loads(outputs[-3])
    assert body["files"] == {"done": 1, "skipped": 2}
    assert "skipped" in outputs[-2] and "[REDACTED].pdf: not a PDF" in outputs[-2], outputs[-2]
    for text in outputs:
        assert QDRANT_KEY not in text and VOYAGE_KEY not in text


def _daemon_outputs(env: dict[str, str], tmp_path: Path, bad: Path) -> list[str]:
    """/health, `ingestd status` through the daemon, and the daemon's log, after `bad` failed."""
    daemon = start_cli(env, "run", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{announced_port(tmp_path / 'state')}/health"
        deadline = time.monotonic() + 60
        bad.write_bytes(b"not a pdf either\n")
        health: dict[str, object] = {}
        while time.monotonic() < deadline and not health.get("last_error"):
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    health = json.loads(response.read())
            except urllib.error.HTTPError as exc:  # 503 while starting
                health = json.loads(exc.read())
        assert "[REDACTED].pdf: not a PDF" in str(health.get("last_error")), health
        status = run_cli(env, "status", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "[REDACTED].pdf: not a PDF" in status.stdout, status.stdout
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = daemon.stdout.read() if daemon.stdout else ""
    assert '"event": "file.skipped"' in log
    return [json.dumps(health), status.stdout + status.stderr, log]


def test_http_binds_to_loopback_by_default(tmp_path: Path) -> None:
    assert OpsSettings.model_fields["health_host"].default == "127.0.0.1"
    settings = make_settings(tmp_path)
    assert settings.ops.health_host == "127.0.0.1"

    async def bound() -> list[str]:
        daemon = Daemon(settings, engine=Engine(settings, provider=_Never()))
        await daemon.health.start()
        try:
            port = daemon.health.bound_port
            listening = psutil.Process().net_connections("tcp")
            return [c.laddr.ip for c in listening if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        finally:
            await daemon.health.stop()

    assert asyncio.run(bound()) == ["127.0.0.1"]


class _Never(CountingProvider):
    """Never embeds: binding the HTTP port needs no model."""

    def __init__(self) -> None:
        from ingestd.embedding.fastembed_provider import FastEmbedProvider

        settings = make_settings(Path(os.environ.get("TMPDIR", "/tmp")) / "never")
        super().__init__(FastEmbedProvider(settings.embed))
