"""Prometheus metrics, one registry per daemon so tests can run several side by side.

Counters and histograms are fed by the pipeline as work happens; gauges that describe the
daemon's current condition (queue, backlog, model, store) are read when /metrics is scraped, via
`bind`, so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

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
        self.cache_hits = Counter(
            "ingestd_embed_cache_hits", "Chunks whose vector came from the cache", registry=r
        )
        self.cache_misses = Counter("ingestd_embed_cache_misses", "Chunks not in the cache", registry=r)
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
        self.files_queued = Gauge("ingestd_files_queued", "Files waiting to be looked at", registry=r)
        self.watcher_mode = Enum(
            "ingestd_watcher_mode",
            "How each watched root learns of changes: file events, or polling",
            ["root"],
            states=["events", "polling"],
            registry=r,
        )
        self.watch_missed = Counter(
            "ingestd_watch_missed_events",
            "Changes found by reconcile scans that no file event announced, by root",
            ["root"],
            registry=r,
        )
        self.watch_probe_ok = Gauge(
            "ingestd_watch_probe_ok", "1 when the last event probe saw its event, else 0", registry=r
        )

    def bind(
        self,
        *,
        files_queued: Callable[[], float],
        backlog_age: Callable[[], float],
        model_loaded: Callable[[], bool],
        store_up: Callable[[], bool] | None = None,
    ) -> None:
        """Read the daemon's current condition at scrape time instead of copying it around.

        Without `store_up` the gauge is left out: unknown must not read as 0 to an alert."""
        self.files_queued.set_function(files_queued)
        self.backlog_age.set_function(backlog_age)
        self.model_loaded.set_function(lambda: 1.0 if model_loaded() else 0.0)
        if store_up is None:
            self.registry.unregister(self.store_up)
        else:
            store = store_up
            self.store_up.set_function(lambda: 1.0 if store() else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
