"""Configuration from the environment and `.env`, validated once at start-up.

Names follow the ecosystem (`QDRANT_URL`, `EMBEDDING_MODEL`, `FASTEMBED_CACHE_PATH`, …) so that
an existing `.env` for Qdrant or FastEmbed tools keeps working. Every field here is documented in
`.env.example` and the README table; `tests/test_settings_sync.py` keeps the three in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
VOYAGE_CHUNK_TOKENS = 128


class ConfigError(Exception):
    """A setting is invalid; the message names the environment variable."""


def _split_paths(value: object) -> object:
    if isinstance(value, str):
        return [Path(part.strip()) for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All of ingestd's settings; the field name upper-cased is the environment variable."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )
    # Defaults that differ per provider (see _apply_voyage_defaults): `.env.example` shows them
    # commented out, since a copy that set them would pin FastEmbed's values for Voyage too.
    PROVIDER_DEPENDENT: ClassVar[frozenset[str]] = frozenset(
        {
            "embedding_model",
            "embed_batch_size",
            "embed_batch_max_tokens",
            "queue_max_chunks",
            "chunk_max_tokens",
        }
    )

    # --- folders -------------------------------------------------------------------------
    conversations_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("watch/conversations")]
    )
    documents_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("watch/documents")])
    state_dir: Path = Path("state")

    # --- Qdrant --------------------------------------------------------------------------
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_path: Path | None = None
    collection_prefix: str = "ingestd"
    qdrant_timeout_seconds: float = Field(default=30.0, gt=0)
    search_mode: Literal["hybrid", "dense"] = "hybrid"

    # --- embedding -----------------------------------------------------------------------
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
    # defaults; for Voyage, unset, they become one full request (see below).
    embed_batch_size: int = Field(default=16, ge=1, le=1000)
    embed_batch_max_tokens: int = Field(default=512, ge=16)
    embed_idle_unload_seconds: float = Field(default=900.0, ge=0)
    idle_dormant: bool = True
    embed_cache_max_entries: int = Field(default=200_000, ge=0)
    voyage_api_key: SecretStr | None = None
    voyage_base_url: str | None = None
    voyage_output_dimension: int | None = None
    voyage_rpm: int = Field(default=2000, ge=1)
    voyage_tpm: int = Field(default=3_000_000, ge=1000)
    redact_secrets: bool | None = None

    # --- chunking ------------------------------------------------------------------------
    # Measured with the benchmark's quality guard (meaning-only search, before hybrid): recall@5
    # of a sentence query was 0.93 at 128 tokens, 0.94 at 96 and 0.955 at 64, and 64-token
    # chunks embed 20-35 % more tokens/s. Voyage's models read far longer texts: 128 unless set.
    chunk_max_tokens: int = Field(default=64, ge=16)
    chunk_overlap_tokens: int = Field(default=0, ge=0)
    tool_result_max_chars: int = Field(default=2000, ge=0)
    include_thinking: bool = False
    include_images: bool = False

    # --- reading -------------------------------------------------------------------------
    read_block_bytes: int = Field(default=64 * 1024, ge=1024)
    max_line_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    document_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # --- discovery -----------------------------------------------------------------------
    watch_debounce_ms: int = Field(default=200, ge=10)
    watch_force_polling: bool = False
    watch_poll_delay_ms: int = Field(default=1000, ge=50)
    watch_probe_seconds: float = Field(default=300.0, ge=0)
    reconcile_seconds: float = Field(default=300.0, ge=0)

    # --- policy --------------------------------------------------------------------------
    documents_purge_on_delete: bool = True
    conversations_purge_on_delete: bool = False

    # --- pipeline ------------------------------------------------------------------------
    file_concurrency: int = Field(default=4, ge=1, le=64)
    queue_max_chunks: int = Field(default=256, ge=1)
    state_flush_seconds: float = Field(default=1.0, ge=0)
    retry_max_attempts: int = Field(default=5, ge=1)
    retry_backoff_seconds: float = Field(default=0.5, gt=0)
    retry_backoff_max_seconds: float = Field(default=60.0, gt=0)
    operational_memory_mb: int = Field(default=1024, ge=64)

    # --- operations ----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8765, ge=0, le=65535)
    health_published_port: int | None = Field(default=None, ge=1, le=65535)
    progress_log_seconds: float = Field(default=30.0, ge=0)
    heartbeat_seconds: float = Field(default=3600.0, ge=0)

    _split_conversations = field_validator("conversations_dirs", "documents_dirs", mode="before")(
        _split_paths
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("qdrant_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("voyage_base_url", mode="before")
    @classmethod
    def _check_voyage_url(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.embedding_provider == "fastembed" and self.chunk_max_tokens > 256:
            # all-MiniLM-L6-v2 was trained on at most 256 word-pieces; longer chunks are
            # silently truncated by FastEmbed at 512 and embedded badly before that.
            raise ValueError("CHUNK_MAX_TOKENS must be at most 256 for FastEmbed models")
        if self.chunk_overlap_tokens >= self.chunk_max_tokens:
            raise ValueError("CHUNK_OVERLAP_TOKENS must be smaller than CHUNK_MAX_TOKENS")
        if self.embedding_provider == "voyage" and self.voyage_api_key is None:
            raise ValueError("VOYAGE_API_KEY is required when EMBEDDING_PROVIDER=voyage")
        if self.embedding_provider == "voyage":
            self._apply_voyage_defaults()
        if self.embed_batch_max_tokens < self.chunk_max_tokens:
            raise ValueError("EMBED_BATCH_MAX_TOKENS must be at least CHUNK_MAX_TOKENS")
        return self

    def _apply_voyage_defaults(self) -> None:
        """Check the Voyage model and size unset batches to one full Voyage request.

        The field defaults suit FastEmbed's memory; a Voyage request costs one of a few requests
        a minute, so it should carry as many texts as the API takes. Only values the user did
        not set are changed; QUEUE_MAX_CHUNKS follows so that a batch can actually fill.
        """
        from ingestd.embedding.voyage import batch_defaults, check_settings

        given = set(self.model_fields_set)  # a copy: the assignments below add to the live set
        if "chunk_max_tokens" not in given:
            self.chunk_max_tokens = VOYAGE_CHUNK_TOKENS
        self.embedding_model = check_settings(
            self.embedding_model,
            "embedding_model" in given,
            self.voyage_output_dimension,
            self.chunk_max_tokens,
        )
        texts, tokens = batch_defaults(self.embedding_model)
        if "embed_batch_size" not in given:
            self.embed_batch_size = texts
        if "embed_batch_max_tokens" not in given:
            self.embed_batch_max_tokens = tokens
        if "queue_max_chunks" not in given:
            self.queue_max_chunks = max(self.queue_max_chunks, self.embed_batch_size)

    # --- derived -------------------------------------------------------------------------
    @property
    def qdrant_local_path(self) -> Path:
        return self.qdrant_path or self.state_dir / "qdrant"

    @property
    def model_cache_dir(self) -> Path:
        return self.fastembed_cache_path or self.state_dir / "models"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def redaction_enabled(self) -> bool:
        if self.redact_secrets is not None:
            return self.redact_secrets
        return self.embedding_provider != "fastembed"

    def roots(self) -> list[tuple[str, Path]]:
        """Every watched root with its kind, resolved so that symlinked roots compare equal."""
        kinds = [("conversations", d) for d in self.conversations_dirs]
        kinds += [("documents", d) for d in self.documents_dirs]
        return [(kind, path.expanduser().resolve()) for kind, path in kinds]


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"] if part != "__root__"]
            name = loc[0].upper() if loc else _name_from_message(error["msg"])
            lines.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None


def _name_from_message(message: str) -> str:
    """Model-level checks name their variable first in the message; reuse it."""
    head = message.removeprefix("Value error, ").split(" ", 1)[0]
    return head if head.isupper() else "configuration"
