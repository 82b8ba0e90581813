"""The GitHub Actions files pass zizmor and their JSON schemas, and the lint catches regressions.

`make ci-lint` runs the same tools on the real files; these tests prove that each check
can fail: a copy of a file with one safeguard removed must be rejected.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CI = ROOT / ".github" / "workflows" / "ci.yml"
EXAMPLE = ROOT / "examples" / "release-workflow.yml"
ACTION = ROOT / ".github" / "actions" / "codeeraser-gate" / "action.yml"
FILES = (CI, EXAMPLE, ACTION)
# owner/repo[/path]@<full commit hash> # v<release tag>
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+){1,2}$")


def tool(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is missing: run `make install` (it is in the dev extra)"
    return str(path)


def zizmor(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--color", "never", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_real_files_pass_zizmor() -> None:
    done = zizmor(*FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout


def test_every_uses_is_pinned_to_a_commit_with_its_tag() -> None:
    seen = 0
    for path in FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^\s*(?:- )?uses: (.*)$", line)
            if match and not match.group(1).startswith("./"):
                seen += 1
                assert PINNED.match(match.group(1).strip()), f"{path.name}: {line.strip()}"
    assert seen >= 9  # checkout, setup-python, cache restore and save, upload, codeql, gate


def _unpin(text: str) -> str:
    return re.sub(r"actions/checkout@[0-9a-f]{40} # (v\d+)[.\d]*", r"actions/checkout@\1", text)


def _drop_persist(text: str) -> str:
    return text.replace("persist-credentials: false", "fetch-depth: 1")


def _drop_permissions(text: str) -> str:
    return re.sub(r"\n *permissions:.*(\n +[a-z-]+: (read|write).*)*", "", text)


def _inline_input(text: str) -> str:
    return text.replace('--model "$CE_MODEL"', '--model "${{ inputs.model }}"')


@pytest.mark.parametrize(
    ("source", "change", "audit"),
    [
        (CI, _unpin, "unpinned-uses"),
        (EXAMPLE, _drop_persist, "artipacked"),
        (CI, _drop_permissions, "excessive-permissions"),
        (ACTION, _inline_input, "template-injection"),
    ],
)
def test_zizmor_rejects_a_regression(
    tmp_path: Path, source: Path, change: Callable[[str], str], audit: str
) -> None:
    text = source.read_text(encoding="utf-8")
    broken = change(text)
    assert broken != text
    copy = tmp_path / source.name
    copy.write_text(broken, encoding="utf-8")
    done = zizmor(copy)
    assert done.returncode != 0
    assert f"[{audit}]" in done.stdout


@pytest.mark.parametrize(
    ("schema", "path", "typo"),
    [
        ("vendor.github-workflows", CI, ("runs-on:", "runs_on:")),
        ("vendor.github-workflows", EXAMPLE, ("timeout-minutes: 360", "timeout-minutes: soon")),
        ("vendor.github-actions", ACTION, ("using: composite", "using: compost")),
    ],
)
def test_files_match_their_schema_and_a_broken_copy_does_not(
    tmp_path: Path, schema: str, path: Path, typo: tuple[str, str]
) -> None:
    done = schema_check(schema, path)
    assert done.returncode == 0, done.stdout + done.stderr
    text = path.read_text(encoding="utf-8")
    assert typo[0] in text
    broken = tmp_path / path.name
    broken.write_text(text.replace(*typo), encoding="utf-8")
    done = schema_check(schema, broken)
    assert done.returncode == 1
    assert "Schema validation errors" in done.stdout
