"""The summary table, the plots and docs/performance.md, all from results.json's structure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Row = dict[str, Any]
PLOTS = ("soak.png", "large.png", "sweep.png", "drop.png", "corpus.png")


def _row(measure: str, value: Any, target: str = "", ok: bool | None = None, note: str = "") -> Row:
    return {"measure": measure, "value": value, "target": target, "ok": ok, "note": note}


def summary_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if eff := r.get("efficiency"):
        rows.append(
            _row(
                "1. pipeline / raw FastEmbed tokens/s",
                eff["ratio"],
                "≥ 0.90",
                eff["ratio"] >= 0.90,
                f"median of {len(eff['rounds'])} alternating rounds; "
                f"{eff['pipeline_tokens_per_s']} vs {eff['raw_tokens_per_s']} tok/s on the same batches"
                + (
                    f" (the faster raw way each round; against one call at a time on "
                    f"{eff['usual_threads']} threads {eff['ratio_to_usual']}, against "
                    f"{eff['concurrency']} calls at once on {eff['threads']} thread(s) each "
                    f"{eff['ratio_to_same_calls']})"
                    if "ratio_to_usual" in eff
                    else ""
                )
                + (
                    f"; {eff['ratio_to_plain_batches']} against plain batches of {eff['raw_batch_size']}"
                    if "ratio_to_plain_batches" in eff
                    else ""
                ),
            )
        )
    if c := r.get("corpus"):
        mb = c["bytes"] / 1e6
        rows += [
            _row("2. corpus: files/min", c["files_per_min"], note=f"{c['files']} files, {mb:.1f} MB"),
            _row("2. corpus: chunks/s", c["chunks_per_s"], note=f"{c['chunks']} chunks"),
            _row("2. corpus: MB/min", c["mb_per_min"], note=f"{c['seconds']} s spawn to exit"),
            _row("2. corpus: peak RSS (MB)", c["peak_rss_mb"], note="`ingestd import` process"),
            _row("2. corpus: minutes until searchable", round(c["seconds"] / 60, 1), note="spawn to exit"),
        ]
        if c.get("cache_hit_rate") is not None:
            rows.append(_row("10. embedding cache hit rate (corpus)", c["cache_hit_rate"]))
    if q := r.get("quality"):
        note = f"{q['queries']} queries, {q['points_searched']} chunks; {q['search_ms_mean']} ms a search"
        rows.append(
            _row(
                "8. recall@5 (hybrid, the default)",
                q["recall_at_5"],
                "≥ 0.95",
                q["recall_at_5"] >= 0.95,
                note,
            )
        )
        if dense := q.get("dense"):
            rows.append(
                _row(
                    "8. recall@5, meaning only (SEARCH_MODE=dense)",
                    dense["recall_at_5"],
                    note=f"same queries; {dense['search_ms_mean']} ms a search",
                )
            )
    if a := r.get("append"):
        mean = a["spaced_chunks_per_append_mean"]
        top = a["spaced_chunks_per_append_max"]
        rows += [
            _row(
                "3. chunks per append, live (mean)",
                a["live_chunks_per_append_mean"],
                "≤ 2",
                a["live_chunks_per_append_mean"] <= 2,
                f"{a['live_appends']} appends 50–200 ms apart in {a['live_passes']} passes",
            ),
            _row(
                "3. chunks per append, spaced (mean / max)",
                f"{mean} / {top}",
                "≤ 2 (mean)",
                mean <= 2,
                f"{a['spaced_appends']} appends, each its own pass; the largest message is "
                f"{a['message_tokens_max']} tokens (mean {a['message_tokens_mean']}), more than two chunks"
                " can hold, so no single append of it can stay within 2",
            ),
        ]
    if d := r.get("drop"):
        rows.append(_row("4. drop→searchable p50 (s)", d["p50_s"], note=f"{d['documents']} documents"))
        rows.append(_row("4. drop→searchable p95 (s)", d["p95_s"], "≤ 1 s", d["p95_s"] <= 1.0))
    if s := r.get("soak"):
        rows += [
            _row(
                "5. soak RSS growth 500→end (%)",
                s["growth_500_to_end_pct"],
                "≤ 5 %",
                s["growth_500_to_end_pct"] <= 5,
                f"{s['rss_at_500_mb']} → {s['rss_end_mb']} MB over {s['files']} files",
            ),
            _row("5. soak slope (MB / 1000 files)", s["slope_mb_per_1000_files"]),
            _row("5. soak steady RSS (MB)", s["rss_end_mb"], "≤ 300 MB", s["rss_end_mb"] <= 300),
        ]
        if (store_end := s.get("store_process_end_mb")) is not None:
            points = sum(n or 0 for n in s["points"].values())
            rows.append(
                _row(
                    "5. embedded Qdrant's own process (MB)",
                    f"{s['store_process_at_500_mb']} → {store_end}",
                    note=f"{points} points; a child of the daemon, not in its RSS",
                )
            )
    if big := r.get("large"):
        rows.append(
            _row(
                "6. large file peak − baseline (MB)",
                big["peak_minus_baseline_mb"],
                "≤ 64 MB",
                big["peak_minus_baseline_mb"] <= 64,
                f"{big['file_bytes'] / 1e6:.0f} MB file, first {big['window_s']:.0f} s, "
                f"{100 * big['fraction_committed']:.1f} % committed",
            )
        )
        if (store_growth := big.get("store_process_growth_mb")) is not None:
            rows.append(
                _row(
                    "6. embedded Qdrant's own process: growth in the window (MB)",
                    store_growth,
                    note=f"{big['chunks_embedded_in_window']} chunks embedded; not in the daemon's RSS",
                )
            )
    if (mm := (big or {}).get("mmap_threshold")) and big:
        rows.append(
            _row(
                "6. same, MALLOC_MMAP_THRESHOLD_=131072 (MB)",
                mm["peak_minus_baseline_mb"],
                "≤ 64 MB",
                mm["peak_minus_baseline_mb"] <= 64,
                f"baseline {mm['baseline_rss_mb']} MB vs {big['baseline_rss_mb']} MB default",
            )
        )
    if i := r.get("idle"):
        rows += [
            _row(
                "7. RSS after idle unload (MB)",
                i["rss_after_unload_mb"],
                "≤ 100 MB",
                i["unloaded"] and i["rss_after_unload_mb"] <= 100,
                f"EMBED_IDLE_UNLOAD_SECONDS={i['idle_unload_seconds']}"
                + (", dormant (IDLE_DORMANT=true)" if i.get("dormant") else ""),
            ),
            *(
                [
                    _row(
                        "7. same, IDLE_DORMANT=false: model unloaded, libraries kept (MB)",
                        awake["rss_after_unload_mb"],
                        note=f"USS {awake['uss_after_unload_mb']} MB",
                    )
                ]
                if (awake := i.get("awake_after_unload"))
                else []
            ),
            *(
                [_row("7. note dropped while dormant → searchable (s)", woke, note="wake, start, embed")]
                if (woke := i.get("drop_while_dormant_to_searchable_s")) is not None
                else []
            ),
            _row("7. cold start → first searchable (s)", i["first_searchable_s"]),
            *(
                [
                    _row(
                        "7. floor: `import qdrant_client` alone (MB)",
                        floor["qdrant_client"],
                        note="fresh interpreter",
                    )
                ]
                if (floor := i.get("import_floor_mb"))
                else []
            ),
        ]
    if sw := r.get("sweep"):
        best = max((x for x in sw if _variant(x) == "arena off"), key=lambda x: x["tokens_per_s"])
        rows.append(
            _row(
                "9. fastest raw setting (arena off)",
                f"chunk {best['chunk_tokens']}, batch {best['batch_size']}",
                note=f"{best['tokens_per_s']} tok/s",
            )
        )
    if led := r.get("ledger"):
        ledger, old = led["ledger"], led["json_state"]
        files = f"{ledger['files']:,} tracked files"
        rows += [
            _row(
                "11. ledger: one file's commit, median (ms)",
                ledger["acknowledged"]["median_ms"],
                "≤ 1 ms",
                ledger["acknowledged"]["median_ms"] <= 1 and ledger["done"]["median_ms"] <= 1,
                f"{files}; acknowledged p95 {ledger['acknowledged']['p95_ms']} ms, done median "
                f"{ledger['done']['median_ms']} ms; the JSON state rewrote all of them per flush: "
                f"{old['save']['median_ms']} ms in this run",
            ),
            _row(
                "11. ledger: RSS growth (MB)",
                ledger["rss_growth_mb"],
                "≤ 20 MB",
                ledger["rss_growth_mb"] <= 20,
                f"{files}, {ledger['db_mb']} MB on disk; the JSON state held {old['rss_growth_mb']} MB "
                f"in this run",
            ),
        ]
    return rows


def table(rows: list[Row]) -> str:
    header = ("measure", "value", "target", "ok", "note")
    cells = [[str(row[h]) if row[h] is not None else "" for h in header] for row in rows]
    for cell in cells:
        cell[3] = {"True": "yes", "False": "NO", "": ""}[cell[3]]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)] if cells else []
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    out = ["| measure | value | target | met | note |", "|---|---|---|---|---|"]
    for row in rows:
        ok = {True: "yes", False: "**no**", None: ""}[row["ok"]]
        out.append(f"| {row['measure']} | {row['value']} | {row['target']} | {ok} | {row['note']} |")
    return "\n".join(out)


# --- plots --------------------------------------------------------------------------------
def plots(r: dict[str, Any], out: Path) -> list[str]:
    made = []
    if s := r.get("soak"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([x[0] for x in s["samples"]], [x[1] for x in s["samples"]], marker=".", label="RSS")
        if "store_process_end_mb" in s:  # the store's RSS is each sample's fifth field
            ax.plot(
                [x[0] for x in s["samples"]],
                [x[4] for x in s["samples"]],
                marker=".",
                label="embedded Qdrant's own process",
            )
            ax.legend()
        ax.set(xlabel="files ingested", ylabel="RSS (MB)", title="Soak: daemon RSS every 100 small files")
        ax.grid(alpha=0.3)
        made.append(_save(fig, out / "soak.png"))
    if big := r.get("large"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([x[0] for x in big["rss_trace"]], [x[1] for x in big["rss_trace"]])
        ax.axhline(big["baseline_rss_mb"], color="grey", ls="--", label="baseline (model loaded)")
        ax.axhline(big["baseline_rss_mb"] + 64, color="red", ls=":", label="baseline + 64 MB")
        ax.set(xlabel="seconds since the file appeared", ylabel="RSS (MB)", title="Large transcript: RSS")
        ax.legend()
        ax.grid(alpha=0.3)
        made.append(_save(fig, out / "large.png"))
    if sw := r.get("sweep"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        labels = sorted({(x["chunk_tokens"], x["batch_size"]) for x in sw})
        xs = range(len(labels))
        variants = list(dict.fromkeys(_variant(x) for x in sw))
        width = 0.8 / len(variants)
        for n, name in enumerate(variants):
            by = {(x["chunk_tokens"], x["batch_size"]): x for x in sw if _variant(x) == name}
            shift = [i - 0.4 + width * (n + 0.5) for i in xs]
            axes[0].bar(shift, [by[k]["tokens_per_s"] if k in by else 0 for k in labels], width, label=name)
            axes[1].bar(shift, [by[k]["peak_rss_mb"] if k in by else 0 for k in labels], width, label=name)
        for ax, title in ((axes[0], "raw FastEmbed tokens/s"), (axes[1], "peak RSS (MB)")):
            ax.set_xticks(list(xs), [f"{c}/{b}" for c, b in labels], rotation=45)
            ax.set(title=title, xlabel="chunk tokens / batch size")
            ax.legend()
            ax.grid(alpha=0.3, axis="y")
        made.append(_save(fig, out / "sweep.png"))
    if d := r.get("drop"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(range(1, len(d["latencies_s"]) + 1), d["latencies_s"], marker="o", ls="")
        ax.axhline(1.0, color="red", ls=":", label="1 s target (p95)")
        ax.set(xlabel="document", ylabel="seconds", title="Drop → searchable latency")
        ax.legend()
        ax.grid(alpha=0.3)
        made.append(_save(fig, out / "drop.png"))
    if c := r.get("corpus"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([x[0] for x in c["rss_trace"]], [x[1] for x in c["rss_trace"]])
        ax.set(xlabel="seconds", ylabel="RSS (MB)", title="`ingestd import` of the corpus: RSS")
        ax.grid(alpha=0.3)
        made.append(_save(fig, out / "corpus.png"))
    return made


def _variant(row: dict[str, Any]) -> str:
    return str(row.get("variant") or ("arena on" if row["arena"] else "arena off"))


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


# --- docs ---------------------------------------------------------------------------------
def write_docs(r: dict[str, Any], rows: list[Row], bench: Path, docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    images = []
    for name in PLOTS:
        if (bench / name).exists():
            shutil.copyfile(bench / name, docs / f"performance-{name}")
            images.append(f"performance-{name}")
    shutil.copyfile(bench / "results.json", docs / "performance-results.json")  # kept with the docs
    m, run = r["machine"], r["run"]
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`bench/run.py`); the figures below are from its last "
        f"{run['mode']} run ({run.get('started', '?')}, {run.get('total_s', 0) / 60:.1f} min). "
        "Raw data: `bench/results.json`, committed as `docs/performance-results.json`.",
        "",
        f"Machine: {m['cpus_available']} CPUs available to the process (cgroup), "
        f"{m['cpu_count']} online, {m['cpu_model']}; Python {m['python']}. "
        "Other work shared the machine; the 1-minute load average is recorded per section, "
        "and targets that are ratios are measured within one run.",
        "",
        "## Summary",
        "",
        markdown_table(rows),
        "",
        "## What was run",
        "",
        _plan_text(r),
        "",
    ]
    notes = bench / "findings.md"  # hand-written analysis of a run, kept next to the generator
    if notes.exists():
        lines += notes.read_text().splitlines()
        lines.append("")
    lines += METHOD.splitlines()
    lines.append("")
    lines += _details(r)
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({name})" for name in images]
        lines.append("")
    (docs / "performance.md").write_text("\n".join(lines))


METHOD = """## Method

