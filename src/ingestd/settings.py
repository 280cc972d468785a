"""Configuration from the environment and `.env`, validated once at start-up, in sections.

Names follow the ecosystem (`QDRANT_URL`, `EMBEDDING_MODEL`, `FASTEMBED_CACHE_PATH`, …) so that
an existing `.env` for Qdrant or FastEmbed tools keeps working. Each section is its own settings
class reading the same variables as before (a field's name upper-cased), so a component is given
only what it uses, and a `.env` written for the flat settings of earlier versions still works.
The root `Settings` composes the sections and owns the checks that span them. Every field is
documented in `.env.example` and the README table; `tests/test_settings_sync.py` keeps them in step.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, PrivateAttr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails

from ingestd.errors import ConfigError
from ingestd.models import batch_defaults, check_settings
from ingestd.settings_sections import (
    SECTION_OF,
    SECTIONS,
    ChunkSettings,
    EmbedSettings,
    OpsSettings,
    ReadSettings,
    Section,
    StoreSettings,
    WatchSettings,
    arguments_only,
)

__all__ = [
    "SECTIONS",
    "ChunkSettings",
    "EmbedSettings",
    "OpsSettings",
    "ReadSettings",
    "Settings",
    "StoreSettings",
    "WatchSettings",
    "load_settings",
]

VOYAGE_CHUNK_TOKENS = 128


class Settings(BaseModel):
    """All of ingestd's settings: one section per component, and the checks that span them.

    Built from flat names as before, `Settings(state_dir=..., embed_batch_size=4)`: each goes to
    its section, and an unknown name is an error rather than a silent no-op. `_env_file` and the
    other pydantic-settings options are passed to every section.
    """

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

    watch: WatchSettings
    read: ReadSettings
    chunk: ChunkSettings
    embed: EmbedSettings
    store: StoreSettings
    ops: OpsSettings
    # The flat names the user set (arguments, environment, .env), before any provider default:
    # what `with_changes` starts again from.
    _given: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __init__(self, **flat: Any) -> None:
        super().__init__(**_build_sections(flat))

    @classmethod
    def flat_fields(cls) -> dict[str, FieldInfo]:
        """Every setting's field by its flat name, section after section in `SECTIONS` order."""
        return {name: info for section in SECTIONS.values() for name, info in section.model_fields.items()}

    @classmethod
    def env_names(cls) -> list[str]:
        """Every environment variable ingestd reads, in `flat_fields` order."""
        return [name.upper() for name in cls.flat_fields()]

    def with_changes(self, **flat: Any) -> Settings:
        """A validated copy with these flat settings changed; the environment is not read again."""
        unknown = sorted(set(flat) - set(SECTION_OF))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        with arguments_only():
            return Settings(**{**self._given, **flat})

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        sections: list[Section] = [self.watch, self.read, self.chunk, self.embed, self.store, self.ops]
        self._given = {name: getattr(s, name) for s in sections for name in s.model_fields_set}
        embed, chunk = self.embed, self.chunk
        if embed.embedding_provider == "fastembed" and chunk.chunk_max_tokens > 256:
            # all-MiniLM-L6-v2 was trained on at most 256 word-pieces; longer chunks are
            # silently truncated by FastEmbed at 512 and embedded badly before that.
            raise ValueError("CHUNK_MAX_TOKENS must be at most 256 for FastEmbed models")
        if chunk.chunk_overlap_tokens >= chunk.chunk_max_tokens:
            raise ValueError("CHUNK_OVERLAP_TOKENS must be smaller than CHUNK_MAX_TOKENS")
        if embed.embedding_provider == "voyage" and embed.voyage_api_key is None:
            raise ValueError("VOYAGE_API_KEY is required when EMBEDDING_PROVIDER=voyage")
        if embed.embedding_provider == "voyage":
            self._apply_voyage_defaults()
        if embed.embed_batch_max_tokens < chunk.chunk_max_tokens:
            raise ValueError("EMBED_BATCH_MAX_TOKENS must be at least CHUNK_MAX_TOKENS")
        self.read._cloud_provider = embed.embedding_provider != "fastembed"
        self.embed._state_dir = self.store._state_dir = self.ops.state_dir
        return self

    def _apply_voyage_defaults(self) -> None:
        """Check the Voyage model and size unset batches to one full Voyage request.

        The field defaults suit FastEmbed's memory; a Voyage request costs one of a few requests
        a minute, so it should carry as many texts as the API takes. Only values the user did
        not set are changed; QUEUE_MAX_CHUNKS follows so that a batch can actually fill.
        """
        given, embed = self._given, self.embed
        if "chunk_max_tokens" not in given:
            self.chunk.chunk_max_tokens = VOYAGE_CHUNK_TOKENS
        embed.embedding_model = check_settings(
            embed.embedding_model,
            "embedding_model" in given,
            embed.voyage_output_dimension,
            self.chunk.chunk_max_tokens,
        )
        texts, tokens = batch_defaults(embed.embedding_model)
        if "embed_batch_size" not in given:
            embed.embed_batch_size = texts
        if "embed_batch_max_tokens" not in given:
            embed.embed_batch_max_tokens = tokens
        if "queue_max_chunks" not in given:
            self.ops.queue_max_chunks = max(self.ops.queue_max_chunks, embed.embed_batch_size)


def _build_sections(flat: dict[str, Any]) -> dict[str, Section]:
    """Each section from its flat names (or given whole), with every section's errors at once."""
    options = {key: value for key, value in flat.items() if key.startswith("_")}
    own: dict[str, dict[str, Any]] = {key: {} for key in SECTIONS}
    built: dict[str, Section] = {}
    for name, value in flat.items():
        if name in SECTIONS and isinstance(value, SECTIONS[name]):
            built[name] = value
        elif name in SECTION_OF:
            own[SECTION_OF[name]][name] = value
        elif not name.startswith("_"):
            raise TypeError(f"{name!r} is not a setting")
    errors: list[InitErrorDetails] = []
    for key, cls in SECTIONS.items():
        if key in built:
            continue
        try:
            built[key] = cls(**options, **own[key])
        except ValidationError as exc:
            errors.extend(_details(exc))
    if errors:
        raise ValidationError.from_exception_data("Settings", errors)
    return built


def _details(exc: ValidationError) -> list[InitErrorDetails]:
    """A section's errors in the form that `ValidationError.from_exception_data` takes back."""
    found: list[InitErrorDetails] = []
    for error in exc.errors():
        detail = InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"])
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        found.append(detail)
    return found


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into one line per bad variable."""
    try:
        return Settings(**overrides)
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
