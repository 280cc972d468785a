"""VoyageProvider against a loopback Voyage API: caps, splits, retries, limits, auth, end to end.

The provider makes one request per call and raises a signal; retries and splits are the retry
policy's (ingestd.retry), so those tests drive the provider through it.

Every request goes to 127.0.0.1 (tests/voyage_server.py); nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Events, ingest, make_settings
from generators import dump, markdown_document, write_transcript
from ingestd.embedding import build_provider
from ingestd.embedding.voyage import (
    RateLimiter,
    VoyageProvider,
    estimate_tokens,
    parse_retry_after,
    plan_batches,
)
from ingestd.engine import Engine
from ingestd.errors import ConfigError, Fatal, GaveUp, Rejected, RetryLater
from ingestd.models import MAX_TEXTS, PROMPT_OVERHEAD
from ingestd.pipeline import FileJob
from ingestd.retry import Backoff, RetryPolicy
from ingestd.settings import Settings, load_settings
from voyage_server import Fault, VoyageServer, vector_for

pytestmark = pytest.mark.timeout(60)
ATTEMPTS = 3  # RETRY_MAX_ATTEMPTS in voyage_settings


class Sleeps(list[float]):
    """The policy's sleep: records each delay instead of waiting it out."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(attempts: int = ATTEMPTS, sleep: Any = None) -> RetryPolicy:
    return RetryPolicy(attempts, Backoff(0.01, 0.05), sleep=sleep if sleep is not None else Sleeps())


async def embed(
    provider: VoyageProvider, texts: list[str], retry: RetryPolicy | None = None
) -> list[list[float]]:
    """As the embed stage does it: each planned request retried or split by the policy."""
    return await (retry or policy()).run(provider.embed_documents, texts, plan=provider.plan_requests)


@pytest.fixture
async def server() -> AsyncIterator[VoyageServer]:
    loopback = await VoyageServer().start()
    yield loopback
    await loopback.stop()


def voyage_settings(tmp: Path, server: VoyageServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "embedding_provider": "voyage",
        "voyage_api_key": server.api_key,
        "voyage_base_url": server.base_url,
        "retry_max_attempts": ATTEMPTS,
        **overrides,
    }
    settings = make_settings(tmp, **values)
    assert settings.embed.voyage_base_url is not None and settings.embed.voyage_base_url.startswith(
        "http://127.0.0.1:"
    )
    return settings


@pytest.fixture
async def voyage(tmp_path: Path, server: VoyageServer) -> AsyncIterator[VoyageProvider]:
    provider = VoyageProvider(voyage_settings(tmp_path, server).embed)
    yield provider
    await provider.close()


def words(n: int, seed: int = 0) -> str:
    return " ".join(f"w{(seed * 7919 + i) % 997}" for i in range(n))


def assert_within_caps(server: VoyageServer) -> None:
    for request in server.ok:
        assert len(request.texts) <= MAX_TEXTS
        assert request.tokens <= server.caps[request.model]


# --- settings ---------------------------------------------------------------------------------
def test_settings_validate_voyage_per_model(tmp_path: Path) -> None:
    base: dict[str, Any] = {"_env_file": None, "embedding_provider": "voyage", "voyage_api_key": "pa-x"}
    settings = load_settings(**base)
    assert settings.embed.embedding_model == "voyage-3.5", "the FastEmbed default is replaced by Voyage's"
    assert settings.read.redaction_enabled, "redaction defaults on for a cloud provider"
    assert not load_settings(_env_file=None).read.redaction_enabled, "and off for FastEmbed"
    assert not load_settings(**base, redact_secrets=False).read.redaction_enabled
    assert load_settings(**base, embedding_model="voyage-3-large", voyage_output_dimension=2048)
    assert load_settings(**base, chunk_max_tokens=1024, embed_batch_max_tokens=8192), "256 is FastEmbed's cap"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"embedding_model": "voyage-3", "voyage_output_dimension": 512}, "VOYAGE_OUTPUT_DIMENSION"),
        ({"embedding_model": "voyage-3.5", "voyage_output_dimension": 300}, "VOYAGE_OUTPUT_DIMENSION"),
        ({"embedding_model": "text-embedding-3-small"}, "EMBEDDING_MODEL"),
        ({"voyage_base_url": "api.voyageai.com/v1"}, "VOYAGE_BASE_URL"),
        (
            {"embedding_model": "voyage-2", "chunk_max_tokens": 4000, "embed_batch_max_tokens": 8192},
            "CHUNK_MAX_TOKENS",
        ),
    ]
    for overrides, name in bad:
        with pytest.raises(ConfigError, match=name):
            load_settings(**base, **overrides)
    with pytest.raises(ConfigError, match="VOYAGE_API_KEY"):
        load_settings(_env_file=None, embedding_provider="voyage")