- **Corpus** (`bench/corpus.py`, deterministic): Claude Code JSONL shaped like real sessions,
  log-uniform sizes from 5 KB to 2 MB scaled to the total. Each session has its own domain
  (16 domains: payments, video, compilers, …) with its own generated file and function names;
  sentences come from 40 templates whose slots draw on ~600 words plus per-session identifiers,
  and each message has a focus (a noun, file, function, library and error most of its sentences
  share). Bytes are realistic too: thinking blocks with signatures, tool results with file
  contents (capped at TOOL_RESULT_MAX_CHARS when rendered), the `toolUseResult` copy, 1 % base64
  screenshots; so only part of the bytes is embedded text.
- **1. Efficiency**: in one process, the pipeline (Engine, FILE_CONCURRENCY files at a time,
  the daemon's default batching) ingests a small corpus with the real provider wrapped to record
  every text the model embeds;
  then FastEmbed's own `TextEmbedding.embed` embeds exactly those batches, one call each, in
  two ways: the usual one (its own session on all the CPUs, one call at a time) and the
  daemon's (the provider's loaded session, as many calls at once as the daemon makes). Each
  round's ratio is taken against the faster of the two, so it is the cost of everything but
  the model, not the gain of the daemon's way of calling it; both ratios are reported too. For
  reference the same texts are also embedded in plain batches of 32 (`embed(texts,
  batch_size=32)`, the usual session), which pads every text to the longest of 32. Rounds
  alternate; the median ratio is reported. Tokens include [CLS]/[SEP].
