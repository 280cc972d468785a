"""The resumable state file: per file, how far its text has been stored in Qdrant.

Written atomically (temporary file, fsync, rename, fsync of the directory), keeping the previous
good copy as `state.json.bak`, so a kill at any instant leaves a readable state. Records only
advance after Qdrant has acknowledged the points they describe; the pipeline guarantees that.
A lock file keeps two daemons off one state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

VERSION = 1
LOCK_FD_ENV = "INGESTD_LOCK_FD"  # the lock's descriptor, kept open across a re-exec
LOCK_FILE = "ingestd.lock"
DAEMON_FILE = "daemon.json"  # a running daemon's address, for the CLI (health.announce)
Status = Literal["pending", "done", "skipped", "failed", "quarantined", "deleted", "forgotten"]


class StateLocked(Exception):
    """Another ingestd owns this state directory."""


@dataclass(slots=True)
class FileRecord:
    kind: str
    status: Status = "pending"
    reason: str | None = None
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    head_len: int = 0
    head_fp: str = ""
    tail_fp: str = ""
    offset: int = 0  # bytes consumed: the end of the last complete line read
    resume_offset: int = 0  # where the first chunk not yet stored begins
    resume_ordinal: int = 0
    resume_line: int = 1
    generation: int = 0
    chunks: int = 0
    attempts: int = 0
    redactions: int = 0
    reingest: bool = False  # retried by name: read again from scratch, under a new generation
    updated_at: float = field(default_factory=time.time)

    def signature(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)

    def restart(self, generation: int) -> None:
        """Forget progress: the file was rewritten (or is retried) under a new generation."""
        self.generation = generation
        self.offset = self.resume_offset = self.resume_ordinal = self.chunks = 0
        self.resume_line = 1
        self.head_len, self.head_fp, self.tail_fp = 0, "", ""
        self.redactions = 0
        self.reingest = False

    def to_json(self) -> dict[str, Any]:
        """A flat dict; dataclasses.asdict deep-copies and was a third of a big state's save time."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


_FIELDS = tuple(f.name for f in fields(FileRecord))


@dataclass(slots=True)
class LoadReport:
    source: str  # "state", "backup", "new"
    problem: str | None = None


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / "state.json"
        self.backup = state_dir / "state.json.bak"
        self.files: dict[str, FileRecord] = {}
        self.meta: dict[str, Any] = {}
        self.dirty = False
        self._lock_handle: Any = None
        self._handed_off: Any = None

    # --- locking -------------------------------------------------------------------------
    def lock(self, owner: str = "daemon") -> None:
        if self._lock_handle is not None:  # already ours (the daemon locks before it announces itself)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = self._inherited_lock() or (self.dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StateLocked(
                f"{self.dir} is in use by {holder}; stop it first (one ingestd per state directory)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{owner} pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def _inherited_lock(self) -> Any:
        """The lock a re-executing daemon kept open for its next image (see hand_off_lock).

        Locking the same open file again succeeds at once, so the directory is never free in
        between for a CLI command to open embedded Qdrant beside the daemon.
        """
        number = os.environ.pop(LOCK_FD_ENV, "")
        try:
            fd = int(number)
            if os.fstat(fd).st_ino != os.stat(self.dir / LOCK_FILE).st_ino:
                return None  # not our lock file: leave that descriptor alone
        except (OSError, ValueError):
            return None
        os.set_inheritable(fd, False)
        return os.fdopen(fd, "a+")

    def hand_off_lock(self) -> None:
        """Keep the lock held through exec(): its descriptor stays open and is named in the env."""
        handle, self._lock_handle = self._lock_handle, None
        if handle is None:
            return
        os.set_inheritable(handle.fileno(), True)
        os.environ[LOCK_FD_ENV] = str(handle.fileno())
        self._handed_off = handle  # referenced, so it is never closed in this image

    def unlock(self) -> None:
        if self._lock_handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # --- reading -------------------------------------------------------------------------
    def load(self) -> LoadReport:
        problem = None
        for source, path in (("state", self.path), ("backup", self.backup)):
            if not path.exists():
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:  # perhaps passing (EIO, EACCES): the file is left where it is
                problem = f"{path.name} unreadable ({type(exc).__name__}: {str(exc)[:100]})"
                continue
            try:
                self._parse(data.decode("utf-8"))
                return LoadReport(source, problem)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                problem = f"{path.name} unreadable ({type(exc).__name__}: {str(exc)[:100]})"
                self._set_aside(path)
        self.files, self.meta = {}, {}
        return LoadReport("new", problem)

    def _set_aside(self, path: Path) -> None:
        """Move a corrupt file out of the way (kept for inspection): otherwise the next write
        would hard-link a corrupt state.json over the good backup it was recovered from."""
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"))

    def _parse(self, text: str) -> None:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(
                f"unsupported state version {data.get('version') if isinstance(data, dict) else '?'}"
            )
        self.meta = dict(data.get("meta") or {})
        self.files = {path: FileRecord.from_json(record) for path, record in data["files"].items()}

    # --- writing -------------------------------------------------------------------------
    def mark_dirty(self) -> None:
        self.dirty = True

    def snapshot(self) -> bytes:
        """The records as JSON, now marked clean: a caller whose write fails marks them dirty."""
        self.dirty = False
        body = {
            "version": VERSION,
            "meta": self.meta,
            "files": {path: record.to_json() for path, record in self.files.items()},
        }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    def save(self) -> None:
        try:
            self.write(self.snapshot())
        except BaseException:
            self.dirty = True
            raise

    def write(self, data: bytes) -> None:
        """Atomic replace; on any error (ENOSPC included) the previous file is left intact."""
        self.dir.mkdir(parents=True, exist_ok=True)
        unique = f"{os.getpid()}.{threading.get_ident()}"
        tmp = self.dir / f".state.json.{unique}.tmp"
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if self.path.exists():
                # Hard-link the current file as the backup, so state.json itself is never absent.
                link = self.dir / f".state.json.bak.{unique}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                os.link(self.path, link)
                os.replace(link, self.backup)
            os.replace(tmp, self.path)
            _fsync_dir(self.dir)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    # --- records -------------------------------------------------------------------------
    def get(self, path: str) -> FileRecord | None:
        return self.files.get(path)

    def put(self, path: str, record: FileRecord) -> None:
        record.updated_at = time.time()
        self.files[path] = record
        self.dirty = True

    def remove(self, path: str) -> None:
        if self.files.pop(path, None) is not None:
            self.dirty = True

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.files.values():
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
