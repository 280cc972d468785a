"""`.env.example`, the Settings class and the README table say the same thing.

`.env.example` explains each setting; `python -m ingestd.settings_doc --write` renders the README
table from it. A new setting fails here until it is written there, under its section's group, with
its default.
"""

from __future__ import annotations

from pathlib import Path

from containerfiles import COMPOSE, REPO, compose_environment
from ingestd import settings_doc
from ingestd.settings import SECTIONS, Settings

ENV_EXAMPLE = REPO / ".env.example"
README = REPO / "README.md"


def test_env_example_lists_every_setting_with_its_default_and_group() -> None:
    assert settings_doc.problems(ENV_EXAMPLE) == []


def test_env_example_groups_are_the_sections_in_order() -> None:
    groups = settings_doc.source_groups()
    assert set(groups) == set(Settings.flat_fields()), "every setting belongs to a section"
    order = [section.TITLE for section in SECTIONS.values()]
    example = list(dict.fromkeys(entry.group for entry in settings_doc.parse_env_example(ENV_EXAMPLE)))
    assert example == [*order, settings_doc.COMPOSE_GROUP], "the sections' groups, then the compose-only one"


def test_an_untouched_copy_of_env_example_changes_nothing(tmp_path: Path) -> None:
    copy = tmp_path / ".env"
    copy.write_text(ENV_EXAMPLE.read_text())
    from_file = Settings(_env_file=copy)
    defaults = Settings(_env_file=None)
    assert from_file.model_dump() == defaults.model_dump()


def test_readme_table_is_rendered_from_env_example() -> None:
    readme = README.read_text()
    table = settings_doc.render_table(settings_doc.parse_env_example(ENV_EXAMPLE))
    assert settings_doc.readme_with_table(readme, table) == readme, (
        "README settings table is stale: run `python -m ingestd.settings_doc --write`"
    )
    for name in Settings.env_names():
        assert f"| `{name}` |" in readme


def test_compose_sets_only_setting_names() -> None:
    names = set(Settings.env_names())
    assert set(compose_environment()) <= names


def test_compose_only_variables_are_listed_with_the_compose_defaults() -> None:
    """Every ${VAR} of the compose file is a setting or in the compose-only group, and back."""
    entries = settings_doc.parse_env_example(ENV_EXAMPLE)
    listed = {e.name: e.value for e in entries if e.group == settings_doc.COMPOSE_GROUP}
    used = settings_doc.compose_variables(COMPOSE)
    settings_names = set(Settings.env_names())
    assert {"HEALTH_HOST_PORT", "CONVERSATIONS_HOST_DIR", "DOCUMENTS_HOST_DIR", "INGESTD_UID"} <= set(listed)
    assert set(used) - settings_names == set(listed)
    assert all(used[name] == value for name, value in listed.items())
    assert not set(listed) & settings_names


def test_compose_only_drift_is_reported(tmp_path: Path) -> None:
    text = ENV_EXAMPLE.read_text().replace("INGESTD_GID=1000\n", "")
    text = text.replace("HEALTH_HOST_PORT=8765", "HEALTH_HOST_PORT=9000") + "# Stale.\nOLD_HOST_DIR=x\n"
    (tmp_path / ".env.example").write_text(text)
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    found = settings_doc.problems(tmp_path / ".env.example")
    assert any(p.startswith("INGESTD_GID: used by docker-compose.yml but missing") for p in found)
    wanted = "HEALTH_HOST_PORT: default should be written `HEALTH_HOST_PORT=8765`"
    assert any(p.startswith(wanted) for p in found)
    assert any(p.startswith("OLD_HOST_DIR: under 'docker compose only' but not used") for p in found)


def test_provider_dependent_defaults_are_left_to_the_provider(tmp_path: Path) -> None:
    """They are commented out, so a copy of .env.example set to Voyage gets Voyage's batches."""
    entries = {e.name: e for e in settings_doc.parse_env_example(ENV_EXAMPLE)}
    for name in Settings.PROVIDER_DEPENDENT:
        entry = entries[name.upper()]
        assert entry.unset and entry.value == settings_doc.default_text(Settings.flat_fields()[name])[0]
    copy = tmp_path / ".env"
    text = ENV_EXAMPLE.read_text().replace("EMBEDDING_PROVIDER=fastembed", "EMBEDDING_PROVIDER=voyage")
    copy.write_text(text.replace("# VOYAGE_API_KEY=", "VOYAGE_API_KEY=pa-x"))
    voyage = Settings(_env_file=copy).embed
    assert voyage.embedding_model == "voyage-3.5"
    assert (voyage.embed_batch_size, voyage.embed_batch_max_tokens) == (1000, 304_000)


def test_check_reports_drift(tmp_path: Path) -> None:
    original = ENV_EXAMPLE.read_text()
    assert "\nCHUNK_OVERLAP_TOKENS=0\n" in original  # the line this test breaks
    broken = original.replace("\nCHUNK_OVERLAP_TOKENS=0\n", "\nCHUNK_OVERLAP_TOKENS=10\n")
    broken = broken.replace("LOG_LEVEL=INFO\n", "")
    broken = broken.replace("LOG_FORMAT=auto\n", "LOG_FORMAT=auto\n# Not a setting.\nNOT_A_SETTING=1\n")
    (tmp_path / ".env.example").write_text(broken)
    (tmp_path / "README.md").write_text(README.read_text())
    found = settings_doc.problems(tmp_path / ".env.example")
    assert any(p.startswith("CHUNK_OVERLAP_TOKENS: default") for p in found)
    assert any(p.startswith("LOG_LEVEL: a setting missing") for p in found)
    assert any(p.startswith("NOT_A_SETTING: in .env.example but not a setting") for p in found)
    assert settings_doc.main(["--check", "--repo", str(tmp_path)]) == 1
