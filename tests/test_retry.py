"""The one retry policy: attempts, backoff, Retry-After and splitting, decided from typed signals.

No test waits: the policy's sleep is injected and records the delays it was asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ingestd.errors import EmbeddingSignal, Fatal, GaveUp, Rejected, RetryLater, TooLarge
from ingestd.retry import Backoff, RetryPolicy

BACKOFF = Backoff(base=0.5, ceiling=60.0)


class Script:
    """A call that answers each batch with the next scripted signal (None: success), then succeeds.

    `fail` decides per batch instead when given (a batch too large for the "model", say).
    """

    def __init__(
        self,
        *signals: EmbeddingSignal | None,
        fail: Callable[[list[int]], EmbeddingSignal | None] | None = None,
    ) -> None:
        self.signals = list(signals)
        self.fail = fail
        self.calls: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[str]:
        self.calls.append(list(items))
        signal = self.signals.pop(0) if self.signals else self.fail(items) if self.fail else None
        if signal is not None:
            raise signal
        return [f"v{item}" for item in items]


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(attempts: int = 3) -> tuple[RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    return RetryPolicy(attempts, BACKOFF, sleep=sleeps), sleeps


@pytest.mark.parametrize(
    ("signals", "calls", "sleeps"),
    [
        ((), 1, 0),
        ((RetryLater("503"),), 2, 1),
        ((RetryLater("timeout"), RetryLater("429")), 3, 2),
        ((EmbeddingSignal("unclassified"),), 2, 1),  # a bare signal is transient, as it always was
    ],
)
async def test_transient_signals_are_retried_until_success(
    signals: tuple[EmbeddingSignal, ...], calls: int, sleeps: int
) -> None:
    retry, slept = policy(attempts=3)
    heard: list[tuple[int, float, str]] = []
    script = Script(*signals)
    result = await retry.run(script, [1, 2], lambda n, delay, s: heard.append((n, delay, str(s))))
    assert result == ["v1", "v2"]
    assert len(script.calls) == calls and len(slept) == sleeps
    assert [(n, delay) for n, delay, _ in heard] == list(zip(range(1, sleeps + 1), slept, strict=True))
    assert [text for _, _, text in heard] == [str(s) for s in signals]


@pytest.mark.parametrize("attempts", [1, 2, 5])
async def test_an_always_failing_batch_costs_exactly_the_attempts(attempts: int) -> None:
    retry, slept = policy(attempts)
    script = Script(fail=lambda _: RetryLater("HTTP 500"))
    with pytest.raises(GaveUp) as caught:
        await retry.run(script, [1])
    assert len(script.calls) == attempts and len(slept) == attempts - 1
    assert caught.value.attempts == attempts and isinstance(caught.value.signal, RetryLater)
    assert "HTTP 500" in str(caught.value) and f"after {attempts} attempt" in str(caught.value)


async def test_rejected_gives_up_at_once_and_fatal_is_raised_as_is() -> None:
    retry, slept = policy(attempts=5)
    rejected = Script(Rejected("bad input"))
    with pytest.raises(GaveUp) as caught:
        await retry.run(rejected, [1, 2])
    assert len(rejected.calls) == 1 and caught.value.attempts == 1
    assert isinstance(caught.value.signal, Rejected)
    fatal = Script(Fatal("key refused"))
    with pytest.raises(Fatal, match="key refused"):
        await retry.run(fatal, [1, 2])
    assert len(fatal.calls) == 1 and slept == []


async def test_retry_after_is_waited_out() -> None:
    retry, slept = policy()
    await retry.run(Script(RetryLater("429", retry_after=7.0)), [1])
    assert len(slept) == 1 and 7.0 <= slept[0] <= 7.7


async def test_too_large_halves_depth_first_and_keeps_the_order() -> None:
    retry, slept = policy(attempts=1)  # splitting spends no attempt budget: one is enough
    script = Script(fail=lambda items: TooLarge("too many tokens") if len(items) > 2 else None)
    heard: list[str] = []
    result = await retry.run(script, list(range(8)), lambda n, delay, s: heard.append(type(s).__name__))
    assert result == [f"v{i}" for i in range(8)]
    assert [len(call) for call in script.calls] == [8, 4, 2, 2, 4, 2, 2]
    assert heard == ["TooLarge"] * 3 and slept == [], "a split is told, and nobody waits for it"


async def test_a_single_item_still_too_large_gives_up_without_looping() -> None:
    retry, _ = policy()
    script = Script(fail=lambda _: TooLarge("HTTP 400: too many tokens"))
    with pytest.raises(GaveUp) as caught:
        await retry.run(script, [1, 2, 3, 4, 5])
    assert [len(call) for call in script.calls] == [5, 2, 1], "5 -> 2 -> 1, then the first single fails"
    assert isinstance(caught.value.signal, Rejected) and "single text is too large" in str(caught.value)


async def test_a_planned_request_that_fails_is_retried_alone() -> None:
    retry, slept = policy()
    script = Script(None, RetryLater("503"))
    result = await retry.run(script, list(range(6)), plan=lambda items: [range(0, 3), range(3, 6)])
    assert result == [f"v{i}" for i in range(6)]
    assert script.calls == [[0, 1, 2], [3, 4, 5], [3, 4, 5]] and len(slept) == 1


async def test_an_empty_batch_makes_no_call_and_a_policy_needs_an_attempt() -> None:
    retry, _ = policy()
    script = Script()
    assert await retry.run(script, []) == [] and script.calls == []
    with pytest.raises(ValueError, match="at least one attempt"):
        RetryPolicy(0, BACKOFF)


@pytest.mark.parametrize(
    ("attempt", "step"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (7, 32.0), (8, 60.0), (50, 60.0), (100_000, 60.0)],
)
def test_backoff_doubles_up_to_its_ceiling_with_jitter(attempt: int, step: float) -> None:
    """Within the upper half of each step (never at once), and a store outage of days (attempt
    100,000) does not overflow the doubling."""
    delays = [BACKOFF.delay(attempt) for _ in range(200)]
    assert all(step / 2 <= delay <= step for delay in delays)
    assert len(set(delays)) > 1, "jittered"


@pytest.mark.parametrize(("retry_after", "most"), [(0.0, 0.0), (2.0, 2.2), (30.0, 31.0), (300.0, 301.0)])
def test_backoff_honours_retry_after_over_its_own_steps(retry_after: float, most: float) -> None:
    delays = [BACKOFF.delay(1, retry_after) for _ in range(200)]
    assert all(retry_after <= delay <= most for delay in delays)
