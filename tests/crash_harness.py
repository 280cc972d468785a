"""SIGKILL equivalence: a run killed at random moments stores exactly what a clean run stores.

1. Generate a corpus: transcripts of several sizes, Markdown documents, and "live" transcripts
   whose full final content is fixed in advance.
2. Reference: `ingestd import` over the final corpus into its own state directory.
3. Crash run: the live transcripts are cut back to a prefix, `ingestd run` starts on a second
   state directory, an appender thread writes the rest (sometimes half a line at a time), and
   the daemon is SIGKILLed at random moments and restarted, again and again; then it is left to
   finish and stopped with SIGTERM.
4. Compare the two collections: point IDs and payload text, missing, stale and duplicate points,
   and count the chunks the model embedded beyond the reference (the cost of the kills).
5. SIGTERM (a `docker stop`) while `ingestd import` embeds the final corpus into a third state
   directory, then the same import again: the chunks the model embeds across both runs beyond
   the reference's are `sigterm_reembedded`, 0 when the stop's grace lands all the work in flight.

Usable from pytest (tests/test_crash.py) and as `python tests/crash_harness.py --kills 50`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generators import ClaudeSession, dump, markdown_document

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = REPO / "state" / "models"


@dataclass
class Report:
    kills: int = 0
    restarts: int = 0
    appended_lines: int = 0
    reference_points: int = 0
    crash_points: int = 0
    missing: int = 0
    stale: int = 0
    duplicates: int = 0
    text_mismatches: int = 0
    reference_embedded: int = 0
    crash_embedded: int = 0
    extra_embedded: int = 0
    extra_per_kill: float = 0.0
    embedded_per_run: list[int] = field(default_factory=list)
    unreadable_states: int = 0
    sigterm_exit: int | None = None
    sigterm_embedded_before_stop: int = 0
    sigterm_reembedded: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def build_corpus(root: Path, seed: int) -> dict[Path, tuple[bytes, bytes]]:
    """Write the static corpus; return live transcripts as path -> (prefix, rest)."""
    rng = random.Random(seed)
    conversations, documents = root / "conversations", root / "documents"
    for size, exchanges in enumerate((2, 10, 30, 60)):
        session = ClaudeSession(seed * 100 + size, f"static-{size}")
        path = conversations / "-home-dev-proj" / f"static-{size}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dump(session.lines(exchanges)))
    documents.mkdir(parents=True, exist_ok=True)
    for index in range(8):
        (documents / f"doc-{index}.md").write_text(markdown_document(seed * 10 + index, rng.randint(2, 12)))
    live: dict[Path, tuple[bytes, bytes]] = {}
    for index in range(2):
        session = ClaudeSession(seed * 1000 + index, f"live-{index}")
        body = dump(session.lines(30))
        cut = body.index(b"\n", len(body) // 4) + 1
        path = conversations / "-home-dev-live" / f"live-{index}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        live[path] = (body[:cut], body[cut:])
    return live


def env_for(root: Path, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT", "EMBED", "VOYAGE", "CHUNK"))}
    env.update(
        CONVERSATIONS_DIRS=str(root / "conversations"),
        DOCUMENTS_DIRS=str(root / "documents"),
        STATE_DIR=str(state),
        FASTEMBED_CACHE_PATH=str(MODEL_CACHE),
        HEALTH_PORT="0",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        PROGRESS_LOG_SECONDS="0",
        WATCH_DEBOUNCE_MS="100",
        RECONCILE_SECONDS="2",
        # No embedding cache: a chunk re-embedded because of a kill must show as model work,
        # not be served from the cache and hidden.
        EMBED_CACHE_MAX_ENTRIES="0",
        **extra,
    )
    return env


def fresh_embedded(log_text: str) -> int:
    total = 0
    for line in log_text.splitlines():
        if '"batch.embedded"' in line:
            total += int(json.loads(line)["fresh"])
    return total


def collection_points(state: Path) -> dict[str, dict[str, Any]]:
    from ingestd.embedded_qdrant import open_when_free

    client = open_when_free(str(state / "qdrant"))  # the killed daemon's child may still be exiting
    try:
        points: dict[str, dict[str, Any]] = {}
        for collection in client.get_collections().collections:
            offset = None
            while True:
                records, offset = client.scroll(
                    collection.name,
                    limit=1000,
                    offset=offset,
                    with_payload=["path", "ordinal", "generation", "text"],
                )
                for record in records:
                    points[str(record.id)] = record.payload or {}
                if offset is None:
                    break
        return points
    finally:
        client.close()


def state_is_readable(state: Path) -> bool:
    sys.path.insert(0, str(REPO / "src"))
    from ledger_view import ledger_readable

    return ledger_readable(state)


def run_done(state: Path, root: Path) -> bool:
    """Every corpus file recorded done with all its bytes consumed."""
    sys.path.insert(0, str(REPO / "src"))
    import sqlite3

    from ledger_view import ledger_records

    try:
        files = ledger_records(state)
    except sqlite3.Error:
        return False
    for path in list((root / "conversations").rglob("*.jsonl")) + list((root / "documents").rglob("*.md")):
        record = files.get(str(path))
        if record is None or record.status != "done" or record.offset != path.stat().st_size:
            return False
    return True


class Appender(threading.Thread):
    """Writes the rest of each live transcript in small steps, sometimes half a line at a time."""

    def __init__(self, live: dict[Path, tuple[bytes, bytes]], seed: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.live, self.rng, self.pause = live, random.Random(seed), pause
        self.lines = 0

    def run(self) -> None:
        pending = {path: rest for path, (_, rest) in self.live.items()}
        while pending:
            path = self.rng.choice(sorted(pending))
            rest = pending[path]
            end = rest.index(b"\n") + 1
            if self.rng.random() < 0.3 and end > 8:
                end = end // 2  # half a line now, the rest on a later step
            with path.open("ab") as handle:
                handle.write(rest[:end])
            self.lines += rest[:end].count(b"\n")
            pending[path] = rest[end:]
            if not pending[path]:
                del pending[path]
            time.sleep(self.rng.uniform(self.pause / 2, self.pause * 1.5))


class LogReader(threading.Thread):
    """Collects a daemon's log lines and signals when it reports ready."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.lines: list[str] = []
        self.proc, self.ready, self.working = proc, threading.Event(), threading.Event()
        self.start()

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if '"daemon.ready"' in line:
                self.ready.set()
            elif '"batch.embedded"' in line:
                self.working.set()
        self.ready.set()


