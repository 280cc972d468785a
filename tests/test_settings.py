"""Bad configuration is refused at start-up with the variable's name; the sections compose into one root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingestd.errors import ConfigError
from ingestd.settings import ChunkSettings, Settings, load_settings


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
    assert settings.store.qdrant_url is None and settings.store.qdrant_local_path == Path("state/qdrant")
    assert settings.ops.health_host == "127.0.0.1"
    assert [str(p) for p in settings.watch.conversations_dirs] == ["watch/conversations"]
    monkeypatch.setenv("CONVERSATIONS_DIRS", "/a, /b")
    assert [str(p) for p in load_settings(_env_file=None).watch.conversations_dirs] == ["/a", "/b"]


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("QDRANT_URL=http://127.0.0.1:6333\nCHUNK_MAX_TOKENS=200\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.store.qdrant_url == "http://127.0.0.1:6333" and settings.chunk.chunk_max_tokens == 200


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


def test_each_section_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables are those of the flat settings: a user's .env keeps working."""
    monkeypatch.setenv("CHUNK_MAX_TOKENS", "100")
    monkeypatch.setenv("QDRANT_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("RECONCILE_SECONDS", "0")
    settings = load_settings(_env_file=None)
    assert settings.chunk.chunk_max_tokens == 100
    assert settings.store.qdrant_timeout_seconds == 7.0
    assert settings.watch.reconcile_seconds == 0.0
    assert ChunkSettings(_env_file=None).chunk_max_tokens == 100, "a section alone reads them too"
    assert "CHUNK_MAX_TOKENS" in Settings.env_names() and "STATE_DIR" in Settings.env_names()
    assert len(Settings.env_names()) == len(set(Settings.env_names())), "no variable in two sections"


def test_flat_names_go_to_their_sections_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, state_dir=tmp_path, embed_batch_size=4, search_mode="dense")
    assert settings.ops.state_dir == tmp_path
    assert settings.embed.embed_batch_size == 4 and settings.store.search_mode == "dense"
    with pytest.raises(TypeError, match="chunk_max_token"):
        Settings(_env_file=None, chunk_max_token=32)  # a typo is not silently ignored


def test_paths_under_the_state_dir_follow_it(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, state_dir=tmp_path)
    assert settings.embed.model_cache_dir == tmp_path / "models"
    assert settings.store.qdrant_local_path == tmp_path / "qdrant"
    given = load_settings(_env_file=None, state_dir=tmp_path, qdrant_path=tmp_path / "q")
    assert given.store.qdrant_local_path == tmp_path / "q"


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED_BATCH_SIZE", "0")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    monkeypatch.setenv("WATCH_DEBOUNCE_MS", "1")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert all(name in message for name in ("EMBED_BATCH_SIZE", "LOG_LEVEL", "WATCH_DEBOUNCE_MS"))


def test_a_changed_copy_is_validated_and_keeps_provider_defaults_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    voyage = load_settings(_env_file=None, embedding_provider="voyage", voyage_api_key="pa-x")
    assert (voyage.embed.embedding_model, voyage.embed.embed_batch_max_tokens) == ("voyage-3.5", 304_000)
    monkeypatch.setenv("EMBED_BATCH_SIZE", "7")  # a copy does not read the environment again
    larger = voyage.with_changes(embedding_model="voyage-3-large", voyage_api_key="pa-y")
    key = larger.embed.voyage_api_key
    assert key is not None and key.get_secret_value() == "pa-y"
    assert larger.embed.embed_batch_max_tokens == 104_000, "the unset batch follows the new model"
    assert larger.embed.embed_batch_size == 1000 and voyage.embed.embedding_model == "voyage-3.5"
    assert larger.read.redaction_enabled, "derived values are filled in the copy too"
    with pytest.raises(ValidationError, match="CHUNK_OVERLAP_TOKENS"):
        voyage.with_changes(chunk_overlap_tokens=128)
    with pytest.raises(TypeError, match="nonsense"):
        voyage.with_changes(nonsense=1)


def test_redaction_follows_the_provider_unless_set() -> None:
    assert not load_settings(_env_file=None).read.redaction_enabled
    assert load_settings(_env_file=None, redact_secrets=True).read.redaction_enabled
    cloud = load_settings(_env_file=None, embedding_provider="voyage", voyage_api_key="pa-x")
    assert cloud.read.redaction_enabled
