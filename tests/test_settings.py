"""Bad configuration is refused at start-up with the variable's name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingestd.settings import ConfigError, load_settings


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("EMBED_BATCH_SIZE", "lots", "EMBED_BATCH_SIZE"),
        ("EMBED_BATCH_SIZE", "0", "EMBED_BATCH_SIZE"),
        ("QDRANT_URL", "localhost:6333", "QDRANT_URL"),
        ("EMBEDDING_PROVIDER", "openai", "EMBEDDING_PROVIDER"),
        ("CHUNK_MAX_TOKENS", "512", "CHUNK_MAX_TOKENS"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL"),
        ("WATCH_FORCE_POLLING", "perhaps", "WATCH_FORCE_POLLING"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert needle in str(caught.value)


def test_voyage_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", "voyage")
    with pytest.raises(ConfigError, match="VOYAGE_API_KEY"):
        load_settings(_env_file=None)


def test_defaults_are_embedded_and_local(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(_env_file=None)
    assert settings.qdrant_url is None and settings.qdrant_local_path == Path("state/qdrant")
    assert settings.health_host == "127.0.0.1"
    assert [str(p) for p in settings.conversations_dirs] == ["watch/conversations"]
    monkeypatch.setenv("CONVERSATIONS_DIRS", "/a, /b")
    assert [str(p) for p in load_settings(_env_file=None).conversations_dirs] == ["/a", "/b"]


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("QDRANT_URL=http://127.0.0.1:6333\nCHUNK_MAX_TOKENS=200\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.qdrant_url == "http://127.0.0.1:6333" and settings.chunk_max_tokens == 200


def test_cli_exits_2_with_the_message(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "EMBED_BATCH_SIZE": "-3", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "ingestd", "status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "EMBED_BATCH_SIZE" in result.stderr
