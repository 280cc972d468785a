"""A 200 MB transcript is read in bounded memory: RSS must not follow the file's size.

Two `ingestd import` processes embed exactly the same text. One reads it from a small file; the
other from a 200 MB file in which 1 MB screenshots (dropped by the parser) sit between the
messages, as they do in real sessions. RSS is sampled from outside each process. If reading held
the file, or any large part of it, the second peak would be hundreds of MB above the first.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from conftest import subprocess_env
from generators import ClaudeSession, dump

FILE_BYTES = 200_000_000
IMAGE_BYTES = 750_000  # 1 MB of base64 per screenshot line
ALLOWANCE_MB = 96  # run-to-run noise of the peak; a file held in memory would add ≥ 200 MB


def _write(path: Path, image_bytes: int, images: int) -> None:
    """The same messages, with screenshots of `image_bytes` each between them."""
    session = ClaudeSession(seed=41, session=path.stem)
    picture = base64.b64encode(random.Random(5).randbytes(image_bytes)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for index in range(images):
            if index % 10 == 0:
                handle.write(dump(session.exchange()))
            line = session.image(0)  # the session's own randomness stays in step in both files
            line["message"]["content"][1]["source"]["data"] = picture
            handle.write(dump([line]))


def _peak_rss_of_import(tmp_path: Path) -> tuple[float, dict[str, object]]:
    env = subprocess_env(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "import"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0.0]
    watched = psutil.Process(process.pid)

    def sample() -> None:
        while process.poll() is None:
            try:
                peak[0] = max(peak[0], watched.memory_info().rss / 1e6)
            except psutil.Error:
                return
            threading.Event().wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate(timeout=600)
    sampler.join(5)
    assert process.returncode == 0, stderr[-2000:]
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    ingested = [e for e in events if e.get("event") == "file.ingested"]
    assert len(ingested) == 1 and ingested[0]["outcome"] == "done", ingested
    return peak[0], ingested[0]


def test_a_200_mb_transcript_is_read_in_bounded_memory(tmp_path: Path) -> None:
    images = FILE_BYTES // (IMAGE_BYTES * 4 // 3)
    small, big = tmp_path / "small", tmp_path / "big"
    _write(small / "conv" / "proj" / "s.jsonl", 16, images)
    _write(big / "conv" / "proj" / "s.jsonl", IMAGE_BYTES, images)
    assert (big / "conv" / "proj" / "s.jsonl").stat().st_size >= FILE_BYTES * 0.95

    small_peak, small_event = _peak_rss_of_import(small)
    big_peak, big_event = _peak_rss_of_import(big)

    print(f"peak RSS: small file {small_peak:.0f} MB, 200 MB file {big_peak:.0f} MB; {big_event}")
    assert big_event["chunks"] == small_event["chunks"], "the same text was embedded from both files"
    assert big_peak - small_peak <= ALLOWANCE_MB, (
        f"peak RSS {big_peak:.0f} MB for the 200 MB file against {small_peak:.0f} MB for the small one"
    )