def test_voyage_batch_defaults_are_one_full_request(tmp_path: Path) -> None:
    base: dict[str, Any] = {"_env_file": None, "embedding_provider": "voyage", "voyage_api_key": "pa-x"}
    fastembed = load_settings(_env_file=None)
    assert (
        fastembed.embed.embed_batch_size,
        fastembed.embed.embed_batch_max_tokens,
        fastembed.ops.queue_max_chunks,
    ) == (
        16,
        512,
        256,
    )
    for model, cap in (("voyage-3.5", 320_000), ("voyage-3-large", 120_000), ("voyage-3.5-lite", 1_000_000)):
        settings = load_settings(**base, embedding_model=model)
        assert settings.embed.embed_batch_size == MAX_TEXTS
        assert settings.embed.embed_batch_max_tokens == cap - MAX_TEXTS * PROMPT_OVERHEAD
        assert settings.ops.queue_max_chunks >= MAX_TEXTS, "the chunk queue can fill a request"
    chosen = load_settings(**base, embed_batch_size=64, embed_batch_max_tokens=8192, queue_max_chunks=128)
    assert (
        chosen.embed.embed_batch_size,
        chosen.embed.embed_batch_max_tokens,
        chosen.ops.queue_max_chunks,
    ) == (
        64,
        8192,
        128,
    )
    env_file = tmp_path / ".env"
    env_file.write_text("EMBEDDING_PROVIDER=voyage\nVOYAGE_API_KEY=pa-x\nEMBED_BATCH_SIZE=32\n")
    from_env = load_settings(_env_file=env_file)
    assert (from_env.embed.embed_batch_size, from_env.embed.embed_batch_max_tokens) == (32, 304_000), (
        "set means set"
    )


def test_identity_and_batch_planning(tmp_path: Path, server: VoyageServer) -> None:
    provider = build_provider(voyage_settings(tmp_path, server, voyage_output_dimension=512).embed)
    assert isinstance(provider, VoyageProvider)
    assert provider.fingerprint == "voyage:voyage-3.5:512" and provider.dimension == 512
    assert provider.collection_slug == "voyage-voyage-3-5-512"
    assert provider.counter.count("hello world") == 2, "the offline WordPiece tokenizer sizes chunks"
    assert estimate_tokens("héllo") == 6 + PROMPT_OVERHEAD, "UTF-8 bytes bound any byte-level BPE count"
    assert [len(r) for r in plan_batches([1] * 2500, 10**9)] == [1000, 1000, 500]
    assert [len(r) for r in plan_batches([40, 40, 40, 100, 5], 100)] == [2, 1, 1, 1]
    assert parse_retry_after("2") == 2.0 and parse_retry_after("junk") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0, "a date in the past: no wait"
    assert parse_retry_after("86400") == 300.0, "absurd waits are capped"


# --- requests ---------------------------------------------------------------------------------
async def test_vectors_input_types_and_dimension(voyage: VoyageProvider, server: VoyageServer) -> None:
    texts = ["the flaky test", "a memory leak in the parser", "the flaky test"]
    vectors = await voyage.embed_documents(texts)
    query = await voyage.embed_query("flaky test")
    assert len(vectors) == 3 and all(len(v) == 1024 for v in [*vectors, query])
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    assert vectors[0] == vectors[2], "deterministic"
    assert vectors[0] == pytest.approx(vector_for(texts[0], 1024), abs=1e-6), "order kept (base64 decoded)"
    assert [r.input_type for r in server.requests] == ["document", "query"]
    assert all(r.output_dimension == 1024 and r.model == "voyage-3.5" for r in server.requests)
    assert voyage.tokens_used == sum(r.tokens for r in server.requests)


async def test_fixed_dimension_model_sends_no_output_dimension(tmp_path: Path, server: VoyageServer) -> None:
    provider = VoyageProvider(voyage_settings(tmp_path, server, embedding_model="voyage-3").embed)
    try:
        assert len(await provider.embed_query("x")) == 1024
        assert server.requests[0].output_dimension is None
    finally:
        await provider.close()


