"""Rebuild a lost ledger from what Qdrant holds.

Every point carries its file, generation and ordinal, so the ledger can be reconstructed as
"this file, at this generation, has points": each such file is marked pending from its start,
and the pipeline's verification pass acknowledges the chunks already stored without embedding
them again. Nothing is re-embedded that Qdrant still has.
"""

from __future__ import annotations

from ingestd.ledger import FileRecord, Ledger, Status
from ingestd.reader import digest
from ingestd.store import KINDS, VectorStore, path_key


async def rebuild_state(store: VectorStore, ledger: Ledger) -> int:
    latest: dict[str, tuple[str, int]] = {}
    for kind in KINDS:
        for _, payload in await store.scroll_all(kind, ["path", "generation"]):
            path, generation = payload.get("path"), payload.get("generation")
            if not isinstance(path, str) or not isinstance(generation, int):
                continue
            path = path_key(path)  # payloads hold names that are not UTF-8 escaped
            if path not in latest or latest[path][1] < generation:
                latest[path] = (kind, generation)
    ledger.rebuilt(
        {
            path: FileRecord(kind=kind, status=Status.PENDING, generation=generation, head_fp=digest(b""))
            for path, (kind, generation) in latest.items()
        }
    )
    return len(latest)