def sigterm_then_import_again(workdir: Path, root: Path, reference_state: Path, report: Report) -> None:
    """The import is stopped after its first stored batch, with batches still being embedded and
    stored; the import that resumes it must embed only what the first left unstored. Counted
    like the kills' cost: the model's fresh embeddings (the cache is off) against the reference."""
    state = workdir / "sigterm"
    env = env_for(root, state)
    python = [sys.executable, "-m", "ingestd"]
    with (workdir / "sigterm-import.err").open("w") as errors:
        proc = subprocess.Popen(
            [*python, "import"], env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        reader = LogReader(proc)
        try:
            if not reader.working.wait(timeout=120):
                report.notes.append("sigterm: the import embedded nothing in 120 s")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=30)
    report.sigterm_exit = proc.returncode
    if proc.returncode != 128 + signal.SIGTERM:
        report.notes.append(f"sigterm: the import exited {proc.returncode}, not 143")
    report.sigterm_embedded_before_stop = fresh_embedded("".join(reader.lines))
    again = subprocess.run([*python, "import"], env=env, capture_output=True, text=True, timeout=600)
    if again.returncode != 0:
        report.notes.append(f"sigterm: the import run again exited {again.returncode}: {again.stderr[-500:]}")
    embedded = report.sigterm_embedded_before_stop + fresh_embedded(again.stdout)
    report.sigterm_reembedded = embedded - report.reference_embedded
    reference, resumed = collection_points(reference_state), collection_points(state)
    if set(resumed) != set(reference) or any(resumed[p]["text"] != reference[p]["text"] for p in reference):
        report.notes.append("sigterm: the resumed import stored other points than the reference")


