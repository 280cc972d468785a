"""The settings' sections: one pydantic-settings class per component, each reading its own variables.

Every section reads the same environment and `.env` (a field's name upper-cased is its variable),
and ignores the variables of the others. What spans sections (the provider's defaults, the paths
under STATE_DIR) is decided by the root, `ingestd.settings.Settings`, which fills the private
attributes here: a section never refers back to the root.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from ingestd.models import MINILM


def _split_paths(value: object) -> object:
    if isinstance(value, str):
        return [Path(part.strip()) for part in value.split(",") if part.strip()]
    return value


def _http_url_or_unset(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, str) and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class Section(BaseSettings):
    """One group of settings; `TITLE` heads its group in `.env.example` and the README table.

    Unknown variables are ignored, since one environment and one `.env` feed every section.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )
    TITLE: ClassVar[str]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not _read_environment.get():
            return (init_settings,)
        return init_settings, env_settings, dotenv_settings, file_secret_settings


_read_environment: ContextVar[bool] = ContextVar("ingestd_read_environment", default=True)


@contextmanager
def arguments_only() -> Iterator[None]:
    """Sections built meanwhile take their arguments and defaults, not the environment: what a
    changed copy of settings already read (`Settings.with_changes`)."""
    token = _read_environment.set(False)
    try:
        yield
    finally:
        _read_environment.reset(token)


class WatchSettings(Section):
    TITLE: ClassVar[str] = "watch: folders and discovery"

    conversations_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("watch/conversations")]
    )
    documents_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("watch/documents")])
    watch_debounce_ms: int = Field(default=200, ge=10)
    watch_force_polling: bool = False
    watch_poll_delay_ms: int = Field(default=1000, ge=50)
    watch_probe_seconds: float = Field(default=300.0, ge=0)
    reconcile_seconds: float = Field(default=300.0, ge=0)

    _split_dirs = field_validator("conversations_dirs", "documents_dirs", mode="before")(_split_paths)

    def roots(self) -> list[tuple[str, Path]]:
        """Every watched root with its kind, resolved so that symlinked roots compare equal."""
        kinds = [("conversations", d) for d in self.conversations_dirs]
        kinds += [("documents", d) for d in self.documents_dirs]
        return [(kind, path.expanduser().resolve()) for kind, path in kinds]


class ReadSettings(Section):
    TITLE: ClassVar[str] = "read: reading and parsing"

    read_block_bytes: int = Field(default=64 * 1024, ge=1024)
    max_line_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    document_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    tool_result_max_chars: int = Field(default=2000, ge=0)
    include_thinking: bool = False
    include_images: bool = False
    redact_secrets: bool | None = None
    # Filled by the root from EMBEDDING_PROVIDER: text leaves the machine only for a cloud one.
    _cloud_provider: bool = PrivateAttr(default=False)

    @property
    def redaction_enabled(self) -> bool:
        if self.redact_secrets is not None:
            return self.redact_secrets
        return self._cloud_provider


class ChunkSettings(Section):
    TITLE: ClassVar[str] = "chunk: chunking"

    # Measured with the benchmark's quality guard (meaning-only search, before hybrid): recall@5
    # of a sentence query was 0.93 at 128 tokens, 0.94 at 96 and 0.955 at 64, and 64-token
    # chunks embed 20-35 % more tokens/s. Voyage's models read far longer texts: 128 unless set.
    chunk_max_tokens: int = Field(default=64, ge=16)
    chunk_overlap_tokens: int = Field(default=0, ge=0)


