"""A non-editable install works from anywhere: the CLI starts and finds its files.

`pip install --target` builds a wheel from a copy of the sources (so nothing is
written into the checkout) and installs it into a folder; a subprocess started
elsewhere, with only that folder and the dependencies' site-packages on its path
(`python -S`: no .pth files, so no editable install of this checkout is seen), runs
the CLI and locates the templates and policies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "audit", "gate", "templates", "policies")

PROBE = """
import json, gate, gate.resources as r
print(json.dumps({
    "gate": gate.__file__,
    "templates": str(r.templates_dir()),
    "policies": str(r.policies_dir()),
    "policy_names": r.builtin_policy_names(),
}))
"""


def _files(folder: Path, pattern: str = "*") -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob(pattern)
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("packaging")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, work / "src" / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            (work / "src").mkdir(exist_ok=True)
            shutil.copy2(source, work / "src" / name)
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
         str(work / "src")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def _run(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), sysconfig.get_path("purelib")]))
    return subprocess.run(
        [sys.executable, "-S", *args],
        cwd=target.parent, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_cli_help_runs_from_the_installed_copy(installed: Path) -> None:
    result = _run(installed, "-m", "gate", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: " in result.stdout
    assert "demo" in result.stdout
    assert (installed / "bin" / "codeeraser").is_file()  # the console script


def test_templates_and_policies_ship_inside_the_package(installed: Path) -> None:
    result = _run(installed, "-c", PROBE)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["gate"]).is_relative_to(installed)
    for name in ("templates", "policies"):
        folder = Path(found[name])
        assert folder == installed / "gate" / name
        assert _files(ROOT / name) <= _files(folder)  # every file of the checkout ships
    assert set(found["policy_names"]) == {p.stem for p in (ROOT / "policies").glob("*.yaml")}


def test_every_module_ships(installed: Path) -> None:
    for package in ("audit", "gate"):
        assert _files(ROOT / package, "*.py") == _files(installed / package, "*.py")
