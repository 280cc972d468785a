"""The project's structural types, in a module that imports nothing of the project.

An interface that two layers share lives here, so that neither has to import the other: the
embedding providers hand the chunker a token counter without `embedding.base` importing the
chunker (and with it the splitting libraries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from semantic_text_splitter import MarkdownSplitter, TextSplitter
    from tokenizers import Tokenizer


class TokenCounter(Protocol):
    """The model's tokenizer as the chunker uses it: true lengths, and splitters that count alike."""

    tokenizer: Tokenizer
    separator: int  # tokens of the separator between two units of a chunk

    def count(self, text: str) -> int: ...

    def splitter(self, markdown: bool, capacity: int, overlap: int) -> MarkdownSplitter | TextSplitter: ...