class EmbedSettings(Section):
    TITLE: ClassVar[str] = "embed: embedding"

    embedding_provider: Literal["fastembed", "voyage"] = "fastembed"
    embedding_model: str = MINILM
    fastembed_model_source: Literal["pypi", "hub"] = "pypi"
    fastembed_model_dir: Path | None = None
    fastembed_cache_path: Path | None = None
    embed_cpu_mem_arena: bool = False
    # 0 and 0: as many embedding calls at once as the cgroup's quota has CPUs (at most 8), one
    # ONNX thread each (on 2 CPUs 19-25 % more tokens/s than one call on two threads).
    onnx_threads: int = Field(default=0, ge=0)
    thread_pool_workers: int = Field(default=0, ge=0, le=16)
    # Measured (docs/performance.md): on 2 CPUs batches of 4 to 32 chunks embed at about the
    # same tokens/s, while the per-call memory peak follows batch x longest chunk; in a 50 MB
    # transcript A/B, 512 tokens peaked lowest at the same speed. These two are FastEmbed's
    # defaults; for Voyage, unset, they become one full request (see Settings).
    embed_batch_size: int = Field(default=16, ge=1, le=1000)
    embed_batch_max_tokens: int = Field(default=512, ge=16)
    embed_idle_unload_seconds: float = Field(default=900.0, ge=0)
    embed_cache_max_entries: int = Field(default=200_000, ge=0)
    voyage_api_key: SecretStr | None = None
    voyage_base_url: str | None = None
    voyage_output_dimension: int | None = None
    voyage_rpm: int = Field(default=2000, ge=1)
    voyage_tpm: int = Field(default=3_000_000, ge=1000)
    retry_max_attempts: int = Field(default=5, ge=1)
    retry_backoff_seconds: float = Field(default=0.5, gt=0)
    retry_backoff_max_seconds: float = Field(default=60.0, gt=0)
    # Filled by the root from STATE_DIR, the model cache's home unless FASTEMBED_CACHE_PATH is set.
    _state_dir: Path = PrivateAttr(default=Path("state"))

    @field_validator("voyage_base_url", mode="before")
    @classmethod
    def _check_voyage_url(cls, value: object) -> object:
        value = _http_url_or_unset(value)
        return value.rstrip("/") if isinstance(value, str) else value

    @property
    def model_cache_dir(self) -> Path:
        return self.fastembed_cache_path or self._state_dir / "models"


class StoreSettings(Section):
    TITLE: ClassVar[str] = "store: Qdrant and deletions"

    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_path: Path | None = None
    collection_prefix: str = "ingestd"
    qdrant_timeout_seconds: float = Field(default=30.0, gt=0)
    search_mode: Literal["hybrid", "dense"] = "hybrid"
    documents_purge_on_delete: bool = True
    conversations_purge_on_delete: bool = False
    # Filled by the root from STATE_DIR, the embedded Qdrant's home unless QDRANT_PATH is set.
    _state_dir: Path = PrivateAttr(default=Path("state"))

    _blank_url_is_unset = field_validator("qdrant_url", mode="before")(_http_url_or_unset)

    @property
    def qdrant_local_path(self) -> Path:
        return self.qdrant_path or self._state_dir / "qdrant"


class OpsSettings(Section):
    TITLE: ClassVar[str] = "ops: concurrency, memory, logs and the health server"

    state_dir: Path = Path("state")
    file_concurrency: int = Field(default=4, ge=1, le=64)
    queue_max_chunks: int = Field(default=256, ge=1)
    operational_memory_mb: int = Field(default=1024, ge=64)
    idle_dormant: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8765, ge=0, le=65535)
    health_published_port: int | None = Field(default=None, ge=1, le=65535)
    progress_log_seconds: float = Field(default=30.0, ge=0)
    heartbeat_seconds: float = Field(default=3600.0, ge=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


SECTIONS: dict[str, type[Section]] = {
    "watch": WatchSettings,
    "read": ReadSettings,
    "chunk": ChunkSettings,
    "embed": EmbedSettings,
    "store": StoreSettings,
    "ops": OpsSettings,
}
# Each flat name (a field's, which is also its variable's) and the section that holds it.
SECTION_OF: dict[str, str] = {name: key for key, cls in SECTIONS.items() for name in cls.model_fields}