def run(workdir: Path, kills: int, seed: int = 7, max_seconds: float = 900.0) -> Report:
    started = time.monotonic()
    report = Report()
    rng = random.Random(seed)
    root = workdir / "watch"
    live = build_corpus(root, seed)
    python = [sys.executable, "-m", "ingestd"]

    reference_state = workdir / "reference"
    ref = subprocess.run(
        [*python, "import"], env=env_for(root, reference_state), capture_output=True, text=True, timeout=600
    )
    if ref.returncode != 0:
        raise RuntimeError(f"reference import failed: {ref.stderr[-2000:]}")
    report.reference_embedded = fresh_embedded(ref.stdout)
    sigterm_then_import_again(workdir, root, reference_state, report)  # the corpus is final now

    for path, (prefix, _) in live.items():
        path.write_bytes(prefix)
    crash_state = workdir / "crash"
    env = env_for(root, crash_state)
    steps = sum(rest.count(b"\n") for _, rest in live.values()) * 1.3
    appender = Appender(live, seed, pause=kills * 6.0 / steps)
    logs: list[str] = []
    appender.start()
    while report.kills < kills or appender.is_alive():
        if time.monotonic() - started > max_seconds:
            report.notes.append("stopped early: time budget")
            break
        proc = subprocess.Popen(
            [*python, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        report.restarts += 1
        reader = LogReader(proc)
        # Kill while working, not while Python starts: after the run's first stored batch
        # (or a while after ready, once only appends are left), at a random moment.
        reader.ready.wait(timeout=60)
        reader.working.wait(timeout=rng.uniform(2.0, 8.0))
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=30)
        logs.append("".join(reader.lines))
        report.kills += 1
        if (crash_state / "ledger.db").exists() and not state_is_readable(crash_state):
            report.unreadable_states += 1
    appender.join()
    report.appended_lines = appender.lines

    proc = subprocess.Popen(
        [*python, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    report.restarts += 1
    reader = LogReader(proc)
    try:
        reader.ready.wait(timeout=60)
        deadline = time.monotonic() + 600
        while not run_done(crash_state, root):
            if time.monotonic() > deadline:
                raise RuntimeError("the final run did not finish")
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        reader.join(timeout=15)
        logs.append("".join(reader.lines))
        if proc.returncode != 0:
            report.notes.append(f"final run exited {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()

    reference = collection_points(reference_state)
    crash = collection_points(crash_state)
    report.reference_points, report.crash_points = len(reference), len(crash)
    report.missing = len(set(reference) - set(crash))
    report.stale = len(set(crash) - set(reference))
    report.text_mismatches = sum(
        1 for pid in set(reference) & set(crash) if reference[pid]["text"] != crash[pid]["text"]
    )
    slots = Counter((p["path"], p["ordinal"]) for p in crash.values())
    report.duplicates = sum(count - 1 for count in slots.values() if count > 1)
    report.embedded_per_run = [fresh_embedded(text) for text in logs]
    report.crash_embedded = sum(report.embedded_per_run)
    report.extra_embedded = report.crash_embedded - report.reference_embedded
    report.extra_per_kill = round(report.extra_embedded / max(1, report.kills), 2)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(Path(tmp), args.kills, args.seed, max_seconds=3600)
    print(json.dumps(asdict(report), indent=2))
    ok = (
        report.missing
        == report.stale
        == report.duplicates
        == report.text_mismatches
        == report.unreadable_states
        == report.sigterm_reembedded
        == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