async def test_batches_stay_within_text_and_token_caps(tmp_path: Path, server: VoyageServer) -> None:
    provider = VoyageProvider(voyage_settings(tmp_path, server, embedding_model="voyage-3-large").embed)
    try:
        many = [f"short text {i}" for i in range(2500)]
        assert len(await provider.embed_documents(many)) == 2500
        assert [len(r.texts) for r in server.requests] == [1000, 1000, 500]
        server.requests.clear()
        big = [words(2000, seed) for seed in range(150)]  # ~10 kB each: ~1.5 MB in all
        vectors = await provider.embed_documents(big)
        assert len(vectors) == 150 and vectors[42] == pytest.approx(vector_for(big[42], 1024), abs=1e-6)
        assert len(server.requests) >= 13, "120k-token cap with a byte-sized estimate"
        assert [t for r in server.requests for t in r.texts] == big, "every text once, in order"
        for request in server.requests:
            assert sum(estimate_tokens(t) for t in request.texts) <= 120_000
            assert request.tokens <= sum(estimate_tokens(t) for t in request.texts), "the estimate bounds it"
        assert_within_caps(server)
        assert all(r.status == 200 for r in server.requests)
    finally:
        await provider.close()


async def test_token_400_halves_the_batch(voyage: VoyageProvider, server: VoyageServer) -> None:
    server.caps["voyage-3.5"] = 2500  # the server counts more than the client planned for
    texts = [words(1000, seed) for seed in range(16)]  # ~1008 server tokens each: two fit
    vectors = await embed(voyage, texts)
    assert len(vectors) == 16
    assert [len(r.texts) for r in server.requests] == [16, 8, 4, 2, 2, 4, 2, 2, 8, 4, 2, 2, 4, 2, 2]
    assert [len(r.texts) for r in server.ok] == [2] * 8
    assert [t for r in server.ok for t in r.texts] == texts
    assert_within_caps(server)


async def test_token_400_split_never_loops(voyage: VoyageProvider, server: VoyageServer) -> None:
    server.caps["voyage-3.5"] = 100
    texts = [words(300, seed) for seed in range(5)]  # each alone is over the cap
    with pytest.raises(GaveUp) as caught:
        await embed(voyage, texts)
    assert isinstance(caught.value.signal, Rejected) and "single text" in str(caught.value)
    assert "too large" in str(caught.value)
    # Depth-first halving stops at the first single text that still fails: 5 → 2 → 1.
    assert [len(r.texts) for r in server.requests] == [5, 2, 1]


async def test_5xx_and_429_retried_with_backoff(tmp_path: Path, server: VoyageServer) -> None:
    provider = VoyageProvider(voyage_settings(tmp_path, server).embed)
    server.fail(500)
    server.fail(503, retry_after="1")
    server.fail(429)
    slept = Sleeps()
    try:
        assert len(await embed(provider, ["a", "b"], policy(4, slept))) == 2
    finally:
        await provider.close()
    assert [r.status for r in server.requests] == [500, 503, 429, 200]
    assert provider.requests == 4
    assert len(slept) == 3 and 1.0 <= slept[1] <= 1.1, "Retry-After: 1 is waited out"
    assert slept[0] <= 0.05 and slept[2] <= 0.05, "else the backoff's steps"


async def test_retry_after_is_honoured_and_shared(voyage: VoyageProvider, server: VoyageServer) -> None:
    server.fail(429, retry_after="1")
    first = asyncio.create_task(embed(voyage, ["first"], policy(sleep=asyncio.sleep)))
    await asyncio.wait_for(server.received.wait(), 10)
    await asyncio.sleep(0.05)  # the 429 is being handled: the limiter is paused
    second = asyncio.create_task(voyage.embed_query("second"))
    await asyncio.gather(first, second)
    refused = server.requests[0]
    assert refused.status == 429 and len(server.requests) == 3
    later = server.requests[1:]
    assert all(r.at - refused.at >= 0.95 for r in later), "nobody calls before Retry-After has passed"
    assert all(r.at - refused.at < 10 for r in later)


async def test_one_call_is_one_request_and_a_failing_batch_costs_max_attempts(
    voyage: VoyageProvider, server: VoyageServer
) -> None:
    """Issue 16: the provider retried inside the pipeline's retries (up to 25 requests per
    batch). Alone it now makes one request; through the policy, RETRY_MAX_ATTEMPTS in all."""
    server.always = Fault(503)
    with pytest.raises(RetryLater, match="HTTP 503"):
        await voyage.embed_documents(["doomed"])
    assert len(server.requests) == 1
    server.requests.clear()
    with pytest.raises(GaveUp) as caught:
        await embed(voyage, ["doomed"])
    assert isinstance(caught.value.signal, RetryLater) and caught.value.attempts == ATTEMPTS
    assert f"after {ATTEMPTS} attempts" in str(caught.value)
    assert len(server.requests) == ATTEMPTS


