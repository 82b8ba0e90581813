from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate.github import OUTPUT_NAMES, format_output, in_github_actions, publish, verdict_word
from tests.gate import fakes

ACTION = (
    Path(__file__).resolve().parents[2] / ".github" / "actions" / "codeeraser-gate" / "action.yml"
)


def read_outputs(path: Path) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT the way the runner does (name=value and heredocs)."""
    values, lines = {}, iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[name] = "\n".join(body)
        else:
            name, value = line.split("=", 1)
            values[name] = value
    return values


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
    }


def test_nothing_is_written_outside_github_actions(tmp_path: Path) -> None:
    env = {**env_for(tmp_path), "GITHUB_ACTIONS": ""}
    assert publish(fakes.build_record(), "## s", tmp_path / "report.html", env) is False
    assert list(tmp_path.iterdir()) == []
    assert not in_github_actions({})


def test_summary_and_outputs_after_remediation(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    (tmp_path / "summary").write_text("earlier step\n", encoding="utf-8")
    record = fakes.build_record()
    assert publish(record, "## CodeEraser Gate: PASSED", tmp_path / "out" / "report.html", env)
    summary = (tmp_path / "summary").read_text(encoding="utf-8")
    assert summary == "earlier step\n## CodeEraser Gate: PASSED\n"
    assert read_outputs(tmp_path / "output") == {
        "verdict": "passed",
        "model-path": "/out/remediated-model",
        "report": str(tmp_path / "out" / "report.html"),
        "remediated": "true",
    }


def test_outputs_of_a_failed_run(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    publish(fakes.build_record(fakes.LEAKY, fakes.PARTLY), None, None, env)
    outputs = read_outputs(tmp_path / "output")
    assert outputs == {"verdict": "failed", "model-path": "", "report": "", "remediated": "false"}
    assert not (tmp_path / "summary").exists()


def test_missing_output_files_are_skipped(tmp_path: Path) -> None:
    assert publish(fakes.build_record(), "x", None, {"GITHUB_ACTIONS": "true"}) is True


def test_multiline_value_cannot_inject_another_output() -> None:
    text = format_output("report", "a\nverdict=passed")
    name, rest = text.split("<<", 1)
    delimiter = rest.split("\n", 1)[0]
    assert name == "report"
    assert delimiter.startswith("ghadelimiter_")
    assert len(delimiter) > 20
    assert text.endswith(f"\n{delimiter}\n")
    assert format_output("verdict", "passed") == "verdict=passed\n"


@pytest.mark.parametrize(
    ("outcome", "word"),
    [("passed", "passed"), ("remediated", "passed"), ("failed", "failed"), ("error", "error")],
)
def test_verdict_words(outcome: str, word: str) -> None:
    assert verdict_word(outcome) == word


def test_action_exposes_the_outputs_the_gate_writes() -> None:
    action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    outputs = action["outputs"]
    assert {"verdict", "model-path", "report"} <= set(outputs) <= set(OUTPUT_NAMES)
    for name, spec in outputs.items():
        assert spec["value"] == f"${{{{ steps.gate.outputs.{name} }}}}"
    assert {"model", "data", "policy", "out", "python-version", "torch"} <= set(action["inputs"])
    steps = action["runs"]["steps"]
    gate = next(s for s in steps if s.get("id") == "gate")
    assert re.search(r'codeeraser"? gate', gate["run"])
    assert "${{" not in gate["run"]  # inputs reach the script through env, never inlined
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "always()" in upload["if"]
    for step in steps:
        if "run" in step:  # every script at least parses as bash
            subprocess.run(["bash", "-n"], input=step["run"], text=True, check=True)


def test_gate_step_passes_inputs_as_separate_arguments(tmp_path: Path) -> None:
    """Run the action's gate script with a stand-in `codeeraser` that prints its argv."""
    action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    gate = next(s for s in action["runs"]["steps"] if s.get("id") == "gate")
    fake = tmp_path / "codeeraser-venv" / "bin" / "codeeraser"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "RUNNER_TEMP": str(tmp_path),
        "CE_MODEL": "models/my coder",
        "CE_DATA": "data/$(touch pwned).jsonl",
        "CE_POLICY": "default",
        "CE_OUT": "out",
        "CE_EXTRA_ARGS": "--device cuda -v",
    }
    done = subprocess.run(
        ["bash", "-c", gate["run"]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "gate",
        "--model",
        "models/my coder",
        "--data",
        "data/$(touch pwned).jsonl",
        "--policy",
        "default",
        "--out",
        "out",
        "--device",
        "cuda",
        "-v",
    ]
    assert not (tmp_path / "pwned").exists()
    empty = subprocess.run(
        ["bash", "-c", gate["run"]],
        env={**env, "CE_EXTRA_ARGS": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert empty.stdout.splitlines()[-1] == "out"


def _steps() -> list[dict[str, Any]]:
    action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    steps: list[dict[str, Any]] = action["runs"]["steps"]
    return steps


def _step(step_id: str) -> dict[str, Any]:
    return next(s for s in _steps() if s.get("id") == step_id)


def test_hf_token_reaches_only_the_gate_step_and_only_through_its_environment() -> None:
    for step in _steps():
        text = yaml.safe_dump(step)
        if step.get("id") == "gate":
            assert step["env"]["HF_TOKEN"] == "${{ inputs.hf-token }}"
            assert "hf-token" not in step["run"]
            assert [k for k, v in step["env"].items() if "hf-token" in v] == ["HF_TOKEN"]
        else:
            assert "hf-token" not in text
            assert "HF_TOKEN" not in text


def _fake_codeeraser(tmp_path: Path) -> None:
    fake = tmp_path / "codeeraser-venv" / "bin" / "codeeraser"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        '#!/usr/bin/env bash\nprintf "%s\\n" "$@" "token=${HF_TOKEN-<unset>}"\n', encoding="utf-8"
    )
    fake.chmod(0o755)


@pytest.mark.parametrize(("token", "seen"), [("", "<unset>"), ("hf_notreal123", "hf_notreal123")])
def test_gate_step_hands_the_token_over_in_the_environment(
    tmp_path: Path, token: str, seen: str
) -> None:
    _fake_codeeraser(tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "RUNNER_TEMP": str(tmp_path),
        "HF_TOKEN": token,
        "CE_MODEL": "org/coder@v1.0",
        "CE_DATA": "org/train-data",
        "CE_POLICY": "default",
        "CE_OUT": "out",
        "CE_EXTRA_ARGS": "",
    }
    done = subprocess.run(
        ["bash", "-xc", _step("gate")["run"]], env=env, capture_output=True, text=True, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[:5] == ["gate", "--model", "org/coder@v1.0", "--data", "org/train-data"]
    assert lines[-1] == f"token={seen}"
    assert not token or token not in done.stderr  # not on any traced command line


def _hub_key(tmp_path: Path, model: str, data: str) -> str:
    output = tmp_path / "output"
    output.write_text("", encoding="utf-8")
    env = {
        "PATH": "/usr/bin:/bin",
        "RUNNER_OS": "Linux",
        "GITHUB_OUTPUT": str(output),
        "CE_MODEL": model,
        "CE_DATA": data,
    }
    script = _step("hub")["run"]
    subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, check=True)
    return read_outputs(output).get("key", "")


def test_hub_cache_key_follows_the_hub_ids_and_revisions(tmp_path: Path) -> None:
    (tmp_path / "models" / "coder").mkdir(parents=True)
    (tmp_path / "train.jsonl").write_text("{}\n", encoding="utf-8")
    assert _hub_key(tmp_path, "models/coder", "train.jsonl") == ""  # local: nothing to cache
    pinned = _hub_key(tmp_path, "org/coder@abc123", "train.jsonl")
    assert re.fullmatch(r"codeeraser-hf-Linux-[0-9a-f]{32}", pinned)
    assert _hub_key(tmp_path, "org/coder@abc123", "train.jsonl") == pinned  # stable
    others = {
        _hub_key(tmp_path, "org/coder@def456", "train.jsonl"),
        _hub_key(tmp_path, "org/coder", "train.jsonl"),
        _hub_key(tmp_path, "org/coder@abc123", "org/data"),
        _hub_key(tmp_path, "models/coder", "org/data"),
    }
    assert pinned not in others
    assert len(others) == 4


def test_hub_cache_steps_are_pinned_and_keep_the_token_file_out() -> None:
    steps = _steps()
    restore, save = (
        next(s for s in steps if str(s.get("uses", "")).startswith(f"actions/cache/{kind}@"))
        for kind in ("restore", "save")
    )
    for step in (restore, save):
        # only the download cache: ~/.cache/huggingface/token must never become a cache
        assert step["with"]["path"] == "~/.cache/huggingface/hub"
        assert step["with"]["key"] == "${{ steps.hub.outputs.key }}"
    assert _step("hub")["if"] == "inputs.hf-cache == 'true'"
    assert "steps.hub.outputs.key != ''" in restore["if"]
    assert "!cancelled()" in save["if"]
    order = [s.get("name") for s in steps]
    assert order.index(restore["name"]) < order.index(_step("gate")["name"])
    assert order.index(save["name"]) > order.index(_step("gate")["name"])
