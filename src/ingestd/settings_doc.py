"""Keep `.env.example`, the Settings class and the README's settings table saying the same thing.

`.env.example` is the one place where each setting is explained; the settings' sections are the
one place where names, defaults and groups are defined (a group is a section: its `TITLE` heads a
`# --- title ---` banner). This module checks the first against the second and renders the README
table from both:

    python -m ingestd.settings_doc --check    # exit 1 and list every drift
    python -m ingestd.settings_doc --write    # rewrite the README table

A setting whose default depends on the provider (`Settings.PROVIDER_DEPENDENT`) is written
commented out with its FastEmbed default, `# EMBED_BATCH_SIZE=16`, so an untouched copy leaves
it to the provider. The last group, `docker compose only`, lists the variables that only
docker-compose.yml reads (`${NAME:-default}`); each must appear there with the same default.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from ingestd.settings import SECTIONS, Settings

REPO = Path(__file__).resolve().parents[2]
TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
_BANNER = re.compile(r"^\s*# --- (?P<group>[^-].*?) -+\s*$")
_ASSIGN = re.compile(r"^(?P<unset># )?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?::?-(?P<default>[^}]*))?\}")
COMPOSE_GROUP = "docker compose only"


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    value: str
    unset: bool  # written as `# NAME=`: no value by default
    description: str
    group: str


def source_groups() -> dict[str, str]:
    """Each setting's group: the title of its section, sections in the root's order."""
    return {name: section.TITLE for section in SECTIONS.values() for name in section.model_fields}


def default_text(field: FieldInfo) -> tuple[str, bool]:
    """The default as it would be written in a .env file, and whether it is unset."""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "", True
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    if isinstance(value, float):
        return f"{value:g}", False
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value), False
    return str(value), False


def parse_env_example(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    group, notes = "", list[str]()
    for line in path.read_text().splitlines():
        banner = _BANNER.match(line)
        assign = _ASSIGN.match(line)
        if banner:
            group, notes = banner["group"], []
        elif assign:
            entries.append(
                Entry(assign["name"], assign["value"], bool(assign["unset"]), " ".join(notes), group)
            )
            notes = []
        elif line.startswith("#") and group:
            notes.append(line.lstrip("#").strip())
        else:
            notes = []
    return entries


def compose_variables(compose_file: Path) -> dict[str, str]:
    """The `${NAME:-default}` variables of the compose file, with their defaults."""
    if not compose_file.is_file():
        return {}
    return {m["name"]: m["default"] or "" for m in COMPOSE_VARIABLE.finditer(compose_file.read_text())}


def compose_problems(entries: list[Entry], compose_file: Path) -> list[str]:
    """The compose-only group against the compose file: same names, same defaults."""
    found: list[str] = []
    used = compose_variables(compose_file)
    listed = {entry.name: entry for entry in entries if entry.group == COMPOSE_GROUP}
    settings_names = set(Settings.env_names())
    for name in sorted(set(used) - set(listed) - settings_names):
        found.append(f"{name}: used by {compose_file.name} but missing from '{COMPOSE_GROUP}'")
    for name, entry in sorted(listed.items()):
        if name in settings_names:
            found.append(f"{name}: a setting, not '{COMPOSE_GROUP}'")
        elif name not in used:
            found.append(f"{name}: under '{COMPOSE_GROUP}' but not used by {compose_file.name}")
        elif (entry.value, entry.unset) != (used[name], False):
            found.append(f"{name}: default should be written `{name}={used[name]}` as in {compose_file.name}")
        if not entry.description:
            found.append(f"{name}: no explanation above it")
    return found


def expected_text(field_name: str, info: FieldInfo) -> tuple[str, bool]:
    """How a setting's default is written in `.env.example`: value and whether commented out."""
    value, unset = default_text(info)
    return value, unset or field_name in Settings.PROVIDER_DEPENDENT


def problems(env_example: Path) -> list[str]:
    """Every way `.env.example` disagrees with the Settings class and the compose file."""
    entries = parse_env_example(env_example)
    found = compose_problems(entries, env_example.parent / "docker-compose.yml")
    entries = [entry for entry in entries if entry.group != COMPOSE_GROUP]
    names = [entry.name for entry in entries]
    fields = {name.upper(): (name, info) for name, info in Settings.flat_fields().items()}
    groups = source_groups()
    for name in sorted(set(fields) - set(names)):
        found.append(f"{name}: a setting missing from {env_example.name}")
    for name in sorted(set(names) - set(fields)):
        found.append(f"{name}: in {env_example.name} but not a setting")
    for name in sorted({n for n in names if names.count(n) > 1}):
        found.append(f"{name}: listed more than once")
    for entry in entries:
        if entry.name not in fields:
            continue
        field_name, info = fields[entry.name]
        value, unset = expected_text(field_name, info)
        if (entry.value, entry.unset) != (value, unset):
            shown = f"# {entry.name}={value}" if unset else f"{entry.name}={value}"
            found.append(f"{entry.name}: default should be written `{shown}`")
        if not entry.description:
            found.append(f"{entry.name}: no explanation above it")
        if entry.group != groups.get(field_name):
            found.append(f"{entry.name}: under '{entry.group}', its section is '{groups.get(field_name)}'")
    return found


def render_table(entries: list[Entry]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    group = None
    for entry in entries:
        if entry.group != group:
            group = entry.group
            lines.append(f"| **{group}** | | |")
        if entry.unset:  # commented out: no value, or a provider-dependent one (FastEmbed's)
            default = f"`{entry.value}` (FastEmbed)" if entry.value else "unset"
        else:
            default = f"`{entry.value}`"
        meaning = entry.description.replace("|", "\\|")
        lines.append(f"| `{entry.name}` | {default} | {meaning} |")
    return "\n".join(lines)


def readme_with_table(readme: str, table: str) -> str:
    head, start, rest = readme.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"README needs the markers {TABLE_START} and {TABLE_END}")
    return f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestd.settings_doc", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the README table")
    parser.add_argument("--check", action="store_true", help="exit 1 if anything is out of step")
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args(argv)
    env_example, readme_path = args.repo / ".env.example", args.repo / "README.md"
    found = problems(env_example)
    readme = readme_path.read_text()
    wanted = readme_with_table(readme, render_table(parse_env_example(env_example)))
    if args.write and not found and wanted != readme:
        readme_path.write_text(wanted)
        readme = wanted
    if wanted != readme:
        found.append("README settings table is stale: run `python -m ingestd.settings_doc --write`")
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found and (args.check or args.write) else 0


if __name__ == "__main__":
    raise SystemExit(main())
