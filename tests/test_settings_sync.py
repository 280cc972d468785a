"""`.env.example`, the Settings class and the README table say the same thing.

`.env.example` explains each setting; `python -m ingestd.settings_doc --write` renders the README
table from it. A new setting fails here until it is written there, under its group, with its
default.
"""

from __future__ import annotations

from pathlib import Path

from containerfiles import REPO, compose_environment
from ingestd import settings_doc
from ingestd.settings import Settings

ENV_EXAMPLE = REPO / ".env.example"
README = REPO / "README.md"


def test_env_example_lists_every_setting_with_its_default_and_group() -> None:
    assert settings_doc.problems(ENV_EXAMPLE) == []


def test_env_example_groups_follow_the_settings_banners() -> None:
    groups = settings_doc.source_groups()
    assert set(groups) == set(Settings.model_fields), "every field sits under a banner"
    order = list(dict.fromkeys(groups[name] for name in Settings.model_fields))
    example = list(dict.fromkeys(entry.group for entry in settings_doc.parse_env_example(ENV_EXAMPLE)))
    assert example == order


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
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in readme


def test_compose_sets_only_setting_names() -> None:
    names = {name.upper() for name in Settings.model_fields}
    assert set(compose_environment()) <= names


def test_check_reports_drift(tmp_path: Path) -> None:
    broken = ENV_EXAMPLE.read_text().replace("CHUNK_MAX_TOKENS=128", "CHUNK_MAX_TOKENS=100")
    broken = broken.replace("LOG_LEVEL=INFO\n", "") + "# Not a setting.\nNOT_A_SETTING=1\n"
    (tmp_path / ".env.example").write_text(broken)
    (tmp_path / "README.md").write_text(README.read_text())
    found = settings_doc.problems(tmp_path / ".env.example")
    assert any(p.startswith("CHUNK_MAX_TOKENS: default") for p in found)
    assert any(p.startswith("LOG_LEVEL: a setting missing") for p in found)
    assert any(p.startswith("NOT_A_SETTING: in .env.example but not a setting") for p in found)
    assert settings_doc.main(["--check", "--repo", str(tmp_path)]) == 1
