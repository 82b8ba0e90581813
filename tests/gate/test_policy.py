from __future__ import annotations

import copy
import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import ExitCode, PolicyError
from gate.policy import Policy, field_paths, load_policy
from gate.resources import builtin_policy_names, policies_dir
from gate.rule_metrics import metric_names
from gate.unlearn.settings import METHOD_NAMES

POLICY_DOC = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# (policy text, expected line, expected field, a fragment of the message)
BAD_POLICIES = [
    ("rules:\n  - metric: extracted_greedy\n    limit: -1\n", 3, "rules[0].limit", "must be ≥ 0"),
    ("extraction:\n  prefx: 3\n", 2, "extraction.prefx", "unknown key (valid: prefix_tokens,"),
    ("remediation:\n  method: sgd\n", 2, "remediation.method", "valid: codeeraser, ga, cu"),
    ("rules:\n- metric: leaks\n  limit: 0\n", 2, "rules[0].metric", "unknown metric 'leaks'"),
    ("thresholds:\n  ma: auto\n", 2, "thresholds.ma", "needs thresholds.unseen"),
    ("thresholds:\n  ma: 0.3\n  el_10: auto\n", 3, "thresholds.el_10", "needs thresholds.unseen"),
    ("extraction:\n  prefix_tokens: many\n", 2, "extraction.prefix_tokens", "a whole number"),
    ("remediation:\n  args:\n    lr: 1e-4\n", 3, "remediation.args.lr", "write 1.0e-4"),
    ("rules:\n- metric: memorized_rate\n  limit: 5\n", 3, "rules[0].limit", "must be ≤ 1"),
    ("rules:\n- metric: extracted_sampled\n  limit: 0\n", 2, "rules[0].metric", "sampled.enabled"),
    ("rules:\n- metric: extracted_greedy\n", 2, "rules[0].limit", "required field is missing"),
    (
        "rules:\n- metric: max_ma\n  limit: 0.5\n  severity: fatal\n",
        4,
        "rules[0].severity",
        "'block'",
    ),
    ("scan: [1, 2]\n", 1, "scan", "must be a mapping"),
    ("rules: []\n", 1, "rules", "at least 1 item"),
    ("remediation:\n  enabled: maybe\n", 2, "remediation.enabled", "true or false"),
    ("name: a\nname: b\n", 2, "name", "duplicate key"),
    ("version: 2\n", 1, "version", "must be one of 1"),
    ("report:\n  formats: [pdf]\n", 2, "report.formats[0]", "must be one of"),
    ("utility:\n  max_perplexity_increase: -0.1\n", 2, "utility.max_perplexity_increase", "≥ 0"),
    ("thresholds:\n  ma: 1.5\n", 2, "thresholds.ma", "must be ≤ 1"),
    ("remediation:\n  args:\n    lr: .inf\n", 3, "remediation.args.lr", "a finite number"),
    ("rules:\n- metric: max_ma\n  limit: .nan\n", 3, "rules[0].limit", "a finite number"),
    (
        "rules:\n- metric: max_ma\n  limit: 0.5\n  secret_types: AWS\n",
        4,
        "rules[0].secret_types",
        "a list",
    ),
    (
        "rules:\n- {id: a, metric: extracted_greedy, limit: 0}\n"
        "- {id: a, metric: max_ma, limit: 0.5}\n",
        3,
        "rules[1].id",
        "used twice",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "fragment"), BAD_POLICIES)
def test_bad_policy_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {field}: "), message
    assert fragment in message
    assert "\n" not in message
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rules: [\n", ":2: not valid YAML"),
        ("- just\n- a list\n", ":1: a policy is a YAML mapping"),
        ("", ":1: the policy is empty"),
        ("# only a comment\n", ":1: the policy is empty"),
        ("thresholds: !!python/object/apply:os.system ['echo hacked']\n", ":1: not valid YAML"),
    ],
)
def test_not_a_policy(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(str(path))
    assert fragment in str(caught.value)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    with pytest.raises(PolicyError, match=r"latin1\.yaml:2: not valid UTF-8"):
        load_policy(path)
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match="built-in: default, demo, strict"):
        load_policy("nonexistent")


