"""A loopback stand-in for Voyage's embeddings API (POST {base_url}/embeddings), for the tests.

It speaks the wire format the official client uses (including `encoding_format=base64`),
enforces the per-request caps the way Voyage does (400 with Voyage's message), answers scripted
faults (400/401/429/500/503, with or without Retry-After), and records every request.

Vectors are hashed bags of words, normalised: deterministic, and texts that share words are
close, so an end-to-end search finds what was ingested.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CAPS = {
    "voyage-3-large": 120_000,
    "voyage-code-3": 120_000,
    "voyage-3.5": 320_000,
    "voyage-3": 320_000,
    "voyage-3.5-lite": 1_000_000,
}
DIMENSIONS = {"voyage-3": 1024}
MAX_TEXTS = 1000
CONTEXT = 32_000
PROMPT_TOKENS = 8  # Voyage prepends "Represent the document for retrieval: " and the like
WORD = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a plausible tokenizer count, never above the UTF-8 length."""
    return len(WORD.findall(text))


def vector_for(text: str, dimension: int) -> list[float]:
    values = [0.0] * dimension
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimension
        values[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0:
        values[0], norm = 1.0, 1.0
    return [v / norm for v in values]


@dataclass
class Fault:
    status: int
    retry_after: str | None = None
    detail: str | None = None


@dataclass
class Request:
    texts: list[str]
    model: str
    input_type: str | None
    output_dimension: int | None
    tokens: int
    status: int
    at: float
    authorization: str


@dataclass
class VoyageServer:
    api_key: str = "pa-test-key-0123456789"
    caps: dict[str, int] = field(default_factory=lambda: dict(CAPS))
    faults: list[Fault] = field(default_factory=list)  # served first, one per request
    always: Fault | None = None  # served to every request once `faults` is empty
    requests: list[Request] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)  # set by every request
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ok(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]

    def fail(
        self, status: int, times: int = 1, retry_after: str | None = None, detail: str | None = None
    ) -> None:
        self.faults.extend(Fault(status, retry_after, detail) for _ in range(times))

    async def start(self) -> VoyageServer:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _embeddings(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        model = str(body.get("model"))
        input_type = body.get("input_type")
        prompt = PROMPT_TOKENS if input_type else 0
        per_text = [count_tokens(text) + prompt for text in texts]
        if body.get("truncation", True):
            per_text = [min(tokens, CONTEXT) for tokens in per_text]
        tokens = sum(per_text)
        record = Request(
            texts,
            model,
            input_type,
            body.get("output_dimension"),
            tokens,
            200,
            time.monotonic(),
            request.headers.get("Authorization", ""),
        )
        self.requests.append(record)
        self.received.set()
        response = self._refusal(record, len(texts))
        if response is not None:
            record.status = response.status
            return response
        dimension = int(body.get("output_dimension") or DIMENSIONS.get(model, 1024))
        data = []
        for index, text in enumerate(texts):
            vector = vector_for(text, dimension)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dimension}f", *vector)).decode()
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        return web.json_response(
            {"object": "list", "data": data, "model": model, "usage": {"total_tokens": tokens}}
        )

    def _refusal(self, record: Request, count: int) -> web.Response | None:
        if record.authorization != f"Bearer {self.api_key}":
            return _error(401, "Provided API key is invalid.")
        fault = self.faults.pop(0) if self.faults else self.always
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.status in (500, 502, 503, 504):
                return web.Response(status=fault.status, text="upstream trouble", headers=headers)
            return _error(fault.status, fault.detail or f"scripted {fault.status}", headers)
        if count > MAX_TEXTS:
            return _error(400, f"The batch size limit is {MAX_TEXTS}. Your batch size is {count}.")
        cap = self.caps.get(record.model)
        if cap is None:
            return _error(400, f"Model {record.model} is not supported.")
        if record.tokens > cap:
            return _error(
                400,
                f"Request to model '{record.model}' failed. The max allowed tokens per submitted batch "
                f"is {cap}. Your batch has {record.tokens} tokens after truncation. Please lower the "
                "number of tokens in the batch.",
            )
        return None


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)
