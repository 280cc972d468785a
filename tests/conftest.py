"""Shared fixtures: the real FastEmbed model (loaded once) and a fresh embedded Qdrant per test."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from ingestd.embedding.base import EmbeddingProvider
from ingestd.embedding.fastembed_provider import FastEmbedProvider
from ingestd.engine import Engine
from ingestd.logs import configure_logging
from ingestd.pipeline import FileJob, Outcome
from ingestd.settings import Settings
from ingestd.store import VectorStore, payload_path

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = REPO / "state" / "models"  # the model assembled by `make install`, shared by tests

configure_logging("WARNING", "json")

Events = Callable[[], list[dict[str, Any]]]


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "conversations_dirs": [tmp / "watch" / "conversations"],
        "documents_dirs": [tmp / "watch" / "documents"],
        "state_dir": tmp / "state",
        "fastembed_cache_path": MODEL_CACHE,
        "health_port": 0,
        "watch_debounce_ms": 50,
        "retry_backoff_seconds": 0.01,
        "retry_backoff_max_seconds": 0.05,
        "progress_log_seconds": 0,
        "_env_file": None,
    }
    values.update(overrides)
    for folder in (*values["conversations_dirs"], *values["documents_dirs"]):
        Path(folder).mkdir(parents=True, exist_ok=True)
    return Settings(**values)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests must not pick up a developer's .env or exported settings."""
    names = set(Settings.env_names())
    for name in list(os.environ):
        if name.upper() in names:
            monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> FastEmbedProvider:
    settings = make_settings(tmp_path_factory.mktemp("provider"))
    return FastEmbedProvider(settings.embed)


class CountingProvider(EmbeddingProvider):
    """The real provider, counting what it embeds (the tests' measure of re-embedding)."""

    def __init__(self, inner: EmbeddingProvider) -> None:
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.fills_batches_when_idle = inner.fills_batches_when_idle
        self.concurrency = inner.concurrency
        self.batches: list[list[str]] = []  # every call's texts, in order
        self.calls = 0
        self.running = self.most_at_once = 0  # calls in progress, now and at most
        self.fail_next = 0

    @property
    def texts(self) -> list[str]:
        return [text for batch in self.batches for text in batch]

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def counter(self) -> Any:
        return self.inner.counter

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        from ingestd.errors import RetryLater

        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RetryLater("injected embedding failure")
        self.batches.append(list(texts))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            return await self.inner.embed_documents(texts)
        finally:
            self.running -= 1

    async def embed_query(self, text: str) -> list[float]:
        return await self.inner.embed_query(text)

    async def unload(self) -> None:
        await self.inner.unload()  # the shared model loads again on its next use

    async def close(self) -> None:  # the shared model outlives each test
        return None


@pytest.fixture
def counting(provider: FastEmbedProvider) -> CountingProvider:
    return CountingProvider(provider)


@contextlib.asynccontextmanager
async def engine_with(tmp_path: Path, counting: CountingProvider, **overrides: Any) -> AsyncIterator[Engine]:
    """An open engine on the shared model with these settings; closed on the way out."""
    engine = Engine(make_settings(tmp_path, **overrides), provider=counting)
    await engine.open("test")
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
async def engine(tmp_path: Path, counting: CountingProvider) -> AsyncIterator[Engine]:
    async with engine_with(tmp_path, counting) as opened:
        yield opened


@pytest.fixture
async def uncached(tmp_path: Path, counting: CountingProvider) -> AsyncIterator[Engine]:
    """An engine without the embedding cache, so `counting` sees every chunk that is embedded
    again (with the cache on, re-embedding the same text is a cache hit and invisible)."""
    async with engine_with(tmp_path, counting, embed_cache_max_entries=0) as opened:
        yield opened


async def ingest(engine: Engine, path: Path, limit_s: float | None = None) -> Outcome:
    """Submit one file and wait (at most `limit_s` seconds, when given) for its outcome."""
    result = await engine.submit(path)
    if isinstance(result, FileJob):
        await asyncio.wait_for(result.done.wait(), limit_s)
        assert result.outcome is not None
        return result.outcome
    assert result is not None
    return result


async def stored_points(store: VectorStore, kind: str, path: str) -> int:
    """How many points Qdrant holds for one file, read through the store's public scroll."""
    wanted = payload_path(path)
    return sum(1 for _, payload in await store.scroll_all(kind, ["path"]) if payload.get("path") == wanted)


async def until(condition: Callable[[], Any], limit_s: float = 60.0, step: float = 0.05) -> Any:
    """Poll `condition` (plain or async) until it returns something true, and return that."""
    deadline = time.monotonic() + limit_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


@contextlib.contextmanager
def captured_logs(level: str) -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog's events at `level` and above, as dictionaries; WARNING again afterwards."""
    configure_logging(level, "json")
    with structlog.testing.capture_logs() as captured:
        yield captured
    configure_logging("WARNING", "json")


@pytest.fixture
def events(capsys: pytest.CaptureFixture[str]) -> Iterator[Events]:
    """The JSON log lines printed so far at INFO and above (each call reads what is new)."""
    configure_logging("INFO", "json")
    seen: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        for line in capsys.readouterr().out.splitlines():
            if line.startswith("{"):
                seen.append(json.loads(line))
        return seen

    yield read
    configure_logging("WARNING", "json")


# --- `python -m ingestd` in a subprocess -------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for the CLI: watched folders tmp_path/conv and tmp_path/docs (created),
    state in tmp_path/state, the shared model, any free port, JSON logs; `extra` adds or overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT", "EMBED", "VOYAGE"))}
    env.update(
        CONVERSATIONS_DIRS=str(tmp_path / "conv"),
        DOCUMENTS_DIRS=str(tmp_path / "docs"),
        STATE_DIR=str(tmp_path / "state"),
        FASTEMBED_CACHE_PATH=str(MODEL_CACHE),
        HEALTH_PORT="0",
        LOG_FORMAT="json",
        PROGRESS_LOG_SECONDS="0",
    )
    env.update(extra)
    for name in ("CONVERSATIONS_DIRS", "DOCUMENTS_DIRS"):
        Path(env[name]).mkdir(parents=True, exist_ok=True)
    return env


def run_cli(
    env: dict[str, str], *args: str, cwd: Path, timeout: float = 180, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`python -m ingestd ARGS` to completion, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "ingestd", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **options,
    )


def announced_port(state_dir: Path, limit_s: float = 60) -> int:
    """The HTTP port a starting daemon writes to `daemon.json` (it appears once it listens)."""
    info = state_dir / "daemon.json"
    deadline = time.monotonic() + limit_s
    while not info.exists():
        assert time.monotonic() < deadline, "the daemon never announced its port"
        time.sleep(0.1)
    return int(json.loads(info.read_text())["port"])


def start_cli(env: dict[str, str], *args: str, cwd: Path, **options: Any) -> subprocess.Popen[Any]:
    """`python -m ingestd ARGS` started in the background (`options` go to Popen)."""
    return subprocess.Popen([sys.executable, "-m", "ingestd", *args], env=env, cwd=cwd, **options)