- **2. Corpus**: `ingestd import` in a subprocess, timed from spawn to exit (model load and
  Qdrant start included); peak RSS sampled every 0.25 s with psutil.
- **3. Appends**: `ingestd run`; after the transcript is ingested, one assistant message is
  appended at a time, 50–200 ms apart (several appends share a debounced pass), then more
  appends spaced beyond the debounce so each is its own pass. Chunks embedded are read from
  `/metrics` (`ingestd_chunks_embedded`).
- **4. Drop→searchable**: each Markdown note is written elsewhere and renamed into the watched
  folder; the clock stops when `/api/search` with a sentence of the note returns it.
- **5. Soak**: `ingestd run`; 100 small notes at a time are dropped, and after the daemon has
  finished them its RSS is sampled (median of 5 samples over 0.5 s) with the points stored.
  Embedded Qdrant runs in a child process of the daemon (`src/ingestd/embedded_qdrant.py`),
  which holds every point, as a Qdrant server would in its own container: its RSS is sampled
  too and reported on its own row, not in the daemon's.
- **6. Large file**: the daemon loads the model (one search), idles 3 s (baseline = RSS then),
  then a 500 MB transcript is hard-linked into the watched folder and RSS is sampled every
  0.1 s for a fixed window; embedding all of it on 2 CPUs would take hours, so the window covers
  the read/parse/chunk/embed/store loop in steady state, not the whole file. Run twice: glibc
  defaults, and with `MALLOC_MMAP_THRESHOLD_=131072`. The growth of embedded Qdrant's own
  process over the window is reported on its own row.