def test_minimal_policy_gets_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "rules:\n- metric: extracted_greedy\n  limit: 0\n"))
    assert [r.name for r in policy.rules] == ["extracted_greedy"]
    assert policy.remediation.enabled is True
    assert policy.remediation.method == "codeeraser"
    args = policy.remediation.args
    assert (args.lr, args.alpha, args.lam, args.gamma) == (3e-6, 1.0, 0.1, 0.1)
    assert (args.batch_size, args.epochs) == (32, 100)
    assert policy.utility.max_perplexity_increase == 0.05
    assert policy.report.formats == ["html", "json", "sarif", "md"]
    assert policy.verify_prefix_tokens == 64
    assert policy.sha256 is not None
    assert len(policy.sha256) == 64


def test_empty_mapping_means_default_rules(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "{}\n"))
    assert [(r.metric, r.limit) for r in policy.rules] == [
        ("extracted_greedy", 0),
        ("memorized_rate", 0.01),
    ]


def test_rule_names_from_metric_and_types(tmp_path: Path) -> None:
    text = (
        "rules:\n- metric: max_ma\n  limit: 0.5\n"
        "  secret_types: [AWS Access Key, GitHub Token]\n  severity: warn\n"
    )
    rule = load_policy(write(tmp_path, text)).rules[0]
    assert rule.name == "max_ma[AWS Access Key,GitHub Token]"
    assert rule.severity == "warn"


def test_relative_paths_resolve_against_the_policy_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ci"
    folder.mkdir()
    text = (
        "thresholds:\n  ma: auto\n  el_10: auto\n  unseen: ../unseen\n"
        "scan:\n  baseline: base.jsonl\n"
    )
    policy = load_policy(write(folder, text))
    assert policy.thresholds.unseen == str((tmp_path / "unseen").resolve())
    assert policy.scan.baseline == str((folder / "base.jsonl").resolve())
    assert policy.thresholds.needs_calibration


def test_overrides_fill_unset_fields_before_validation(tmp_path: Path) -> None:
    path = write(tmp_path, "thresholds:\n  ma: auto\n  el_10: auto\n")
    policy = load_policy(path, overrides={"thresholds.unseen": str(tmp_path)})
    assert policy.thresholds.unseen == str(tmp_path.resolve())
    kept = load_policy(
        write(tmp_path, "thresholds:\n  ma: 0.2\n", "b.yaml"), {"thresholds.ma": 0.9}
    )
    assert kept.thresholds.ma == 0.2  # an override never replaces what the file sets


def test_lambda_key_and_resolved_dump(tmp_path: Path) -> None:
    policy = load_policy(
        write(tmp_path, "remediation:\n  args:\n    lambda: 0.3\n    lr: 1.0e-4\n")
    )
    assert policy.remediation.args.lam == 0.3
    resolved = policy.resolved()
    assert resolved["remediation"]["args"]["lambda"] == 0.3
    assert Policy.model_validate(resolved).resolved() == resolved