async def test_other_400_is_not_retried(voyage: VoyageProvider, server: VoyageServer) -> None:
    server.fail(400, detail="Value 'x' is not a valid input_type.")
    with pytest.raises(GaveUp) as caught:
        await embed(voyage, ["text"])
    assert isinstance(caught.value.signal, Rejected) and len(server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_fatal_and_stops_calling(
    tmp_path: Path, server: VoyageServer, status: int
) -> None:
    key = "pa-WrongKey0123456789abcdef" if status == 401 else server.api_key
    provider = VoyageProvider(voyage_settings(tmp_path, server, voyage_api_key=key).embed)
    if status == 403:
        server.fail(403, detail="Forbidden")
    try:
        for _ in range(3):
            with pytest.raises(Fatal) as caught:
                await embed(provider, ["text"])
            assert "VOYAGE_API_KEY" in str(caught.value) and key not in str(caught.value)
        assert len(server.requests) == 1, "after the refusal, Voyage is not called again"
    finally:
        await provider.close()


# --- rate limiter -----------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_limiter_sliding_minute() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=3, tpm=1000, clock=clock, sleep=clock.sleep)
    times = []
    for tokens in (100, 100, 100, 100):  # the fourth request waits for the first to age out
        await limiter.acquire(tokens)
        times.append(clock.now)
    assert times == [0.0, 0.0, 0.0, 60.0]
    clock.now = 200.0
    booking = await limiter.acquire(900)
    assert clock.now == 200.0
    limiter.settle(booking, 300)  # Voyage counted fewer than estimated: the rest is free again
    await limiter.acquire(700)
    assert clock.now == 200.0
    await limiter.acquire(500)  # 1000 booked: waits for the window to pass
    assert clock.now == 260.0
    await limiter.acquire(500)  # the older bookings have aged out: 500 more fit at once
    assert clock.now == 260.0
    limiter.pause(5)
    await limiter.acquire(0)
    assert clock.now == 265.0
    await limiter.acquire(5000)  # bigger than a minute's budget: waits for an empty window
    assert clock.now == 320.0


async def test_limiter_is_shared_by_concurrent_callers(voyage: VoyageProvider, server: VoyageServer) -> None:
    voyage.limiter = RateLimiter(rpm=2, tpm=10**6, window=0.5)  # a half-second "minute"
    await asyncio.gather(*(voyage.embed_query(f"q{i}") for i in range(5)))
    at = sorted(r.at for r in server.requests)
    assert len(at) == 5
    assert at[2] - at[0] >= 0.45 and at[4] - at[2] >= 0.45, "two per window, however many callers"
    assert voyage.tokens_used == sum(r.tokens for r in server.requests), "booked what Voyage counted"


# --- through the pipeline ---------------------------------------------------------------------
@pytest.fixture
async def voyage_engine(tmp_path: Path, server: VoyageServer) -> AsyncIterator[Engine]:
    engine = Engine(voyage_settings(tmp_path, server, retry_max_attempts=2))
    await engine.open("test")
    yield engine
    await engine.close()


async def test_end_to_end_ingest_and_search(voyage_engine: Engine, server: VoyageServer) -> None:
    engine = voyage_engine
    assert isinstance(engine.provider, VoyageProvider)
    assert engine.store.collections["conversations"].endswith("voyage-voyage-3-5-1024")
    path = engine.settings.watch.conversations_dirs[0] / "-home-dev-project" / "s1.jsonl"
    session = write_transcript(path, seed=1, exchanges=30)
    with path.open("ab") as handle:
        handle.write(dump([session.user("The zebra quantum marmalade broke the nightly build.")]))
    doc = engine.settings.watch.documents_dirs[0] / "notes.md"
    doc.write_text(markdown_document(2, 4))
    outcome = await ingest(engine, path, limit_s=30)
    assert outcome.status == "done" and outcome.embedded == outcome.chunks > 0
    assert (await ingest(engine, doc, limit_s=30)).status == "done"
    hits = await engine.search("zebra quantum marmalade", None, None, 3)
    assert hits and hits[0]["path"] == str(path)
    assert "zebra quantum marmalade" in str(hits[0]["text"])
    rows = await engine.store.scroll_all("conversations", ["model"])
    assert {payload["model"] for _, payload in rows} == {"voyage:voyage-3.5:1024"}
    assert server.requests[-1].input_type == "query"
    assert {r.input_type for r in server.requests[:-1]} == {"document"}
    assert all(r.status == 200 for r in server.requests)
    sizes = [len(r.texts) for r in server.requests if r.input_type == "document"]
    assert max(sizes) > 16, f"requests were cut to FastEmbed's batch of 16: {sizes}"
    assert len(server.requests[0].texts) == outcome.chunks, "one request carried the whole transcript"
    assert_within_caps(server)


async def test_pipeline_batches_fill_requests_up_to_the_model_cap(
    tmp_path: Path, server: VoyageServer
) -> None:
    """With the Voyage defaults a pipeline batch holds up to 1,000 chunks; the provider cuts it
    into requests under voyage-3-large's 120k-token cap, each far beyond FastEmbed's 16."""
    settings = voyage_settings(
        tmp_path, server, embedding_model="voyage-3-large", voyage_output_dimension=256
    )
    assert (settings.embed.embed_batch_size, settings.embed.embed_batch_max_tokens) == (
        1000,
        120_000 - 1000 * 16,
    )
    engine = Engine(settings)
    await engine.open("test")
    try:
        doc = settings.watch.documents_dirs[0] / "long.md"
        doc.write_text("\n\n".join(f"Paragraph {n}. {words(60, n)}." for n in range(600)))  # no repeats
        outcome = await ingest(engine, doc, limit_s=50)
        assert outcome.status == "done" and outcome.chunks > 1000
    finally:
        await engine.close()
    sizes = [len(r.texts) for r in server.requests]
    assert all(r.status == 200 for r in server.requests), "no request was refused as too large"
    assert sum(sizes) == outcome.chunks
    assert min(sizes[:-1]) > 16 and max(sizes) <= MAX_TEXTS, sizes
    budgets = [sum(map(estimate_tokens, r.texts)) for r in server.requests]
    assert max(budgets) > 60_000 and all(b <= 120_000 for b in budgets), "full, and within the cap"
    assert_within_caps(server)


async def test_failing_file_is_quarantined_then_retried(voyage_engine: Engine, server: VoyageServer) -> None:
    engine = voyage_engine
    path = engine.settings.watch.conversations_dirs[0] / "p" / "q.jsonl"
    write_transcript(path, seed=3, exchanges=1)
    server.always = Fault(500)
    outcome = await ingest(engine, path, limit_s=30)
    assert outcome.status == "quarantined" and "HTTP 500" in (outcome.reason or "")
    # RETRY_MAX_ATTEMPTS=2 requests in all: the provider no longer retries inside the policy.
    assert len(server.requests) == 2
    record = engine.ledger.get(str(path))
    assert record is not None and record.status == "quarantined"
    server.always = None
    assert engine.retry() == [str(path)]
    assert (await ingest(engine, path, limit_s=30)).status == "done"


async def test_rate_limited_file_recovers(
    voyage_engine: Engine, server: VoyageServer, events: Events
) -> None:
    engine = voyage_engine
    path = engine.settings.watch.conversations_dirs[0] / "p" / "r.jsonl"
    write_transcript(path, seed=4, exchanges=1)
    server.fail(429)  # RETRY_MAX_ATTEMPTS=2: one refusal, then the retry
    outcome = await ingest(engine, path, limit_s=30)
    assert outcome.status == "done"
    assert [r.status for r in server.requests] == [429, 200]
    retries = [e for e in events() if e["event"] == "embed.retry"]
    assert len(retries) == 1 and retries[0]["path"] == str(path), "the retry names the file"


async def test_bad_key_halts_embedding_and_degrades_health(
    tmp_path: Path, server: VoyageServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingestd.daemon import Daemon

    bad_key = "pa-WrongKey0123456789abcdef"
    settings = voyage_settings(tmp_path, server, voyage_api_key=bad_key)
    engine = Engine(settings)
    await engine.open("test")
    try:
        daemon = Daemon(settings, engine=engine)
        daemon.ready.set()
        assert (await daemon.health_report())["status"] == "ok"
        path = settings.watch.conversations_dirs[0] / "p" / "a.jsonl"
        write_transcript(path, seed=5, exchanges=1)
        job = await engine.submit(path)
        assert isinstance(job, FileJob)
        for _ in range(200):
            if engine.pipeline.status().embedding_halted:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the pipeline keeps probing; the provider answers locally
        health = await daemon.health_report()
        assert health["status"] == "degraded" and "VOYAGE_API_KEY" in health["embedding_halted"]
        assert len(server.requests) == 1, "one refused request, then no more calls to Voyage"
        record = engine.ledger.get(str(path))
        assert record is not None and record.status == "pending", "the file waits; it is not quarantined"
        assert not job.done.is_set()
    finally:
        await engine.close()
    out = capsys.readouterr().out
    assert out.count('"embed.halted"') == 1
    assert bad_key not in out
