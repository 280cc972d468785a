"""Reading the Dockerfile and the compose file, shared by the static and the smoke tests."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingestd.settings_doc import COMPOSE_VARIABLE

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values

    def exec_form(self, instruction: str) -> list[str]:
        """The last ENTRYPOINT or CMD, which must be in exec (JSON) form."""
        found = self.all(instruction)
        if not found:
            return []
        value = json.loads(found[-1])
        assert isinstance(value, list), f"{instruction} must be a JSON array"
        return [str(part) for part in value]


def dockerfile_stages(text: str | None = None) -> list[Stage]:
    text = DOCKERFILE.read_text() if text is None else text
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
    return stages


def runtime_stage() -> Stage:
    return dockerfile_stages()[-1]


def container_command() -> list[str]:
    stage = runtime_stage()
    return stage.exec_form("ENTRYPOINT") + stage.exec_form("CMD")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose_environment(
    service: str = "ingestd", variables: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The service's environment, `${NAME:-default}` filled in as compose would from `variables`
    (the shell and .env), else from the default."""
    env = compose()["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    given = variables or {}

    def fill(match: re.Match[str]) -> str:
        return given.get(match["name"], match["default"] or "")

    return {str(k): COMPOSE_VARIABLE.sub(fill, str(v)) for k, v in env.items()}


def compose_volumes(service: str = "ingestd") -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    result = []
    for entry in compose()["services"][service].get("volumes") or []:
        parts = str(entry).split(":")
        # The source may hold a ${VAR:-default} with its own colon; target and mode are last.
        if parts[-1] in ("ro", "rw"):
            mode, target, source = parts[-1], parts[-2], ":".join(parts[:-2])
        else:
            mode, target, source = "rw", parts[-1], ":".join(parts[:-1])
        result.append((source, target, mode))
    return result
