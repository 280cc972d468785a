"""The `ingestd` command: run, import, status, search, retry, forget, model.

While a daemon holds the state directory, read and maintenance commands are sent to it over
its local HTTP port (embedded Qdrant admits one process); otherwise they open the state and the
store themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ingestd.errors import ConfigError, StateLocked
from ingestd.logs import configure_logging, mask, register_secret
from ingestd.paths import DAEMON_FILE, LOCK_FILE
from ingestd.settings import EmbedSettings, OpsSettings, Settings, load_settings
from ingestd.system import STOP_SIGNALS, network_namespace, reexec, tune_malloc

EXIT_CONFIG = 2
DAEMON_WAIT_SECONDS = 60.0  # how long the CLI waits for a daemon that is starting or waking
TOP_REDACTED_FILES = 10  # files listed by `ingestd status` under the redaction total


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _register_secrets(settings)
    tune_malloc()
    if args.command == "run":
        # Until the event loop installs its handler: a SIGTERM during start-up is still a clean
        # stop (nothing has been committed yet), not a death by signal. One that came during a
        # re-exec was held blocked (system.reexec) and lands now.
        for stop in STOP_SIGNALS:
            signal.signal(stop, _exit_cleanly)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    quiet = args.command in ("status", "search") and not args.verbose
    configure_logging("WARNING" if quiet else settings.ops.log_level, settings.ops.log_format)
    try:
        result: int = asyncio.run(_dispatch(args, settings))
        if getattr(args, "next_mode", None) is not None:
            reexec(dormant=args.next_mode == "dormant")
    except StateLocked as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from ingestd.errors import ModelMismatch, ModelUnavailable, StageCrashed

        if isinstance(exc, ModelMismatch | ModelUnavailable):
            print(f"ingestd: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if isinstance(exc, StageCrashed):
            print(f"ingestd: {exc}; run the command again to resume", file=sys.stderr)
            return 1
        raise
    return result


def _exit_cleanly(signum: int, _: object) -> None:
    raise SystemExit(0)


def _register_secrets(settings: Settings) -> None:
    """Let `mask` know the configured keys here too: a CLI talking to a daemon opens no engine."""
    for secret in (settings.store.qdrant_api_key, settings.embed.voyage_api_key):
        register_secret(secret.get_secret_value() if secret else None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingestd", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="show log lines for read commands")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon: watch, ingest, serve /health and /metrics")
    run.add_argument("--dormant", action="store_true", help=argparse.SUPPRESS)  # see ingestd.dormant
    imp = sub.add_parser("import", help="one-shot backfill with a progress bar; exits when done")
    imp.add_argument("paths", nargs="*", type=Path, help="files or folders (default: the watched roots)")
    imp.add_argument("--kind", choices=["conversations", "documents"], help="for paths outside the roots")
    status = sub.add_parser("status", help="files done, pending and failed; points; model")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    search = sub.add_parser("search", help="semantic search over what was ingested")
    search.add_argument("query")
    search.add_argument("--kind", choices=["conversations", "documents"])
    search.add_argument("--project")
    search.add_argument("-k", type=int, default=5, dest="limit")
    search.add_argument("--json", action="store_true")
    retry = sub.add_parser("retry", help="retry quarantined and failed files (or the given ones)")
    retry.add_argument("paths", nargs="*", type=Path)
    forget = sub.add_parser("forget", help="delete a file's points; it is not re-ingested unless it changes")
    forget.add_argument("path", type=Path)
    sub.add_parser("model", help="fetch or assemble the embedding model and load it once (Docker build)")
    return parser


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "run":
        runner = _runner(settings, args.dormant)
        code: int = await runner.run()
        args.next_mode = runner.next_mode  # main re-executes once the event loop is closed
        return code
    if command == "model":
        return _prepare_model(settings.embed)
    if command == "import":
        from ingestd.importer import run_import

        return await run_import(settings, args.paths, args.kind)
    params = _params(args)
    if _daemon_address(settings.ops) is not None:
        answer = _call_daemon(settings.ops, command, params)
    else:
        answer = await _call_locally(settings, command, params)
    return print_answer(command, answer, getattr(args, "json", False))


def _runner(settings: Settings, dormant: bool) -> Any:
    """The full daemon, or its dormant image, which must not import the full one's libraries."""
    if dormant:
        from ingestd.dormant import Dormant

        return Dormant(settings)
    from ingestd.daemon import Daemon

    return Daemon(settings)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "search":
        return {"query": args.query, "kind": args.kind, "project": args.project, "limit": args.limit}
    if args.command == "retry":
        return {"paths": [str(p.expanduser().absolute()) for p in args.paths]}
    if args.command == "forget":
        return {"path": str(args.path.expanduser().absolute())}
    return {}


def _daemon_address(settings: OpsSettings) -> str | None:
    """The running daemon's URL, if one holds the state directory."""
    info_file = settings.state_dir / DAEMON_FILE
    lock_file = settings.state_dir / LOCK_FILE
    if not info_file.exists() or not lock_file.exists():
        return None
    import fcntl

    with lock_file.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _reachable_address(json.loads(info_file.read_text()))
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _reachable_address(info: dict[str, Any]) -> str:
    """From the daemon's network namespace, the port it bound; from outside it (the host of its
    container), the published port, when the daemon was told one."""
    host = "127.0.0.1" if info["host"] in ("0.0.0.0", "::", "") else info["host"]
    port = info["port"]
    if info.get("published_port") and info.get("netns") != network_namespace():
        port = info["published_port"]
    return f"http://{host}:{port}"


