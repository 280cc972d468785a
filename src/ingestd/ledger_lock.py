"""One ingestd per state directory: an flock on `ingestd.lock`, kept through a re-exec.

Embedded Qdrant admits one process, and two writers of one ledger would each resume the other's
files; the lock file names its holder so the refusal can say who it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

from ingestd.errors import StateLocked
from ingestd.paths import LOCK_FD_ENV, LOCK_FILE


class DirectoryLock:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._handle: Any = None
        self._handed_off: Any = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    @property
    def handed_off(self) -> Any:
        """The open lock file this image passes to the next one (None before hand_off)."""
        return self._handed_off

    def lock(self, owner: str = "daemon") -> None:
        if self._handle is not None:  # already ours (the daemon locks before it announces itself)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = self._inherited() or (self.dir / LOCK_FILE).open("a+")
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
        self._handle = handle

    def _inherited(self) -> Any:
        """The lock a re-executing daemon kept open for its next image (see hand_off).

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

    def hand_off(self) -> None:
        """Keep the lock held through exec(): its descriptor stays open and is named in the env."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        os.set_inheritable(handle.fileno(), True)
        os.environ[LOCK_FD_ENV] = str(handle.fileno())
        self._handed_off = handle  # referenced, so it is never closed in this image

    def unlock(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
