"""Deterministic, realistic Claude Code transcripts and small documents for the benchmarks.

Self-contained (it does not import tests/generators.py) but follows the same line shapes. The
text is built so that retrieval means something: every session has its own domain (payments,
video encoding, a compiler, …) with its own nouns, its own generated file and function names,
and sentences come from ~40 templates whose slots draw on a vocabulary of ~1,500 words and
identifiers. The bytes look like real transcripts too: thinking blocks with long signatures,
tool results with file contents (capped at TOOL_RESULT_MAX_CHARS when rendered), the
`toolUseResult` copy Claude Code writes next to them, and an occasional base64 screenshot, so
only about a third of a file's bytes are embedded text.
"""

from __future__ import annotations

import base64
import json
import math
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DOMAINS: dict[str, list[str]] = {
    "payments": [
        "invoice",
        "refund",
        "ledger",
        "chargeback",
        "settlement",
        "payout",
        "currency",
        "merchant",
        "card",
        "authorization",
        "capture",
        "webhook",
        "subscription",
        "billing",
        "tax",
        "receipt",
        "dispute",
        "wallet",
    ],
    "video": [
        "encoder",
        "decoder",
        "keyframe",
        "bitrate",
        "codec",
        "container",
        "muxer",
        "transcoder",
        "thumbnail",
        "subtitle",
        "framerate",
        "resolution",
        "playlist",
        "segment",
        "manifest",
        "audio",
        "track",
    ],
    "compiler": [
        "lexer",
        "parser",
        "grammar",
        "token",
        "syntax",
        "tree",
        "bytecode",
        "optimizer",
        "register",
        "allocator",
        "inliner",
        "linker",
        "symbol",
        "scope",
        "closure",
        "typechecker",
        "diagnostics",
    ],
    "search": [
        "index",
        "shard",
        "replica",
        "query",
        "analyzer",
        "tokenizer",
        "stemmer",
        "ranking",
        "relevance",
        "synonym",
        "facet",
        "highlight",
        "posting",
        "segment",
        "merge",
        "scorer",
    ],
    "kubernetes": [
        "pod",
        "deployment",
        "ingress",
        "service",
        "namespace",
        "node",
        "kubelet",
        "helm",
        "chart",
        "secret",
        "configmap",
        "autoscaler",
        "probe",
        "daemonset",
        "volume",
        "claim",
    ],
    "mobile": [
        "screen",
        "navigation",
        "gesture",
        "layout",
        "viewmodel",
        "fragment",
        "activity",
        "notification",
        "permission",
        "camera",
        "keyboard",
        "accessibility",
        "animation",
        "widget",
    ],
    "database": [
        "migration",
        "schema",
        "transaction",
        "deadlock",
        "vacuum",
        "replica",
        "index",
        "constraint",
        "foreign",
        "key",
        "partition",
        "cursor",
        "isolation",
        "snapshot",
        "sequence",
        "trigger",
    ],
    "ml": [
        "gradient",
        "optimizer",
        "epoch",
        "checkpoint",
        "dataset",
        "tensor",
        "embedding",
        "tokenizer",
        "learning",
        "rate",
        "scheduler",
        "dropout",
        "attention",
        "layer",
        "inference",
        "quantization",
    ],
    "networking": [
        "socket",
        "handshake",
        "certificate",
        "proxy",
        "gateway",
        "latency",
        "packet",
        "retransmission",
        "firewall",
        "resolver",
        "dns",
        "route",
        "tunnel",
        "bandwidth",
        "keepalive",
    ],
    "frontend": [
        "component",
        "reducer",
        "hook",
        "stylesheet",
        "bundle",
        "router",
        "hydration",
        "render",
        "prop",
        "state",
        "selector",
        "modal",
        "tooltip",
        "form",
        "validation",
        "breakpoint",
    ],
    "games": [
        "sprite",
        "shader",
        "physics",
        "collision",
        "player",
        "level",
        "inventory",
        "quest",
        "spawn",
        "animation",
        "camera",
        "particle",
        "tilemap",
        "pathfinding",
        "score",
    ],
    "observability": [
        "metric",
        "trace",
        "span",
        "exporter",
        "dashboard",
        "alert",
        "histogram",
        "counter",
        "sampler",
        "collector",
        "log",
        "retention",
        "cardinality",
        "scrape",
        "label",
    ],
    "auth": [
        "token",
        "session",
        "password",
        "oauth",
        "scope",
        "refresh",
        "cookie",
        "login",
        "role",
        "permission",
        "tenant",
        "identity",
        "provider",
        "claim",
        "signature",
    ],
    "geo": [
        "coordinate",
        "projection",
        "tile",
        "polygon",
        "geocoder",
        "route",
        "waypoint",
        "elevation",
        "raster",
        "vector",
        "boundary",
        "distance",
        "bearing",
        "map",
        "layer",
    ],
    "audio": [
        "sample",
        "waveform",
        "mixer",
        "filter",
        "equalizer",
        "reverb",
        "latency",
        "buffer",
        "channel",
        "synthesizer",
        "envelope",
        "oscillator",
        "plugin",
        "midi",
        "metronome",
    ],
    "printing": [
        "spooler",
        "driver",
        "queue",
        "printer",
        "tray",
        "toner",
        "duplex",
        "margin",
        "font",
        "glyph",
        "raster",
        "pagination",
        "preview",
        "cartridge",
        "banner",
    ],
}
GENERAL = [
    "cache",
    "worker",
    "thread",
    "request",
    "response",
    "config",
    "module",
    "function",
    "handler",
    "scheduler",
    "queue",
    "buffer",
    "retry",
    "timeout",
    "fixture",
    "test",
    "build",
    "pipeline",
    "release",
    "branch",
    "commit",
    "review",
    "deadline",
    "estimate",
    "benchmark",
    "regression",
    "rollback",
    "feature",
    "flag",
    "endpoint",
    "client",
    "server",
    "library",
    "dependency",
    "version",
    "warning",
    "error",
    "exception",
    "stack",
    "trace",
    "memory",
    "allocation",
    "file",
    "directory",
    "path",
    "permission",
    "user",
    "customer",
    "report",
    "document",
    "spreadsheet",
    "chart",
    "team",
    "meeting",
    "incident",
    "outage",
    "postmortem",
    "budget",
]
VERBS = [
    "refactor",
    "rewrite",
    "split",
    "merge",
    "rename",
    "cache",
    "retry",
    "validate",
    "serialize",
    "parse",
    "flush",
    "reload",
    "throttle",
    "debounce",
    "batch",
    "stream",
    "compress",
    "encrypt",
    "sign",
    "verify",
    "migrate",
    "backfill",
    "deprecate",
    "instrument",
    "profile",
    "benchmark",
    "patch",
    "pin",
    "upgrade",
    "downgrade",
    "vendor",
    "mock",
    "stub",
    "isolate",
    "reproduce",
    "bisect",
    "revert",
    "document",
    "annotate",
    "normalize",
    "deduplicate",
    "paginate",
    "index",
    "shard",
    "replicate",
]
PAST = {
    verb: (verb + "d" if verb.endswith("e") else verb + ("ged" if verb.endswith("g") else "ed"))
    for verb in VERBS
}
PAST.update(split="split", rewrite="rewrote", stub="stubbed", pin="pinned", bisect="bisected")
ADJECTIVES = [
    "flaky",
    "slow",
    "stale",
    "corrupted",
    "missing",
    "duplicated",
    "oversized",
    "nested",
    "recursive",
    "concurrent",
    "blocking",
    "idle",
    "orphaned",
    "truncated",
    "malformed",
    "legacy",
    "experimental",
    "intermittent",
    "noisy",
    "expensive",
    "unbounded",
    "misconfigured",
    "cold",
    "warm",
    "hidden",
    "undocumented",
    "brittle",
    "sticky",
    "leaky",
]
LIBRARIES = [
    "pytest",
    "asyncio",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "fastapi",
    "django",
    "flask",
    "celery",
    "redis",
    "kafka",
    "postgres",
    "sqlite",
    "numpy",
    "pandas",
    "polars",
    "tokio",
    "serde",
    "axum",
    "react",
    "vue",
    "svelte",
    "webpack",
    "vite",
    "esbuild",
    "jest",
    "playwright",
    "grpc",
    "protobuf",
    "terraform",
    "ansible",
    "nginx",
    "envoy",
    "prometheus",
    "grafana",
    "opentelemetry",
    "ffmpeg",
    "gstreamer",
    "llvm",
    "clang",
    "rustc",
    "gcc",
    "cmake",
    "bazel",
    "gradle",
    "maven",
]
ERRORS = [
    "TimeoutError",
    "KeyError",
    "ValueError",
    "IndexError",
    "PermissionError",
    "ConnectionResetError",
    "IntegrityError",
    "DeadlockDetected",
    "OutOfMemoryError",
    "NullPointerException",
    "SegmentationFault",
    "AssertionError",
    "UnicodeDecodeError",
    "RecursionError",
    "BrokenPipeError",
    "SSLError",
]
PEOPLE = [
    "Alice",
    "Bruno",
    "Chen",
    "Dara",
    "Emeka",
    "Farah",
    "Goran",
    "Hana",
    "Ines",
    "Jonas",
    "Kiri",
    "Lena",
    "Mateo",
    "Noor",
    "Omar",
    "Priya",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "ze",
    "bar",
    "dex",
    "fin",
    "gol",
    "hap",
    "jum",
    "kor",
    "lin",
    "mor",
    "nix",
    "pel",
    "qua",
    "rix",
    "sul",
    "tor",
]

