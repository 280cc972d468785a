"""What under the watched roots is ours to read, and why anything else is refused.

Paths are judged on `lstat` before anything is opened: a FIFO is never opened (a blocking read
would hang a worker), symlinks are followed only when they stay inside a watched root, and a
loop is reported rather than chased. Directories are walked without following links.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ingestd.parsers.documents import is_supported

TRANSCRIPT_SUFFIXES = frozenset({".jsonl"})
_IGNORED_NAMES = (".", "~")  # hidden and editor temporaries
_IGNORED_SUFFIXES = (".swp", ".swx", ".tmp", ".part", ".crdownload")


@dataclass(frozen=True, slots=True)
class Target:
    path: Path  # as found under the root (the identity of the file)
    real: Path  # where it points after resolving links
    kind: str
    root: Path

    @property
    def key(self) -> str:
        return str(self.path)


@dataclass(frozen=True, slots=True)
class Refusal:
    path: Path
    kind: str
    reason: str

    @property
    def key(self) -> str:
        return str(self.path)


def root_of(path: Path, roots: list[tuple[str, Path]]) -> tuple[str, Path] | None:
    for kind, root in roots:
        if path == root or root in path.parents:
            return kind, root
    return None


def wanted(path: Path, kind: str) -> bool:
    """Does the name fit the root's kind? Names that do not are ignored without a word."""
    name = path.name
    if name.startswith(_IGNORED_NAMES) or name.endswith(_IGNORED_NAMES[1:] + _IGNORED_SUFFIXES):
        return False
    if kind == "conversations":
        return path.suffix.lower() in TRANSCRIPT_SUFFIXES
    return is_supported(path)


def classify(path: Path, roots: list[tuple[str, Path]]) -> Target | Refusal | None:
    """A readable target, a refusal with its reason, or None for names we do not watch."""
    path = Path(os.path.abspath(path))
    owner = root_of(path, roots)
    if owner is None:
        return None
    kind, root = owner
    if not wanted(path, kind):
        return None
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Refusal(path, kind, f"cannot stat: {exc.strerror}")
    real = path
    if not stat.S_ISLNK(info.st_mode) and path.parent != Path(os.path.realpath(path.parent)):
        # A linked directory on the way (root/link/file.md, link -> /elsewhere): judge the target.
        real = Path(os.path.realpath(path))
        if root_of(real, roots) is None:
            return Refusal(path, kind, "path leads outside the watched roots through a symlink (refused)")
    if stat.S_ISLNK(info.st_mode):
        try:
            real = path.resolve(strict=True)
        except RuntimeError:
            return Refusal(path, kind, "symlink loop")
        except OSError as exc:
            return Refusal(path, kind, f"broken symlink: {exc.strerror or exc}")
        if root_of(real, roots) is None:
            return Refusal(path, kind, "symlink points outside the watched roots (refused)")
        try:
            info = os.stat(real)
        except OSError as exc:
            return Refusal(path, kind, f"cannot stat link target: {exc.strerror}")
    if stat.S_ISDIR(info.st_mode):
        return None if real != path else Refusal(path, kind, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        return Refusal(path, kind, f"not a regular file ({_file_type(info.st_mode)}); never opened")
    return Target(path=path, real=real, kind=kind, root=root)


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def scan(roots: list[tuple[str, Path]], exclude: Path | None = None) -> Iterator[Path]:
    """Every candidate path under the roots (files and links), directories not followed."""
    for _, root in roots:
        if not root.is_dir():
            continue
        for directory, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
            here = Path(directory)
            if exclude is not None and (here == exclude or exclude in here.parents):
                dirnames.clear()
                continue
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                yield here / name
            for name in dirnames:  # a directory named like a file is reported, not walked into
                candidate = here / name
                if Path(name).suffix and wanted(candidate, root_kind(roots, root)):
                    yield candidate


def root_kind(roots: list[tuple[str, Path]], root: Path) -> str:
    return next(kind for kind, candidate in roots if candidate == root)
