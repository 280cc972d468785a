"""Process facts the daemon adapts to: CPUs allowed by the cgroup, RSS, and returning memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import signal
import sys
from functools import cache
from pathlib import Path
from typing import NoReturn

import psutil


def network_namespace() -> str | None:
    """This process's network namespace (Linux): a client in the daemon's own reaches the port
    it bound; one outside, on the host of a container, needs the published port."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def available_cpus() -> int:
    """CPUs this process may use: the cgroup quota in a container, else the affinity mask."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def _cgroup_quota() -> float | None:
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1_quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        v1_period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if v1_quota.is_file():
            quota_us = int(v1_quota.read_text())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def rss_mb() -> float:
    return round(rss_bytes() / 1e6, 1)


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024


def tune_malloc() -> None:
    """Before any thread starts: at most 2 heap arenas, and large blocks from mmap.

    ONNX Runtime's per-batch buffers (arena off) come from the embedding thread's heap and
    stayed there: 637 MB against 213 MB with a fixed 128 KiB mmap threshold in the benchmark,
    because glibc's adaptive threshold had risen past the buffers' size. Env vars
    (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) do the same but must be set before the process
    starts; this covers `pip install` users who run `ingestd` directly.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(M_ARENA_MAX, 2)
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_memory() -> None:
    """gc, then hand freed heap pages back to the OS (glibc only; a no-op elsewhere)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def reexec(dormant: bool) -> NoReturn:
    """Replace this process's image: the same PID, working folder and environment.

    The environment carries what the next image must keep (the state lock's descriptor, a port
    the OS chose); buffered log lines are flushed first, or they would be lost. Stop signals are
    blocked, not lost: the mask and pending signals survive exec(), and the next image unblocks
    them once its handler is in place, so a `docker stop` meanwhile is still a clean exit.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    os.execv(sys.executable, [sys.executable, "-m", "ingestd", "run", *(["--dormant"] if dormant else [])])