TEMPLATES = (
    "The {adj} {dn} in `{file}` comes from {fn}(), which {past} the {dn2} before the {g} was ready.",
    "Running `{cmd}` now fails with {err} after {num} seconds on the {dn} path.",
    "Let's {verb} the {dn} handling in {lib} {ver} so that the {dn2} stops being {adj}.",
    "{person} asked on {day} whether we can {verb} the {dn} without touching `{file}`.",
    "I {past} {fn}() and the {dn2} benchmark went from {num} ms to {num2} ms.",
    "The {g} in `{file}` keeps a reference to every {dn}, so memory grows by {num} MB per hour.",
    "Could you check why the {dn} {g} returns {err} only when the {dn2} is {adj}?",
    "After upgrading {lib} to {ver} the {dn} tests became {adj} on the CI runners.",
    "We should {verb} {fn}() first and only then {verb2} the {dn2} in `{file2}`.",
    "The root cause was a {adj} {dn} that {fn}() never released after a {err}.",
    "I added a regression test for the {dn} {g}; it reproduces the {err} in {num} runs out of {num2}.",
    "Ship the {dn} fix behind the `{flag}` flag until {person} has reviewed the {dn2} changes.",
    "The {dn2} dashboard shows {num} requests per second and a p99 of {num2} ms for {fn}().",
    "My plan: {verb} the {dn}, {verb2} the {dn2}, then rerun `{cmd}` to confirm.",
    "`{file}` mixes {dn} parsing with {dn2} rendering; splitting it would make {fn}() testable.",
    "The {lib} docs say the {g} must be {past} before the {dn} is opened, which we do not do.",
    "Why does {fn}() hold the lock while it waits for the {dn2}?",
    "On {host} the {dn} job took {num} minutes because the {g} was {adj}.",
    "I pinned {lib} at {ver} because {ver2} changed how the {dn} {g} is {past}.",
    "The {dn} and the {dn2} disagree about the {g} format, hence the {err} in {fn}().",
    "Profiling shows {num} percent of the time in {fn}(), mostly {verb_ing} the {dn}.",
    "There is a {adj} {g} in the {dn} module; {person} saw it on {host} too.",
    "We agreed to {verb} the {dn} nightly and keep {num} days of {dn2} history.",
    "Please keep the public {g} of `{file}` unchanged; {lib} clients depend on {fn}().",
    "The {dn2} fixture builds {num} {dn} records, which is why the suite needs {num2} seconds.",
    "When the {dn} is {adj}, {fn}() should {verb} it instead of raising {err}.",
    "I could not reproduce the {err} locally; on {host} it happens after {num} {dn} updates.",
    "Moving the {dn} {g} out of the request path cut the latency of {fn}() by half.",
    "The migration {past} {num} {dn} rows and left {num2} with a {adj} {dn2}.",
    "Add a {g} metric for the {dn} so the {adj} cases show up before customers notice.",
    "Is the {dn2} supposed to be {past} twice when {fn}() retries?",
    "Done: `{file}` now uses {lib} for the {dn}, and `{cmd}` passes.",
    "The {dn} schema changed on {day}; old {dn2} records still carry the previous {g}.",
    "{person} prefers to {verb} the {dn} in {lib} rather than in our own {g}.",
    "The stack trace points at line {num} of `{file}`, inside {fn}().",
    "With {num} workers the {dn} queue drains in {num2} seconds; with one it never catches up.",
    "A {adj} {dn2} made the {dn} {g} {verb} the same {g2} {num} times.",
    "Before we {verb} anything, let's write down what the {dn} should do when the {dn2} is missing.",
    "The {lib} upgrade also changed the default {g} of the {dn}, which broke {fn}().",
    "I replaced the {adj} {g} with a bounded {g2}, and the {dn} stopped timing out.",
)


