"""Prometheus metrics, one registry per daemon so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ingestd.system import rss_bytes


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.files = Counter(
            "ingestd_files", "Files finished, by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.failures = Counter(
            "ingestd_file_failures", "Files skipped, failed or quarantined, by reason", ["reason"], registry=r
        )
        self.chunks_embedded = Counter("ingestd_chunks_embedded", "Chunks embedded", registry=r)
        self.chunks_reused = Counter(
            "ingestd_chunks_reused", "Chunks found already stored or cached, not embedded", registry=r
        )
        self.tokens_embedded = Counter("ingestd_tokens_embedded", "Tokens embedded", registry=r)
        self.embed_seconds = Histogram(
            "ingestd_embed_seconds",
            "Seconds per embedding call",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.upsert_seconds = Histogram(
            "ingestd_upsert_seconds",
            "Seconds per Qdrant upsert",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.retries = Counter("ingestd_retries", "Retries, by operation", ["operation"], registry=r)
        self.queue_depth = Gauge("ingestd_queue_depth", "Chunks waiting to be embedded", registry=r)
        self.files_pending = Gauge("ingestd_files_pending", "Files waiting or in progress", registry=r)
        self.backlog_age = Gauge(
            "ingestd_backlog_age_seconds", "Age of the oldest file waiting to be ingested", registry=r
        )
        self.rss = Gauge("ingestd_rss_bytes", "Resident set size of the daemon", registry=r)
        self.rss.set_function(rss_bytes)
        self.model_loaded = Gauge("ingestd_model_loaded", "1 while the embedding model is loaded", registry=r)
        self.store_up = Gauge("ingestd_store_up", "1 while Qdrant answers", registry=r)
        self.watcher_mode = Gauge(
            "ingestd_watcher_polling",
            "1 where a root is watched by polling, 0 for events",
            ["root"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