def _call_daemon(settings: OpsSettings, command: str, params: dict[str, Any]) -> dict[str, Any]:
    """Ask the daemon; while it starts or wakes (503 with Retry-After, or the port briefly
    closed during its re-exec) ask again, for up to DAEMON_WAIT_SECONDS."""
    deadline = time.monotonic() + DAEMON_WAIT_SECONDS
    while True:
        base = _daemon_address(settings)
        if base is None:
            return {"error": "the daemon stopped before it answered"}
        request = urllib.request.Request(
            f"{base}/api/{command}",
            data=json.dumps(params).encode(),
            headers={"Content-Type": "application/json"},
        )
        wait = 0.5
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            try:
                message = json.loads(body).get("error") or body
            except (ValueError, AttributeError):
                message = body
            retry_after = exc.headers.get("Retry-After")
            if exc.code != 503 or retry_after is None or time.monotonic() > deadline:
                return {"error": f"{message} (HTTP {exc.code})"}
            wait = min(float(retry_after), 2.0)
        except (urllib.error.URLError, ConnectionError) as exc:  # refused, or reset mid-answer
            if time.monotonic() > deadline:
                return {"error": f"the daemon at {base} does not answer: {exc}"}
        time.sleep(wait)


async def _call_locally(settings: Settings, command: str, params: dict[str, Any]) -> dict[str, Any]:
    from ingestd.engine import Engine

    engine = Engine(settings)
    await engine.open(command)
    try:
        if command == "search":
            return {
                "hits": await engine.search(
                    params["query"], params["kind"], params["project"], params["limit"]
                )
            }
        if command == "status":
            return await engine.status()
        if command == "retry":
            return {"retried": engine.retry(params["paths"] or None), "note": "run `ingestd run` or `import`"}
        if command == "forget":
            return {"forgotten": (await engine.forget(params["path"])).path}
        raise ValueError(command)
    finally:
        await engine.close()


def print_answer(command: str, answer: dict[str, Any], as_json: bool) -> int:
    """A command's answer as the user sees it, and the exit code it means. One renderer for
    the daemon's answers and the local engine's, which arrive as the same dictionaries; every
    line that can carry a path, a reason or an error goes through `mask`."""
    if "error" in answer:
        print(mask(f"ingestd {command}: {answer['error']}"), file=sys.stderr)
        return 1
    if as_json or command in ("retry", "forget"):
        print(mask(json.dumps(answer, indent=2, default=str)))
        return 0
    if command == "search":
        _print_hits(answer["hits"])
    else:
        _print_status(answer)
    return 0


def _print_hits(hits: list[dict[str, Any]]) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    if not hits:
        console.print("no results")
    for rank, hit in enumerate(hits, 1):
        where = hit.get("path", "?")
        extra = " ".join(str(hit[k]) for k in ("project", "session", "heading", "page") if hit.get(k))
        console.print(f"[bold]{rank}. {hit['score']:.3f}[/bold]  {where}  [dim]{extra}[/dim]")
        snippet = " ".join(str(hit.get("text", "")).split())
        console.print(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


def _print_status(answer: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    files = Table(title="files")
    files.add_column("status")
    files.add_column("count", justify="right")
    for status, count in sorted(answer["files"].items()):
        files.add_row(status, str(count))
    console.print(files)
    points = Table(title="points")
    points.add_column("collection")
    points.add_column("points", justify="right")
    for name, count in answer["points"].items():
        points.add_row(name, "unavailable" if count is None else str(count))
    console.print(points)
    for status in ("quarantined", "failed", "skipped", "pending"):
        entries = answer["problems"].get(status) or []
        for entry in entries[:50]:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["updated_at"]))
            line = mask(f"{entry['path']}: {entry['reason']} (attempts {entry['attempts']}, {when})")
            # Text, not markup: a path may hold brackets; soft wrap keeps each entry on one line.
            console.print(Text.assemble((status, "yellow"), " ", line), soft_wrap=True)
        if len(entries) > 50:
            console.print(f"… and {len(entries) - 50} more {status}")
    _print_redactions(console, answer.get("redactions") or {})
    console.print(mask(f"model: {answer['model']['fingerprint']} (loaded: {answer['model']['loaded']})"))
    console.print(mask(f"store: {answer['store']['location']} (available: {answer['store']['available']})"))
    console.print(mask(f"state: {answer['state']['path']} ({answer['state']['files']} files)"))


def _print_redactions(console: Any, redactions: dict[str, int]) -> None:
    """The total, then the files with the most redactions (the JSON output has them all)."""
    if not redactions:
        return
    console.print(f"redactions: {sum(redactions.values())} in {len(redactions)} files")
    ranked = sorted(redactions.items(), key=lambda item: (-item[1], item[0]))
    for path, count in ranked[:TOP_REDACTED_FILES]:
        console.print(mask(f"  {count:>6}  {path}"), markup=False, soft_wrap=True)
    if len(ranked) > TOP_REDACTED_FILES:
        console.print(f"  … and {len(ranked) - TOP_REDACTED_FILES} more files (see `ingestd status --json`)")


def _prepare_model(settings: EmbedSettings) -> int:
    from ingestd.embedding import build_provider

    provider = build_provider(settings)
    prepare = getattr(provider, "prepare", None)
    if prepare is None:
        print(f"{provider.name}: nothing to prepare (a cloud provider)")
        return 0
    started = time.monotonic()
    where = prepare()
    print(f"model ready: {provider.fingerprint} at {where} ({time.monotonic() - started:.1f}s)")
    return 0