def _ident(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts))


class TextMaker:
    """Sentences for one session: its domain's nouns and its own files and functions."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        names = sorted(DOMAINS)
        self.domain = rng.choice(names)
        self.nouns = DOMAINS[self.domain] + DOMAINS[rng.choice(names)][:6]
        self.files = [
            f"{rng.choice(['src', 'lib', 'app', 'pkg'])}/{rng.choice(self.nouns)}/{_ident(rng, 2)}"
            f".{rng.choice(['py', 'ts', 'rs', 'go'])}"
            for _ in range(30)
        ]
        self.functions = [f"{rng.choice(VERBS)}_{rng.choice(self.nouns)}_{_ident(rng, 1)}" for _ in range(40)]
        self.hosts = [f"{_ident(rng, 2)}-{rng.randint(1, 40)}.internal" for _ in range(4)]
        self.commands = [
            f"pytest tests/test_{rng.choice(self.nouns)}.py -k {_ident(rng, 2)}",
            f"make {rng.choice(VERBS)}-{rng.choice(self.nouns)}",
            f"cargo test {rng.choice(self.nouns)}::{_ident(rng, 2)}",
            f"npm run {rng.choice(VERBS)} -- --{rng.choice(self.nouns)}",
        ]
        self.new_focus()

    def new_focus(self) -> None:
        """A message is about something: most of its sentences share a noun, file and function."""
        rng = self.rng
        self.focus = {
            "dn": rng.choice(self.nouns),
            "file": rng.choice(self.files),
            "fn": rng.choice(self.functions),
            "lib": rng.choice(LIBRARIES),
            "err": rng.choice(ERRORS),
            "adj": rng.choice(ADJECTIVES),
        }

    def sentence(self) -> str:
        rng = self.rng
        verb = rng.choice(VERBS)
        slots = {
            "dn": rng.choice(self.nouns),
            "dn2": rng.choice(self.nouns),
            "g": rng.choice(GENERAL),
            "g2": rng.choice(GENERAL),
            "adj": rng.choice(ADJECTIVES),
            "verb": verb,
            "verb2": rng.choice(VERBS),
            "verb_ing": verb.rstrip("e") + "ing",
            "past": PAST[rng.choice(VERBS)],
            "lib": rng.choice(LIBRARIES),
            "ver": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
            "ver2": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}",
            "file": rng.choice(self.files),
            "file2": rng.choice(self.files),
            "fn": rng.choice(self.functions),
            "err": rng.choice(ERRORS),
            "num": str(rng.choice([rng.randint(2, 99), rng.randint(100, 9999)])),
            "num2": str(rng.randint(2, 500)),
            "cmd": rng.choice(self.commands),
            "person": rng.choice(PEOPLE),
            "day": rng.choice(WEEKDAYS),
            "host": rng.choice(self.hosts),
            "flag": f"{rng.choice(self.nouns)}_{rng.choice(VERBS)}_v{rng.randint(2, 9)}",
        }
        for key, value in self.focus.items():
            if rng.random() < 0.6:
                slots[key] = value
        text = rng.choice(TEMPLATES).format(**slots)
        return text[0].upper() + text[1:]

    def paragraph(self, low: int, high: int) -> str:
        self.new_focus()
        return " ".join(self.sentence() for _ in range(self.rng.randint(low, high)))

    def code(self, size: int) -> str:
        """Source-like text of about `size` characters (what a Read tool returns)."""
        rng, lines, total = self.rng, [], 0
        while total < size:
            fn = rng.choice(self.functions)
            block = (
                f"def {fn}({rng.choice(self.nouns)}, {rng.choice(GENERAL)}=None):\n"
                f'    """{self.sentence()}"""\n'
                f"    {rng.choice(self.nouns)} = {rng.choice(self.functions)}({rng.choice(GENERAL)})\n"
                f"    if not {rng.choice(self.nouns)}:\n"
                f"        raise {rng.choice(ERRORS)}('{rng.choice(ADJECTIVES)}')\n"
                f"    return {rng.choice(self.nouns)}\n\n"
            )
            lines.append(block)
            total += len(block)
        return "".join(lines)[:size]


class Session:
    """Claude Code JSONL lines for one session, with a uuid chain and realistic bulk."""

    def __init__(self, seed: int, session: str | None = None, project: str = "project") -> None:
        self.rng = random.Random(seed)
        self.text = TextMaker(self.rng)
        self.session = session or str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.cwd = f"/home/dev/{project}"
        self.parent: str | None = None
        self.clock = 1_750_000_000 + self.rng.randint(0, 10_000_000)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def _envelope(self, kind: str, message: dict[str, Any], **extra: Any) -> dict[str, Any]:
        self.clock += self.rng.randint(1, 40)
        uid = self._uuid()
        line = {
            "parentUuid": self.parent,
            "isSidechain": False,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session,
            "version": "2.0.14",
            "gitBranch": "main",
            "type": kind,
            "message": message,
            "uuid": uid,
            "timestamp": f"2025-10-{1 + self.clock % 27:02d}T{self.clock % 24:02d}:"
            f"{self.clock % 60:02d}:{(self.clock // 7) % 60:02d}.000Z",
            **extra,
        }
        self.parent = uid
        return line

    def user(self, text: str) -> dict[str, Any]:
        return self._envelope("user", {"role": "user", "content": text})

    def assistant(self, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        rng = self.rng
        message = {
            "id": f"msg_{rng.getrandbits(64):016x}",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": blocks,
            "stop_reason": None,
            "usage": {
                "input_tokens": rng.randint(3, 40),
                "cache_read_input_tokens": rng.randint(1000, 90000),
                "output_tokens": rng.randint(10, 900),
            },
        }
        return self._envelope("assistant", message, requestId=f"req_{rng.getrandbits(64):016x}")

    def reply(self) -> dict[str, Any]:
        """One assistant text message (what a live session appends)."""
        return self.assistant([{"type": "text", "text": self.text.paragraph(1, 4)}])

    def exchange(self) -> list[dict[str, Any]]:
        """A turn: question, thinking + text + tool call, tool result, answer."""
        rng, text = self.rng, self.text
        tool_id = f"toolu_{rng.getrandbits(96):024x}"
        tool = rng.choice(("Read", "Bash", "Edit", "Grep", "Read", "Write"))
        path = rng.choice(text.files)
        size = min(60_000, int(math.exp(rng.gauss(7.0, 1.3))))  # median ~1.1 KB, long tail
        output = text.code(size) if tool in ("Read", "Edit", "Write") else text.paragraph(1, 6)
        signature = base64.b64encode(rng.randbytes(rng.randint(200, 900))).decode()
        lines = [
            self.user(text.paragraph(1, 3)),
            self.assistant(
                [
                    {"type": "thinking", "thinking": text.paragraph(1, 3), "signature": signature},
                    {"type": "text", "text": text.paragraph(1, 2)},
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": tool,
                        "input": {"file_path": f"{self.cwd}/{path}", "description": text.sentence()},
                    },
                ]
            ),
            self._envelope(
                "user",
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": output}],
                },
                toolUseResult={"type": "text", "file": {"filePath": f"{self.cwd}/{path}", "content": output}},
            ),
            self.assistant([{"type": "text", "text": text.paragraph(1, 5)}]),
        ]
        if rng.random() < 0.01:
            data = base64.b64encode(rng.randbytes(rng.randint(20_000, 120_000))).decode()
            image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
            lines.append(self._envelope("user", {"role": "user", "content": [image]}))
        if rng.random() < 0.1:
            lines.append({"type": "file-history-snapshot", "messageId": self.parent, "snapshot": {}})
        return lines

    def lines(self) -> Iterator[dict[str, Any]]:
        yield {"type": "summary", "summary": self.text.sentence(), "leafUuid": self._uuid()}
        while True:
            yield from self.exchange()


def dumps(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def write_transcript(path: Path, seed: int, size: int, project: str = "project") -> Session:
    """A transcript of about `size` bytes (whole lines), written streaming; returns its session."""
    path.parent.mkdir(parents=True, exist_ok=True)
    session = Session(seed, path.stem, project)
    written = 0
    with path.open("wb") as handle:
        for line in session.lines():
            data = dumps(line)
            handle.write(data)
            written += len(data)
            if written >= size:
                break
    return session


def corpus_sizes(files: int, total: int, low: int, high: int, seed: int) -> list[int]:
    """Log-uniform sizes in [low, high], scaled so that they add up to about `total`."""
    rng = random.Random(seed)
    raw = [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(files)]
    scale = 1.0
    for _ in range(30):
        sizes = [int(min(high, max(low, size * scale))) for size in raw]
        scale *= total / max(1, sum(sizes))
    return sizes


def write_corpus(root: Path, files: int, total: int, seed: int = 7) -> list[Path]:
    """`files` transcripts in 12 projects, 5 KB to 2 MB each, about `total` bytes together."""
    paths = []
    for index, size in enumerate(corpus_sizes(files, total, 5_000, 2_000_000, seed)):
        project = f"-home-dev-project-{index % 12:02d}"
        name = str(uuid.UUID(int=random.Random(seed * 100_003 + index).getrandbits(128)))
        path = root / project / f"{name}.jsonl"
        write_transcript(path, seed * 1_000 + index, size, project)
        paths.append(path)
    return paths


def document(seed: int, tiny: bool = False) -> tuple[str, str]:
    """A small Markdown note (one or two chunks; `tiny`: two sentences) and a sentence to search for."""
    rng = random.Random(seed)
    text = TextMaker(rng)
    probe = text.sentence()
    body = [f"# {text.domain.title()} notes {seed}", "", text.paragraph(1, 1 if tiny else 2) + " " + probe]
    if not tiny and rng.random() < 0.5:
        body += ["", f"## {rng.choice(text.nouns).title()}", "", text.paragraph(1, 3)]
    return "\n".join(body) + "\n", probe


def message_texts(line: bytes) -> list[str]:
    """The user/assistant text of one transcript line (no tool output, no thinking, and not the
    `isMeta` lines Claude Code injects, which ingestd skips by design)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return []
    if obj.get("type") not in ("user", "assistant") or "toolUseResult" in obj or obj.get("isMeta"):
        return []
    content = obj.get("message", {}).get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return []
