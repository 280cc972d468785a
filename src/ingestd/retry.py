"""One retry policy: how many calls a batch gets, how long to wait between them, when to split.

Providers make one attempt per call and say what went wrong with a typed signal
(`ingestd.errors`); only this module decides what happens next. Before it, Voyage retried inside
its own loop while the pipeline retried around it, so one always-failing batch cost up to 25
requests before its file was quarantined; now it costs RETRY_MAX_ATTEMPTS.

`Backoff` is the one backoff formula: the embed retries here and the store retries use it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ingestd.errors import EmbeddingSignal, Fatal, GaveUp, Rejected, RetryLater, TooLarge

T = TypeVar("T")
V = TypeVar("V")
OnRetry = Callable[[int, float, EmbeddingSignal], None]
MAX_DOUBLINGS = 62  # beyond this 2**n only overflows a float; the ceiling has long been reached


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, capped, with jitter over the upper half of each step.

    The jitter spreads the callers that failed together (every file of a Qdrant outage); the
    lower bound of half the step keeps a retry from following its failure at once. A server's
    Retry-After is waited out as given, plus a little jitter so that callers do not return in
    one burst.
    """

    base: float
    ceiling: float

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 for the first failure)."""
        if retry_after is not None:
            return retry_after + random.uniform(0.0, min(1.0, 0.1 * retry_after))
        step = min(self.ceiling, self.base * 2.0 ** min(max(attempt - 1, 0), MAX_DOUBLINGS))
        return random.uniform(step / 2, step)


class RetryPolicy:
    """Calls `call` on a batch until it succeeds or the signals say to stop.

    - RetryLater (or a bare EmbeddingSignal): wait `backoff.delay`, call again, at most
      `attempts` calls in all; then GaveUp with the last signal.
    - TooLarge: call again on each half; a single item still too large gives up (Rejected).
    - Rejected: give up at once, since the same input fails the same way.
    - Fatal: raised as is; no batch can succeed, and the caller halts all embedding.

    `plan` divides a batch into the calls a provider would make anyway (Voyage's requests), so
    that a failed request is retried alone instead of with the ones that succeeded before it.
    """

    def __init__(
        self,
        attempts: int,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        self.attempts = attempts
        self.backoff = backoff
        self._sleep = sleep

    async def run(
        self,
        call: Callable[[list[T]], Awaitable[list[V]]],
        items: list[T],
        on_retry: OnRetry | None = None,
        *,
        plan: Callable[[list[T]], list[range]] | None = None,
    ) -> list[V]:
        """`call`'s results for every item, in order; `on_retry` hears of each call made again
        (after its wait, or split in halves with a delay of 0)."""
        if not items:
            return []
        results: list[V] = []
        for part in plan(items) if plan is not None else [range(len(items))]:
            results.extend(await self._halving(call, items[part.start : part.stop], on_retry))
        return results

    async def _halving(
        self, call: Callable[[list[T]], Awaitable[list[V]]], items: list[T], on_retry: OnRetry | None
    ) -> list[V]:
        """Depth-first halving: every step shrinks the batch, so it ends by log2(n) levels."""
        try:
            return await self._attempts(call, items, on_retry)
        except TooLarge as signal:
            if len(items) == 1:
                raise GaveUp(Rejected(f"a single text is too large: {signal}"), 1) from signal
            if on_retry is not None:
                on_retry(1, 0.0, signal)
            half = len(items) // 2
            first = await self._halving(call, items[:half], on_retry)
            return first + await self._halving(call, items[half:], on_retry)

    async def _attempts(
        self, call: Callable[[list[T]], Awaitable[list[V]]], items: list[T], on_retry: OnRetry | None
    ) -> list[V]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(items)
            except (Fatal, TooLarge):
                raise
            except Rejected as signal:
                raise GaveUp(signal, attempt) from signal
            except EmbeddingSignal as signal:
                if attempt >= self.attempts:
                    raise GaveUp(signal, attempt) from signal
                retry_after = signal.retry_after if isinstance(signal, RetryLater) else None
                delay = self.backoff.delay(attempt, retry_after)
                if on_retry is not None:
                    on_retry(attempt, delay, signal)
                await self._sleep(delay)
