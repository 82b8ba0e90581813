"""The documentation site builds, its strict checks bite, and its pages stay honest.

- `mkdocs build --strict` of `mkdocs.yml` passes, and every command page shows the
  command's own `--help`, generated from the Click command (mkdocs-click).
- The strict build fails on a page left out of the navigation and on a link to a page
  that does not exist: the strictness `make docs` relies on is checked, not assumed.
- Every repository path that the docs, README.md and BENCHMARKS.md name exists (and
  every `tests/...py::name` names a test that exists), so the docs follow the code as
  it moves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gate.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TOP_FOLDERS = ("audit", "gate", "tests", "bench", "templates", "policies", "examples", "docs")
PATH = re.compile(
    r"(?<![\w./~-])((?:" + "|".join([*TOP_FOLDERS, r"\.github"]) + r")/[\w./<>-]*)(::\w+)?"
)
NOT_PATHS = frozenset({"gate/up/down_proj"})  # LoRA target module names, not a file


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict`, run from the repository root (snippets' base path)."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stderr
    return out


def test_the_site_builds_strictly_with_every_command_page(site: Path) -> None:
    for name in COMMANDS:
        html = (site / "commands" / name / "index.html").read_text(encoding="utf-8")
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        assert f"<code>codeeraser {name} [OPTIONS]" in html, name
        listing = html.split("<strong>Options:</strong>", 1)[1].split("</code>", 1)[0]
        listing = re.sub(r"<[^>]+>", "\n", listing)
        listed = set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", listing, re.MULTILINE))
        options = {max(p.opts, key=len) for p in command.params if isinstance(p, click.Option)}
        assert len(options) > 1
        assert options <= listed, (name, options - listed)


def test_every_command_page_generates_its_options_from_the_command() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name, target in COMMANDS.items():
        module, attr = target.split(":")
        page = (DOCS / "commands" / f"{name}.md").read_text(encoding="utf-8")
        block = f"::: mkdocs-click\n    :module: {module}\n    :command: {attr}\n"
        assert block in page, name
        assert f"commands/{name}.md" in nav, name


def test_the_global_options_are_documented() -> None:
    text = (DOCS / "commands" / "index.md").read_text(encoding="utf-8")
    options = [o for p in cli.params if isinstance(p, click.Option) for o in p.opts]
    assert options
    assert not [o for o in options if f"`{o}`" not in text]


def test_a_page_out_of_the_nav_or_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    (docs / "orphan.md").write_text("# Orphan\n", encoding="utf-8")
    index = docs / "index.md"
    text = index.read_text(encoding="utf-8") + "\n[gone](no-such-page.md)\n"
    index.write_text(text, encoding="utf-8")
    config = tmp_path / "mkdocs.yml"
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "\ndocs_dir: docs\n" in text
    config.write_text(text.replace("\ndocs_dir: docs\n", f"\ndocs_dir: {docs}\n"), encoding="utf-8")
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "orphan.md" in result.stderr
    assert "no-such-page.md" in result.stderr


def _named_paths() -> list[tuple[str, str, str]]:
    """(document, path, test name or "") for every repository path the docs name."""
    documents = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md", ROOT / "BENCHMARKS.md"]
    found = []
    for document in documents:
        for match in PATH.finditer(document.read_text(encoding="utf-8")):
            path = match.group(1).rstrip(".,;:")
            if path not in NOT_PATHS:
                name = (match.group(2) or "").lstrip(":")
                found.append((document.relative_to(ROOT).as_posix(), path, name))
    return found


def test_every_path_the_docs_name_exists() -> None:
    assert all((ROOT / folder).is_dir() for folder in TOP_FOLDERS)
    named = _named_paths()
    assert len(named) > 50  # the pattern still finds what the docs name
    missing = [f"{doc}: {path}" for doc, path, _ in named if not _exists(path)]
    assert not missing, missing
    tests = [(doc, path, name) for doc, path, name in named if name]
    assert tests
    gone = [f"{doc}: {path}::{name}" for doc, path, name in tests if not _defines(path, name)]
    assert not gone, gone


def _exists(path: str) -> bool:
    """`gate/commands/<name>.py` stands for files of the folder `gate/commands/`."""
    return (ROOT / path.split("<", 1)[0]).exists()


def _defines(path: str, name: str) -> bool:
    text = (ROOT / path).read_text(encoding="utf-8")
    return re.search(rf"^def {re.escape(name)}\(", text, re.MULTILINE) is not None