@pytest.mark.parametrize("name", builtin_policy_names())
def test_every_shipped_policy_loads_and_is_commented(name: str) -> None:
    policy = load_policy(name)
    assert policy.name == name
    assert policy.source == str(policies_dir() / f"{name}.yaml")
    for number, line in enumerate(policy_lines(name), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"{name}.yaml:{number} has no comment"


def policy_lines(name: str) -> list[str]:
    return (policies_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines()


def test_shipped_policies_say_what_the_issue_asks() -> None:
    default, strict, demo = (load_policy(n) for n in ("default", "strict", "demo"))
    assert {(r.metric, r.limit) for r in default.rules} == {
        ("extracted_greedy", 0),
        ("memorized_rate", 0.01),
    }
    assert default.remediation.enabled
    assert default.utility.max_perplexity_increase == 0.05
    assert strict.extraction.sampled.enabled
    assert ("memorized_count", 0) in {
        (r.metric, r.limit) for r in strict.rules if r.severity == "block"
    }
    assert strict.utility.max_humaneval_drop is not None
    assert default.remediation.args.lr == "auto"  # sized to the model (issue 13)
    assert default.remediation.target == "at-risk"
    assert default.remediation.max_rounds > 1
    assert demo.remediation.args.lr == 1e-3  # the demo's own model: a fixed rate


def test_methods_are_the_documented_ones() -> None:
    assert METHOD_NAMES == ("codeeraser", "ga", "cu")


def test_policy_reference_lists_every_field_and_metric() -> None:
    text = POLICY_DOC.read_text(encoding="utf-8")
    section = text.split("\n## Built-in policies", 1)[0]
    missing = [p for p in field_paths() if f"`{p}`" not in section]
    assert not missing, missing
    assert not [m for m in metric_names() if f"`{m}`" not in section]


def test_thresholds_resolve_from_policy_and_calibration(tmp_path: Path) -> None:
    from audit.measurements import Thresholds

    calibrated = Thresholds(ma=0.08, el_10=0.01, source="calibrated:/unseen")
    fixed = Policy().thresholds.resolve()
    assert fixed == Thresholds(ma=0.45, el_10=0.06, source="policy")
    assert Policy().thresholds.resolve(calibrated).source == "policy"  # numbers win
    text = "thresholds:\n  ma: auto\n  el_10: 0.2\n  unseen: u\n"
    mixed = load_policy(write(tmp_path, text)).thresholds.resolve(calibrated)
    assert mixed == Thresholds(ma=0.08, el_10=0.2, source="policy+calibrated:/unseen")
    text = "thresholds:\n  ma: auto\n  el_10: auto\n  unseen: u\n"
    auto = load_policy(write(tmp_path, text, "b.yaml")).thresholds
    assert auto.resolve(calibrated) == calibrated
    with pytest.raises(PolicyError, match="needs a calibration"):
        auto.resolve()


def test_scan_options_give_the_corpus_spec(tmp_path: Path) -> None:
    text = "scan:\n  format: jsonl\n  text_field: code\n  excludes: ['tests/*']\n"
    spec = load_policy(write(tmp_path, text)).scan.corpus_spec(tmp_path / "d.jsonl")
    assert (spec.fmt, spec.text_field, spec.excludes) == ("jsonl", "code", ("tests/*",))
    assert spec.path == tmp_path / "d.jsonl"


# ---------------------------------------------------------------- fuzzing

_KEYS = sorted({part for path in field_paths() for part in path.split(".")} | {"x", "1", ""})
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["auto", "codeeraser", "extracted_greedy", "block", "html", "1e-4", "-1"])
    | st.text(max_size=12)
)
_YAML_DATA = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
_SETTINGS = settings(max_examples=150, deadline=None, database=None)


def _loads_or_refuses(path: Path) -> None:
    """A policy, or a one-line PolicyError naming the file: never another exception."""
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        message, code = str(exc), exc.exit_code
    else:
        assert isinstance(policy, Policy)
        assert policy.rules
        return
    assert message.startswith((f"{path}:", f"{path} ")), message
    assert "\n" not in message
    assert code == ExitCode.USAGE


def _set_path(data: Any, path: list[str | int], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _leaf_paths(data: Any, prefix: tuple[str | int, ...] = ()) -> list[list[str | int]]:
    if isinstance(data, dict):
        items: list[tuple[str | int, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return [list(prefix)]
    paths = [list(prefix)] if prefix else []
    for key, value in items:
        paths += _leaf_paths(value, (*prefix, key))
    return paths


@functools.cache
def _default_policy_data() -> dict[str, Any]:
    return load_policy("default").resolved()


@_SETTINGS
@given(draw=st.data())
def test_fuzz_a_mutated_valid_policy_is_a_policy_or_a_policy_error(draw: st.DataObject) -> None:
    """The default policy, every field written out, with up to three values replaced."""
    data = copy.deepcopy(_default_policy_data())
    for _ in range(draw.draw(st.integers(1, 3))):
        paths = _leaf_paths(data)
        _set_path(data, draw.draw(st.sampled_from(paths)), draw.draw(_YAML_DATA))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        _loads_or_refuses(path)


@_SETTINGS
@given(data=st.dictionaries(st.sampled_from(_KEYS), _YAML_DATA, max_size=6))
def test_fuzz_any_yaml_mapping_is_a_policy_or_a_policy_error(data: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        _loads_or_refuses(path)


@_SETTINGS
@given(
    text=st.text(
        alphabet=st.sampled_from(list("abcdefgilmnoprstuxy_:-[]{},&*!|>'\"#%@` \t\n0123456789.")),
        max_size=120,
    )
)
def test_fuzz_any_text_is_a_policy_or_a_policy_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        _loads_or_refuses(path)


@_SETTINGS
@given(raw=st.binary(max_size=64))
def test_fuzz_any_bytes_are_a_policy_or_a_policy_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_bytes(raw)
        _loads_or_refuses(path)
