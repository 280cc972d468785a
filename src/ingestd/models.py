"""The embedding models ingestd knows, by name, and Voyage's limits, for settings and providers.

It imports nothing of the project, so that settings can validate a configuration without
importing a provider (whose imports reach back to settings' consumers). Voyage's figures are from
docs.voyageai.com/reference/embeddings-api.
"""

from __future__ import annotations

from dataclasses import dataclass

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # FastEmbed's default, assembled offline from PyPI
MAX_TEXTS = 1000  # texts per request, all models
PROMPT_OVERHEAD = 16  # tokens per text for the input_type prompt (~8) and special tokens
DEFAULT_MODEL = "voyage-3.5"
FLEXIBLE = (1024, 256, 512, 2048)  # Matryoshka models; the default first


@dataclass(frozen=True, slots=True)
class VoyageModel:
    batch_tokens: int  # the API's cap on the tokens of one request
    context: int  # tokens per text
    dimensions: tuple[int, ...]  # allowed output dimensions, the default first

    @property
    def flexible(self) -> bool:
        return len(self.dimensions) > 1


MODELS: dict[str, VoyageModel] = {
    "voyage-4-large": VoyageModel(120_000, 32_000, FLEXIBLE),
    "voyage-4": VoyageModel(320_000, 32_000, FLEXIBLE),
    "voyage-4-lite": VoyageModel(1_000_000, 32_000, FLEXIBLE),
    "voyage-3-large": VoyageModel(120_000, 32_000, FLEXIBLE),
    "voyage-3.5": VoyageModel(320_000, 32_000, FLEXIBLE),
    "voyage-3.5-lite": VoyageModel(1_000_000, 32_000, FLEXIBLE),
    "voyage-code-3": VoyageModel(120_000, 32_000, FLEXIBLE),
    "voyage-3": VoyageModel(320_000, 32_000, (1024,)),
    "voyage-3-lite": VoyageModel(1_000_000, 32_000, (512,)),
    "voyage-finance-2": VoyageModel(120_000, 32_000, (1024,)),
    "voyage-law-2": VoyageModel(120_000, 16_000, (1024,)),
    "voyage-multilingual-2": VoyageModel(120_000, 32_000, (1024,)),
    "voyage-code-2": VoyageModel(120_000, 16_000, (1536,)),
    "voyage-large-2": VoyageModel(120_000, 16_000, (1536,)),
    "voyage-2": VoyageModel(320_000, 4_000, (1024,)),
}


def check_settings(model: str, model_given: bool, dimension: int | None, chunk_max_tokens: int) -> str:
    """The Voyage model to use, or ValueError naming the variable (settings' model validator)."""
    if not model_given:
        model = DEFAULT_MODEL  # EMBEDDING_MODEL's default names the FastEmbed model
    spec = MODELS.get(model)
    if spec is None:
        raise ValueError(
            f"EMBEDDING_MODEL must name a Voyage text embedding model, not {model!r}: one of "
            + ", ".join(MODELS)
        )
    if dimension is not None and dimension not in spec.dimensions:
        allowed = ", ".join(str(d) for d in sorted(spec.dimensions))
        raise ValueError(f"VOYAGE_OUTPUT_DIMENSION must be one of {allowed} for {model}, not {dimension}")
    if chunk_max_tokens > spec.context // 2:
        raise ValueError(
            f"CHUNK_MAX_TOKENS must be at most {spec.context // 2} for {model} "
            f"(half its {spec.context}-token context, a margin for the offline tokenizer)"
        )
    return model


def batch_defaults(model: str) -> tuple[int, int]:
    """EMBED_BATCH_SIZE and EMBED_BATCH_MAX_TOKENS for Voyage when not set: one full request.

    The pipeline's FastEmbed defaults are sized for CPU memory and would cap every request at
    16 texts, which a free-tier account (3 RPM) cannot afford. The token figure is the model's
    request cap less `PROMPT_OVERHEAD` per text: the margin for the input-type prompt and special
    tokens that the pipeline's chunk counts leave out. The provider still plans each request by
    its byte bound, so no request exceeds the cap whatever is set.
    """
    spec = MODELS[model]
    return MAX_TEXTS, spec.batch_tokens - MAX_TEXTS * PROMPT_OVERHEAD
