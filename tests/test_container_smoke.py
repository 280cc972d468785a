"""The container's command, run natively: as the image would start it, minus Docker.

The command comes from the Dockerfile's ENTRYPOINT and CMD and the environment from its ENV and
the compose file's `ingestd` service, so a change there is exercised here. Only what needs a
container is replaced: Qdrant is embedded (no QDRANT_URL), the mounted folders are temporary
folders, the port is a free one, and the model is the one `make install` assembled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import MODEL_CACHE, free_port
from containerfiles import compose_environment, compose_volumes, container_command, runtime_stage
from generators import markdown_document, write_transcript
from ingestd.settings import Settings

BIN = Path(sys.executable).parent


def container_env(tmp: Path, host_port: int) -> tuple[dict[str, str], dict[str, Path]]:
    """The image's and compose's environment (HEALTH_HOST_PORT set to `host_port` as in .env),
    with container paths mapped into tmp."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in {n.upper() for n in Settings.model_fields}}
    image_env = runtime_stage().env()
    image_env.pop("PATH")
    env.update(image_env)
    env.update(compose_environment(variables={"HEALTH_HOST_PORT": str(host_port)}))
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.pop("QDRANT_URL")  # embedded Qdrant instead of the qdrant service
    mounts = {target: tmp / target.strip("/") for _, target, _ in compose_volumes()}
    for name in ("CONVERSATIONS_DIRS", "DOCUMENTS_DIRS", "STATE_DIR"):
        assert env[name] in mounts, f"{name}={env[name]} is not a mounted folder"
        env[name] = str(mounts[env[name]])
    for folder in mounts.values():
        folder.mkdir(parents=True, exist_ok=True)
    env["HEALTH_PORT"] = str(free_port())
    env["FASTEMBED_CACHE_PATH"] = str(MODEL_CACHE)
    env["RECONCILE_SECONDS"] = "5"  # a safety net: the test does not rely on it
    return env, mounts


class PortMapping:
    """What Docker's `ports:` entry does: connections to the published port reach the container's."""

    def __init__(self, published: int, target: int) -> None:
        self.target, self.connections = target, 0
        self.listener = socket.create_server(("127.0.0.1", published))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            outbound = socket.create_connection(("127.0.0.1", self.target))
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def cli(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "ingestd"), *args, "--json"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def search(env: dict[str, str], cwd: Path, query: str) -> list[dict[str, object]]:
    hits: list[dict[str, object]] = cli(env, cwd, "search", query, "-k", "10")["hits"]
    return hits


def test_container_command_runs_natively(tmp_path: Path) -> None:
    published = free_port()
    env, mounts = container_env(tmp_path, host_port=published)
    command = container_command()
    assert command == ["ingestd", "run"]
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable is not None
    port = int(env["HEALTH_PORT"])
    mapping = PortMapping(published, port)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [executable, *command[1:]], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while health(port)[0] != 200:
            assert daemon.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"never healthy: {health(port)}"
            time.sleep(0.25)
        _, body = health(port)
        assert body["status"] == "ok" and body["store_reachable"] is True

        # The image's HEALTHCHECK command, as Docker would run it.
        check = json.loads(runtime_stage().all("HEALTHCHECK")[0].split("CMD", 1)[1])
        assert check[0] == "python"
        probe = subprocess.run([sys.executable, *check[1:]], env=env, capture_output=True, timeout=30)
        assert probe.returncode == 0, probe.stderr

        conversations, documents = mounts["/watch/conversations"], mounts["/watch/documents"]
        transcript = conversations / "-home-dev-shop" / "session-1.jsonl"
        write_transcript(transcript, seed=77, exchanges=3)
        doc = documents / "runbook.md"
        doc.write_text(
            markdown_document(3, 3) + "\n## Rotating the TLS certificate\n\nRenew the certificate "
            "with certbot, then reload nginx so the new chain is served.\n"
        )
        written = sorted(p for root in (conversations, documents) for p in root.rglob("*"))

        deadline = time.monotonic() + 120
        while True:
            doc_hits = search(env, tmp_path, "renew the TLS certificate and reload nginx")
            conv_hits = search(env, tmp_path, "flaky test")
            paths = {hit["path"] for hit in doc_hits + conv_hits}
            # The watcher may see the document half written; wait for its final version to lead.
            if str(transcript) in paths and doc_hits and doc_hits[0]["path"] == str(doc):
                break
            assert daemon.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"not searchable: {paths}"
            time.sleep(1.0)
        assert doc_hits[0]["path"] == str(doc)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "ingestd_chunks_embedded_total" in metrics and "ingestd_watcher_mode" in metrics
        assert sorted(p for root in (conversations, documents) for p in root.rglob("*")) == written, (
            "ingestd wrote inside a watched folder"
        )

        # The CLI on the host of a container reads the same daemon.json, from another network
        # namespace: it must connect to the published port, not the container's own.
        announced = Path(env["STATE_DIR"]) / "daemon.json"
        info = json.loads(announced.read_text())
        assert (info["port"], info["published_port"]) == (port, published)
        assert info["netns"] == os.readlink("/proc/self/ns/net")
        assert mapping.connections == 0, "the CLI beside the daemon used the published port"
        announced.write_text(json.dumps({**info, "netns": "net:[1]"}))  # as the host sees it
        assert cli(env, tmp_path, "status")["files"]["done"] == 2
        assert mapping.connections == 1
    finally:
        mapping.close()
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
            raise AssertionError("no exit within 10 s of SIGTERM") from None
    assert code == 0, log_path.read_text()
    assert time.monotonic() - started < 10
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "daemon.ready" in events and events[-1] == "daemon.stopped"
    assert not (Path(env["STATE_DIR"]) / "daemon.json").exists()
