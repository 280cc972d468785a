"""Subprocesses of ingestd under measurement: environment, RSS sampling, and the daemon's HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
MODEL_CACHE = REPO / "state" / "models"
MODEL_DIR = MODEL_CACHE / "all-MiniLM-L6-v2-int8"


def ingestd_env(state: Path, conversations: Path, documents: Path, **extra: object) -> dict[str, str]:
    """A clean environment for one ingestd process: only the settings given here and the defaults."""
    env = {key: value for key, value in os.environ.items() if not _is_setting(key)}
    env.update(
        STATE_DIR=str(state),
        CONVERSATIONS_DIRS=str(conversations),
        DOCUMENTS_DIRS=str(documents),
        FASTEMBED_CACHE_PATH=str(MODEL_CACHE),
        HEALTH_HOST="127.0.0.1",
        HEALTH_PORT="0",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        PROGRESS_LOG_SECONDS="0",
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


def _is_setting(name: str) -> bool:
    from ingestd.settings import Settings

    return name.lower() in Settings.model_fields


class Sampler:
    """RSS of a process every `interval` seconds, in a thread: samples and the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self.peak = 0.0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss()
            if rss is None:
                return
            self.samples.append((time.monotonic() - self.started, rss))
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def rss(self) -> float | None:
        try:
            return self.process.memory_info().rss / 1e6
        except psutil.Error:
            return None

    def children_rss(self) -> float:
        """The daemon's children: embedded Qdrant's process, which holds the points (as a Qdrant
        server would in its own container)."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss / 1e6
        return total

    def peak_since(self, since: float) -> float:
        return max((mb for t, mb in self.samples if t >= since), default=0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class Proc:
    """One ingestd subprocess with its output in a log file and its RSS sampled."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, interval: float = 0.1) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = log.open("wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [str(VENV_BIN / "ingestd"), *args],
            env=env,
            cwd=str(log.parent),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.sampler = Sampler(self.popen.pid, interval)

    def wait(self, timeout: float | None = None) -> int:
        code = self.popen.wait(timeout)
        self.sampler.stop()
        self._log.close()
        return code

    def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
        return self.wait(timeout)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """JSON log lines of the process (optionally one event name)."""
        out = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class DaemonProc(Proc):
    """`ingestd run` with its HTTP port read from the state directory."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.state = Path(env["STATE_DIR"])
        (self.state / "daemon.json").unlink(missing_ok=True)
        super().__init__(["run"], env, log)
        self.base = ""

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from spawn until /health says ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.output()[-2000:]}")
            info = self.state / "daemon.json"
            if info.exists() and not self.base:
                with contextlib.suppress(ValueError, KeyError):
                    self.base = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
            if self.base:
                try:
                    if self.get_json("/health").get("ready"):
                        return time.monotonic() - self.started
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError("daemon not ready")

    def get_json(self, path: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:  # /health answers 503 while degraded, with a body
            body: dict[str, Any] = json.loads(exc.read())
            return body

    def api(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.base}/api/{action}",
            data=json.dumps(params).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name (labels folded in), summed over label sets per bare name too."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=30) as response:
            text = response.read().decode()
        return parse_metrics(text)

    def search(self, query: str, kind: str | None = None, limit: int = 5) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = self.api("search", {"query": query, "kind": kind, "limit": limit})[
            "hits"
        ]
        return hits

    def wait_idle(self, files_done: int, timeout: float = 3600, poll: float = 0.25) -> float:
        """Wait until `files_done` files are done and nothing is in flight; returns when that happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.output()[-2000:]}")
            done = self.metrics().get("ingestd_files_total:done", 0.0)
            if done >= files_done:
                health = self.get_json("/health")
                if health.get("files_in_flight", 1) == 0 and health.get("queue_depth", 1) == 0:
                    return time.monotonic()
            time.sleep(poll)
        raise TimeoutError(f"daemon did not finish {files_done} files")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """`name` → value, plus `name:outcome` for samples with an outcome label (summed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        number = float(value)
        out[name] = out.get(name, 0.0) + number
        outcome = re.search(r'outcome="([^"]*)"', labels or "")
        if outcome:
            key = f"{name}:{outcome.group(1)}"
            out[key] = out.get(key, 0.0) + number
    return out


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]
