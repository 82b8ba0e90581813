"""The pre-commit hooks in .pre-commit-hooks.yaml, run by pre-commit itself, offline.

`codeeraser-scan-system` uses the codeeraser of this environment, so these tests install
nothing. `codeeraser-scan` (language: python) makes pre-commit install this repository
with its dependencies, torch among them (about 5 minutes here, from the local wheel
index): that test is opt-in, CODEERASER_PRECOMMIT_INSTALL=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.audit.fakes import FAKES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASELINE = ".codeeraser-baseline.jsonl"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # pre-commit and codeeraser
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


def _git(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False
    )


def _data_repo(tmp_path: Path, env: dict[str, str]) -> Path:
    """A training-data repository with one staged file holding a fake AWS key."""
    repo = tmp_path / "data-repo"
    repo.mkdir()
    _git(repo, env, "init", "-q")
    (repo / "config.py").write_text(f'KEY = "{FAKES["aws_id"]}"\n', encoding="utf-8")
    _git(repo, env, "add", "config.py")
    return repo


def _try_repo(tmp_path: Path, hook: str) -> subprocess.CompletedProcess[str]:
    env = _env(tmp_path)
    repo = _data_repo(tmp_path, env)
    return subprocess.run(
        [str(BIN / "pre-commit"), "try-repo", str(ROOT), hook, "--files", "config.py"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _assert_blocked(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "config.py:1:8: AWS Access Key AKIA…(20)" in done.stdout
    assert FAKES["aws_id"] not in done.stdout + done.stderr


def test_try_repo_blocks_a_staged_secret(tmp_path: Path) -> None:
    _assert_blocked(_try_repo(tmp_path, "codeeraser-scan-system"))


@pytest.mark.skipif(
    os.environ.get("CODEERASER_PRECOMMIT_INSTALL") != "1",
    reason="installs the package and torch in pre-commit's environment (minutes); "
    "set CODEERASER_PRECOMMIT_INSTALL=1",
)
def test_try_repo_with_the_python_hook_installs_and_blocks(tmp_path: Path) -> None:
    _assert_blocked(_try_repo(tmp_path, "codeeraser-scan"))


def _hook_repo(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str]:
    """This repository's hook manifest, committed alone (a system hook needs nothing else)."""
    hooks = tmp_path / "hook-repo"
    hooks.mkdir()
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", hooks)
    _git(hooks, env, "init", "-q")
    _git(hooks, env, "add", ".pre-commit-hooks.yaml")
    _git(hooks, env, "commit", "-q", "-m", "hooks")
    return hooks, _git(hooks, env, "rev-parse", "HEAD").stdout.strip()


def test_git_commit_fails_on_a_new_secret_and_passes_once_accepted(tmp_path: Path) -> None:
    env = _env(tmp_path)
    hooks, rev = _hook_repo(tmp_path, env)
    repo = _data_repo(tmp_path, env)
    hook = {"id": "codeeraser-scan-system", "args": ["--baseline", BASELINE]}
    config = {"repos": [{"repo": str(hooks), "rev": rev, "hooks": [hook]}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    subprocess.run([str(BIN / "pre-commit"), "install"], cwd=repo, env=env, check=True)
    accept = ["codeeraser", "scan-files", "--baseline", BASELINE, "--accept", "config.py"]
    subprocess.run(accept, cwd=repo, env=env, check=True, capture_output=True)
    _git(repo, env, "add", BASELINE, ".pre-commit-config.yaml")
    first = _git(repo, env, "commit", "-m", "accepted key")
    assert first.returncode == 0, first.stdout + first.stderr
    (repo / "deploy.sh").write_text(f"GH={FAKES['github']}\n", encoding="utf-8")
    _git(repo, env, "add", "deploy.sh")
    second = _git(repo, env, "commit", "-m", "new key")
    assert second.returncode == 1
    assert "deploy.sh:1:4: GitHub Token ghp_…(40)" in second.stdout + second.stderr
    assert FAKES["github"] not in second.stdout + second.stderr
    assert _git(repo, env, "rev-list", "--count", "HEAD").stdout.strip() == "1"
