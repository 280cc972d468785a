"""`make bench`: ingestd's performance suite (issue 5).

Writes bench/results.json (after every section, so a partial run keeps what it measured), PNG
plots under bench/, a summary table on stdout, and docs/performance.md with the plots copied to
docs/. `--quick` scales every measurement down (a few minutes); `--only a,b` runs some sections.
Run from the repository root with the venv's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import sections  # noqa: E402
from corpus import write_corpus  # noqa: E402
from procs import load_average  # noqa: E402

SECTIONS = (
    "sweep", "arena_ab", "efficiency", "corpus", "quality", "live", "soak", "large", "idle", "ledger",
)  # fmt: skip
FULL: dict[str, Any] = {
    "sweep_tokens": 4096,
    "efficiency_rounds": 5,
    "efficiency_bytes": 600_000,
    "corpus_files": 200,
    "corpus_mb": 40.0,
    "quality_queries": 200,
    "append_transcript_bytes": 5_000_000,
    "live_appends": 100,
    "spaced_appends": 20,
    "drops": 50,
    "soak_files": 5000,
    "large_bytes": 500_000_000,
    "large_window_s": 75.0,
    "ledger_files": 100_000,
}
QUICK: dict[str, Any] = {
    "sweep_tokens": 1024,
    "efficiency_rounds": 1,
    "efficiency_bytes": 120_000,
    "corpus_files": 40,
    "corpus_mb": 2.0,
    "quality_queries": 50,
    "append_transcript_bytes": 500_000,
    "live_appends": 30,
    "spaced_appends": 5,
    "drops": 10,
    "soak_files": 600,
    "large_bytes": 50_000_000,
    "large_window_s": 20.0,
    "ledger_files": 10_000,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="scale everything down (minutes, not half an hour)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--corpus-mb", type=float, help="corpus size (the issue's figure is 40)")
    parser.add_argument("--work", type=Path, default=BENCH / "work", help="scratch folder (git-ignored)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument(
        "--report-only", action="store_true", help="redo table, plots and docs from results.json"
    )
    args = parser.parse_args()
    plan = dict(QUICK if args.quick else FULL)
    if args.corpus_mb:
        plan["corpus_mb"] = args.corpus_mb
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    if args.report_only:
        chosen = []
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    from ingestd.logs import configure_logging
    from ingestd.system import available_cpus

    configure_logging("WARNING", "json")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results_path = BENCH / "results.json"
    results: dict[str, Any] = {}
    if (args.only or args.report_only) and results_path.exists():
        results = json.loads(results_path.read_text())  # update a previous run section by section
    results["machine"] = {
        "cpus_available": available_cpus(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    run_info = results.setdefault("run", {})
    if not args.report_only:
        run_info.update(mode="quick" if args.quick else "full", plan=plan)
        run_info.setdefault("started", time.strftime("%F %T"))
    durations: dict[str, float] = run_info.setdefault("durations_s", {})
    loads: dict[str, Any] = run_info.setdefault("load_average", {})

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=1, default=str))

    corpus_dir = work / "corpus" / "files"
    for name in chosen:
        print(f"== {name} (load {load_average()})", flush=True)
        started = time.monotonic()
        loads[name] = {"before": load_average()}
        if name == "sweep":
            results["sweep"] = sections.sweep(plan["sweep_tokens"], available_cpus())
        elif name == "arena_ab":
            results["arena_ab"] = sections.arena_ab(plan["sweep_tokens"], available_cpus())
        elif name == "efficiency":
            eff_corpus = work / "efficiency" / "files"
            shutil.rmtree(eff_corpus.parent, ignore_errors=True)
            files = write_corpus(eff_corpus, 6, plan["efficiency_bytes"], seed=3)
            from inproc import pipeline_efficiency

            results["efficiency"] = asyncio.run(
                pipeline_efficiency(
                    work / "efficiency" / "runs", eff_corpus, files, plan["efficiency_rounds"]
                )
            )
        elif name == "corpus":
            shutil.rmtree(corpus_dir, ignore_errors=True)
            generated = time.monotonic()
            write_corpus(corpus_dir, plan["corpus_files"], int(plan["corpus_mb"] * 1e6))
            generate_s = round(time.monotonic() - generated, 1)
            results["corpus"] = sections.corpus_import(work / "corpus" / "run", corpus_dir)
            results["corpus"]["generate_s"] = generate_s
        elif name == "quality":
            from inproc import bench_settings, recall_at_k

            settings = bench_settings(work / "corpus" / "run", corpus_dir)
            files = sorted(corpus_dir.rglob("*.jsonl"))
            results["quality"] = asyncio.run(recall_at_k(settings, files, plan["quality_queries"]))
        elif name == "live":
            live = sections.appends_and_drops(
                work / "live",
                plan["append_transcript_bytes"],
                plan["live_appends"],
                plan["spaced_appends"],
                plan["drops"],
            )
            results.update(append=live["append"], drop=live["drop"], live_cache_metrics=live["cache_metrics"])
        elif name == "soak":
            results["soak"] = sections.soak(work / "soak", plan["soak_files"])
        elif name == "large":
            results["large"] = sections.large_file(
                work / "large", plan["large_bytes"], plan["large_window_s"]
            )
        elif name == "idle":
            results["idle"] = sections.cold_start_and_idle(work / "idle")
        elif name == "ledger":
            from ledger import ledger_against_json

            results["ledger"] = ledger_against_json(plan["ledger_files"], samples=2000)
        durations[name] = round(time.monotonic() - started, 1)
        loads[name]["after"] = load_average()
        print(f"   {name}: {durations[name]} s", flush=True)
        save()
    if chosen:
        run_info["total_s"] = round(sum(durations.values()), 1)
        run_info["finished"] = time.strftime("%F %T")
    rows = report.summary_rows(results)
    results["summary"] = rows
    save()
    report.plots(results, BENCH)
    print(report.table(rows))
    if not args.no_docs:
        report.write_docs(results, rows, BENCH, BENCH.parent / "docs")
        print(f"wrote {results_path.relative_to(BENCH.parent)} and docs/performance.md")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