- **7. Idle**: the daemon starts with one note present; cold start is spawn → the note is
  returned by a search. With EMBED_IDLE_UNLOAD_SECONDS=5 we wait for `ingestd_model_loaded` 0
  and, by default, for /health to report the dormant image (see README, "Idle"); then a second
  note is dropped and timed until a search returns it. The same run with IDLE_DORMANT=false
  gives the RSS of an unloaded model in the full daemon. The import floor is the RSS of a fresh
  interpreter after one `import` each.
- **8. Quality**: sentences (≥ 8 words; a sentence ends at . ? ! or a line break) of 200
  random user/assistant messages of the corpus (not `isMeta` lines, which ingestd skips); a
  query counts as found when a top-5 hit is a chunk of the same file containing the sentence
  verbatim. The same queries run hybrid (the default) and with SEARCH_MODE=dense.
- **9. Sweep**: one process per setting (`bench/rawembed.py`); peak RSS is `ru_maxrss`. The
  A/B table alternates arena off/on processes to cancel drifting load.
- **10. Cache**: after the corpus import, distinct vectors in the embedding cache vs chunks
  stored.
"""


def _plan_text(r: dict[str, Any]) -> str:
    run = r["run"]
    plan = run["plan"]
    parts = [f"- `{k}` = {v}" for k, v in plan.items()]
    durations = ", ".join(f"{k} {v:.0f} s" for k, v in run.get("durations_s", {}).items())
    loads = ", ".join(
        f"{k} {v.get('before', ['?'])[0]}→{v.get('after', ['?'])[0]}"
        for k, v in run.get("load_average", {}).items()
    )
    note = [run["note"], ""] if run.get("note") else []
    return "\n".join(
        [*parts, "", *note, f"Durations: {durations}.", "", f"Load average (1 min) before→after: {loads}."]
    )


def _details(r: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if ab := r.get("arena_ab"):
        out += [
            "## Memory arena A/B (chunk 128, batch 32, alternating processes)",
            "",
            "| round | arena | tokens/s | peak RSS | RSS after fixed batches | load |",
            "|---|---|---|---|---|---|",
        ]
        for x in ab:
            out.append(
                f"| {x['round']} | {'on' if x['arena'] else 'off'} | {x['tokens_per_s']} | "
                f"{x['peak_rss_mb']} | {x['rss_after_fixed_mb']} | {x['load'][0]} |"
            )
        out.append("")
    if sw := r.get("sweep"):
        out += [
            "## Raw FastEmbed: chunk size × batch size × memory arena",
            "",
            "Each setting in its own process; chunks are windows of exactly the chunk size cut from "
            "generated transcript prose. `growth` is RSS after 8 further batches of random shapes "
            "minus RSS after the warm-up batch (what the arena keeps).",
            "",
            "| chunk | batch | variant | tokens/s | RSS loaded | peak RSS | growth after random shapes |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in sw:
            growth = x["rss_after_varied_mb"] - x["rss_warm_mb"]
            out.append(
                f"| {x['chunk_tokens']} | {x['batch_size']} | {_variant(x)} | "
                f"{x['tokens_per_s']} | {x['rss_loaded_mb']} | {x['peak_rss_mb']} | {growth:+.1f} MB |"
            )
        out.append("")
    for key, title in (
        ("efficiency", "Pipeline efficiency"),
        ("corpus", "Corpus import"),
        ("quality", "Retrieval quality"),
        ("append", "Appends"),
        ("drop", "Drop to searchable"),
        ("soak", "Soak"),
        ("large", "Large file"),
        ("idle", "Cold start and idle unload"),
    ):
        if section := r.get(key):
            brief = {
                k: ({a: b for a, b in v.items() if a != "rss_trace"} if isinstance(v, dict) else v)
                for k, v in section.items()
                if k not in ("rss_trace", "samples", "latencies_s")
            }
            out += [f"## {title}", "", "```", *(f"{k}: {v}" for k, v in brief.items()), "```", ""]
    return out
