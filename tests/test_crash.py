"""SIGKILL equivalence (see tests/crash_harness.py): bounded here, 50+ kills under `make soak`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from crash_harness import Report, run
from ingestd.settings_sections import EmbedSettings

# In flight at any instant: one batch being embedded, one waiting for Qdrant, one being
# upserted. A kill can lose at most those, so that bounds the re-embedding per kill; appends
# may each re-embed the one trailing chunk they change.
EMBED_BATCH_SIZE = EmbedSettings.model_fields["embed_batch_size"].default


def check(report: Report, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():  # the figures belong in `make test`'s output, not only on failure
        print("\nSIGKILL equivalence:", json.dumps(asdict(report), indent=2))
    assert report.kills >= 1 and report.reference_points > 0
    assert report.crash_points == report.reference_points
    assert report.missing == 0 and report.stale == 0 and report.duplicates == 0
    assert report.text_mismatches == 0
    assert report.unreadable_states == 0
    assert not report.notes, report.notes  # e.g. the final run's SIGTERM must exit 0
    assert report.sigterm_exit == 143 and report.sigterm_reembedded == 0, "SIGTERM mid-import re-embedded"
    allowance = 3 * EMBED_BATCH_SIZE * report.kills + report.appended_lines
    assert report.extra_embedded <= allowance, f"kills re-embedded {report.extra_embedded} chunks"


def test_sigkill_equivalence_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check(run(tmp_path, kills=10, seed=7, max_seconds=480), capsys)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 50 kills and restarts take longer than the suite's 300 s per test
def test_sigkill_equivalence_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check(run(tmp_path, kills=50, seed=11, max_seconds=3000), capsys)
