"""Every exception ingestd raises on purpose, in one tree.

Callers catch by meaning, not by module: `EmbeddingSignal` subclasses tell the one retry policy
(`ingestd.retry`) what to do with a failed batch, so no provider retries on its own.
"""

from __future__ import annotations


class IngestdError(Exception):
    """Base of every error ingestd raises deliberately."""


class ConfigError(IngestdError):
    """A setting is invalid; the message names the environment variable."""


class StateLocked(IngestdError):
    """Another ingestd owns this state directory."""


class DocumentError(IngestdError):
    """A document cannot be turned into text (empty, too large, damaged); the file is skipped."""


class ModelUnavailable(IngestdError):
    """The embedding model's files cannot be found or assembled."""


class ModelMismatch(IngestdError):
    """The collection holds another model's vectors: a configuration error, never an outage."""


class StageCrashed(IngestdError):
    """A pipeline stage ended; nothing more is embedded or stored until a restart."""


class EmbeddingSignal(IngestdError):
    """A provider's verdict on one batch; the retry policy decides what happens next.

    Raised bare (no subclass), it is treated as transient, as an unclassified failure always was.
    """


class RetryLater(EmbeddingSignal):
    """Transient: the same batch may succeed later (timeouts, 5xx, 429)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Fatal(EmbeddingSignal):
    """No batch can succeed (credentials refused): all embedding halts until the cause is fixed."""


class TooLarge(EmbeddingSignal):
    """The batch is too large for one request: split it, and a single text that is still too
    large fails its file."""


class Rejected(EmbeddingSignal):
    """This batch's content is refused for good (a bad input); retrying cannot help."""


class GaveUp(IngestdError):
    """The retry policy stopped trying a batch: `signal` is the last verdict, after `attempts`
    calls. The batch's file is quarantined; nothing else is halted."""

    def __init__(self, signal: EmbeddingSignal, attempts: int) -> None:
        super().__init__(f"{signal} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.signal = signal
        self.attempts = attempts


class LedgerUnwritable(IngestdError):
    """A ledger write failed (disk full, I/O error) and was rolled back: the record is unchanged."""
