"""Embedded Qdrant in a child process of its own, as a Qdrant server would be.

qdrant-client's local mode keeps every point in the memory of the process that opens it and
scores, pickles and commits in Python: in the daemon that would be its RSS growing with the
collection (about 15 KB a point, which OPERATIONAL_MEMORY_MB would mistake for a leak) and the
event loop stalled for each search (0.9 s over 60,000 points). Here it runs in a child that
answers calls over a socket pair, one at a time and in order, so the daemon's memory stays its
own and the loop only waits.

The child dies with the daemon (PR_SET_PDEATHSIG), even on SIGKILL, so the next daemon can open
the folder; if the child dies alone, the call fails with `EmbeddedQdrantGone`, an OSError that the
store retry treats as an outage, and the next call starts a new child.

`python -m ingestd.embedded_qdrant FD PATH LEVEL FORMAT` is the child's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

PR_SET_PDEATHSIG = 1  # linux/prctl.h
LOCK_WAIT_SECONDS = 15.0  # a predecessor killed mid-call may still hold the folder's lock
STOP_WAIT_SECONDS = 10.0
Request = tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any]]


class EmbeddedQdrantGone(ConnectionError):
    """The child ended (killed, or out of memory): an outage to retry, never a file's fault."""


class EmbeddedQdrant:
    """The same call surface as `AsyncQdrantClient(path=...)`: every public method is forwarded."""

    def __init__(self, path: Path, log_level: str = "INFO", log_format: str = "auto") -> None:
        self._argv = [str(path), log_level, log_format]
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        # One thread: calls reach the child in the order they were made, and the loop never
        # blocks on the socket. It also owns the child, whose death signal follows this thread.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="embedded-qdrant")
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def forward(*args: Any, **kwargs: Any) -> Any:
            return await self.call(method, *args, **kwargs)

        return forward

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        # The caller's log context (`concerning`) travels with the call, so the child's own lines
        # (qdrant-client's warnings) name the same files.
        request: Request = (method, args, kwargs, structlog.contextvars.get_contextvars())
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._round_trip, request)

    async def tune(self, collection: str) -> None:
        await self.call("tune", collection)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._stop)
        finally:
            self._executor.shutdown(wait=False)

    def _round_trip(self, request: Request) -> Any:
        connection = self._connection or self._start()
        try:
            connection.send(request)
            ok, value = connection.recv()
        except (EOFError, OSError) as exc:
            raise EmbeddedQdrantGone(
                f"embedded Qdrant's process ended ({self._reap()}) during {request[0]}"
            ) from exc
        if not ok:
            raise value
        return value

    def _start(self) -> Connection:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ingestd.embedded_qdrant", str(theirs.fileno()), *self._argv],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C is the daemon's to handle, not the child's
            )
            self._connection = connection = Connection(ours.detach())
        try:
            ok, value = connection.recv()  # the child's hello: its client is open, or why not
        except (EOFError, OSError) as exc:
            raise EmbeddedQdrantGone(f"embedded Qdrant did not start ({self._reap()})") from exc
        if not ok:
            self._reap()
            raise value
        return connection

    def _stop(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(EOFError, OSError):
            self._connection.send(("close", (), {}, {}))
            self._connection.recv()
        self._reap()

    def _reap(self) -> str:
        """Close our end and wait for the child: afterwards the folder's lock is free."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        process, self._process = self._process, None
        if process is None:
            return "not started"
        try:
            code = process.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        return f"exit status {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


# The child's side.


def open_when_free(path: str) -> QdrantClient:
    """Local mode refuses a folder another process holds; the holder may be a killed daemon's
    child that is still exiting, so wait for it a while."""
    from qdrant_client import QdrantClient

    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return QdrantClient(path=path)
        except RuntimeError as exc:  # "Storage folder ... is already accessed by another instance"
            if "already accessed" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _Server:
    """Answers forwarded calls with a real local-mode client; `tune` and `close` are its own."""

    def __init__(self, path: str) -> None:
        self.client = open_when_free(path)

    def tune(self, collection: str) -> None:
        """Local mode commits every point in its own SQLite transaction with an fsync (~4 ms a
        point). WAL with synchronous=NORMAL makes that ~0.4 ms and stays safe against a killed
        process; only an OS crash can lose the last commits. Skipped if the internals change."""
        import sqlite3

        try:
            local = getattr(self.client, "_client")  # noqa: B009 - local mode's private engine
            connection = local.collections[collection].storage.storage
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except (AttributeError, KeyError, TypeError, sqlite3.Error):
            return

    def close(self) -> None:
        self.client.close()

    def answer(self, request: Request) -> tuple[bool, Any]:
        method, args, kwargs, context = request
        try:
            target = getattr(self, method) if method in ("tune", "close") else getattr(self.client, method)
            with structlog.contextvars.bound_contextvars(**context):
                return True, target(*args, **kwargs)
        except Exception as exc:
            return False, exc


def _send(connection: Connection, reply: tuple[bool, Any]) -> None:
    try:
        connection.send(reply)
    except Exception as exc:  # an answer that does not pickle: say what it was instead
        value = reply[1]
        connection.send((False, RuntimeError(f"embedded Qdrant: {type(value).__name__}: {value} ({exc})")))


def _die_with_the_daemon(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the daemon died before the line above
        sys.exit(0)


def serve(fd: int, path: str, log_level: str, log_format: str) -> None:
    parent = os.getppid()
    _die_with_the_daemon(parent)
    for name in (signal.SIGINT, signal.SIGTERM):  # it ends when the daemon closes it, or dies
        signal.signal(name, signal.SIG_IGN)
    # qdrant-client imports FastEmbed, and with it ONNX Runtime, for its own embedding helpers
    # whenever it is installed: 0.35 s and 40 MB that a child which never embeds can do without.
    sys.modules["fastembed"] = None  # type: ignore[assignment]
    from ingestd.logs import configure_logging

    configure_logging(log_level, log_format)
    connection = Connection(fd)
    try:
        server = _Server(path)
    except Exception as exc:
        _send(connection, (False, exc))
        return
    _send(connection, (True, os.getpid()))
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):  # the daemon closed its end, or is gone
            server.close()
            return
        _send(connection, server.answer(request))
        if request[0] == "close":
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]), *sys.argv[2:5])
