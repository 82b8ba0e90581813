"""The policy: a YAML file that says what a model must not give away, and what to do.

A policy is data, never code: it is read with YAML's safe loader and validated by the
pydantic models below (unknown keys are errors). Every error becomes one `PolicyError`
line naming the file, the line and the field, e.g.
``policies/x.yaml:12: rules[1].limit: must be ≥ 0``. Every section and field has a
default, so ``rules: [{metric: extracted_greedy, limit: 0}]`` is a complete policy.

Relative paths in a policy (`scan.baseline`, `thresholds.unseen`, `remediation.retain`,
`utility.heldout`) are resolved against the folder of the policy file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from audit.corpus import CorpusSpec, Format, OnBad
from audit.errors import PolicyError
from audit.hub import HubRevision
from audit.measurements import Thresholds
from audit.suggest import close_matches
from gate import limits
from gate.policy_check import check_yaml_bounds, check_yaml_text, policy_problem
from gate.resources import builtin_policy, builtin_policy_names
from gate.rule_metrics import METRICS, metric_names
from gate.unlearn.settings import MethodName, UnlearnArgs

Fraction = Annotated[float, Field(ge=0, le=1)]


class _Section(BaseModel):
    """Strict, closed models: a typo in a key or a value of the wrong type is an error."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=True, allow_inf_nan=False
    )


class ScanOptions(_Section):
    """How the training data is read and scanned."""

    detectors: dict[str, bool] = Field(default_factory=dict)  # detector name -> on/off
    excludes: list[str] = Field(default_factory=list)  # glob patterns matched on the origin
    baseline: str | None = None  # findings JSONL of accepted findings, subtracted from the scan
    format: Format = Field(
        default="auto",
        description="How the data is stored: a folder, JSONL(.gz), Parquet, or a saved HF "
        "dataset (auto: from the path).",
    )
    text_field: str = Field(default="content", description="Record field with the text.")
    id_field: str = Field(
        default="id", description="Record field with the sample id (else <file>:<line or row>)."
    )
    on_bad_record: OnBad = Field(
        default="fail",
        description="A record that is not JSON or lacks the text field: stop, or skip and "
        "count it.",
    )

    def corpus_spec(self, path: Path, hub: HubRevision | None = None) -> CorpusSpec:
        """How to read the training data at `path` (or the Hub dataset `hub`) under these
        options."""
        return CorpusSpec(
            path=Path(path),
            fmt=self.format,
            text_field=self.text_field,
            id_field=self.id_field,
            excludes=tuple(self.excludes),
            on_bad_record=self.on_bad_record,
            hub=hub,
        )


class SampledAttack(_Section):
    """The sampled extraction attack: extracted if any of `samples` draws holds the secret."""

    enabled: bool = False
    samples: int = Field(default=20, ge=1, le=limits.MAX_SAMPLES)
    temperature: float = Field(default=0.8, gt=0)
    top_k: int = Field(default=40, ge=0, le=limits.MAX_TOP_K)  # 0: no top-k cut


class ExtractionOptions(_Section):
    """How each finding is probed."""

    prefix_tokens: int = Field(
        default=128,
        ge=1,
        le=limits.MAX_TOKENS,
        description="Tokens of code before a secret the attacker prompts with.",
    )
    secret_tokens: int = Field(
        default=32,
        ge=1,
        le=limits.MAX_TOKENS,
        description="Secret tokens measured at most; longer secrets are cut (truncated: true).",
    )
    max_findings: int | None = Field(
        default=None,
        ge=1,
        le=limits.MAX_FINDINGS,
        description="Measure a deterministic sample of this many findings (for huge corpora).",
    )
    sampled: SampledAttack = Field(default_factory=SampledAttack)


class ThresholdOptions(_Section):
    """Forgetting thresholds: a finding is memorized when MA or EL_10 reaches them."""

    ma: Fraction | Literal["auto"] = 0.45  # near the paper's CodeParrot-small (45.57%)
    el_10: Fraction | Literal["auto"] = 0.06  # near the paper's CodeParrot-small (5.49%)
    unseen: str | None = None  # code the model never saw, for `auto` (calibration)

    @property
    def needs_calibration(self) -> bool:
        return self.ma == "auto" or self.el_10 == "auto"

    def resolve(self, calibrated: Thresholds | None = None) -> Thresholds:
        """The thresholds in force: numbers from the policy, `auto` ones from calibration."""
        if not self.needs_calibration:
            return Thresholds(ma=_number_of(self.ma), el_10=_number_of(self.el_10), source="policy")
        if calibrated is None:
            raise PolicyError("thresholds: `auto` needs a calibration on thresholds.unseen")
        both_auto = self.ma == "auto" and self.el_10 == "auto"
        return Thresholds(
            ma=_number_of(self.ma, calibrated.ma),
            el_10=_number_of(self.el_10, calibrated.el_10),
            source=calibrated.source if both_auto else f"policy+{calibrated.source}",
        )


def _number_of(value: float | str, calibrated: float | None = None) -> float:
    if isinstance(value, int | float):
        return float(value)
    if calibrated is None:
        raise PolicyError("thresholds: `auto` needs a calibration on thresholds.unseen")
    return calibrated


class Rule(_Section):
    """One check: the metric's value over the findings must be at most `limit`."""

    id: str | None = None  # a name for reports; default: the metric (and types)
    metric: str
    limit: float = Field(ge=0)
    secret_types: list[str] | None = Field(default=None, min_length=1)
    severity: Literal["block", "warn"] = "block"
    description: str | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            close = close_matches(value, metric_names())
            raise ValueError(
                f"unknown metric {value!r}{close} (valid: {', '.join(metric_names())})"
            )
        return value

    @property
    def name(self) -> str:
        if self.id:
            return self.id
        if self.secret_types:
            return f"{self.metric}[{','.join(self.secret_types)}]"
        return self.metric


def _default_rules() -> list[Rule]:
    return [
        Rule(id="no-greedy-extraction", metric="extracted_greedy", limit=0),
        Rule(id="memorized-rate", metric="memorized_rate", limit=0.01),
    ]


class VerifyOptions(_Section):
    """The re-measure after erasing: more than the prompts the erasure was trained on."""

    sampled: bool = True  # also run the sampled attack on the remediated model
    prefix_tokens: int | None = Field(default=None, ge=1, le=limits.MAX_TOKENS)  # default: half
    # the erased secrets' mean MA may exceed never-seen ones' by at most this (null: shown only)
    never_seen_margin: float | None = Field(default=None, ge=0, le=1)


RemediationTarget = Literal["at-risk", "offending"]


class RemediationOptions(_Section):
    """What to do when the policy fails."""

    enabled: bool = True
    # at-risk: every finding memorized (MA or EL_10) or extracted by any attack;
    # offending: only the findings that break a blocking rule (the report says which)
    target: RemediationTarget = "at-risk"
    max_rounds: int = Field(default=3, ge=1, le=limits.MAX_ROUNDS)  # erase → measure rounds
    method: MethodName = "codeeraser"
    args: UnlearnArgs = Field(default_factory=UnlearnArgs)  # gate.unlearn.settings
    retain: str | None = None  # clean code to preserve; default: corpus samples without findings
    verify: VerifyOptions = Field(default_factory=VerifyOptions)


class UtilityBudget(_Section):
    """How much utility the erasure may cost; checked only when the model was changed."""

    max_perplexity_increase: float | None = Field(default=0.05, ge=0)  # 0.05 is +5%; null: none
    max_humaneval_drop: float | None = Field(default=None, ge=0, le=1)  # pass@1, absolute
    heldout: str | None = None  # code for the perplexity check; default: the unseen code
    max_heldout_samples: int = Field(default=200, ge=1, le=limits.MAX_WINDOWS)


ReportFormat = Literal["html", "json", "sarif", "md"]


def _all_formats() -> list[ReportFormat]:
    return list(get_args(ReportFormat))


class ReportOptions(_Section):
    """Which report files to write (record.json is always written)."""

    formats: list[ReportFormat] = Field(default_factory=_all_formats, min_length=1)
    title: str = "CodeEraser Gate audit"
    max_findings_listed: int = Field(default=500, ge=1, le=limits.MAX_LISTED)  # HTML rows


class Policy(_Section):
    """A whole policy file."""

    version: Literal[1] = 1
    name: str | None = None
    description: str | None = None
    scan: ScanOptions = Field(default_factory=ScanOptions)
    extraction: ExtractionOptions = Field(default_factory=ExtractionOptions)
    thresholds: ThresholdOptions = Field(default_factory=ThresholdOptions)
    rules: list[Rule] = Field(default_factory=_default_rules, min_length=1)
    remediation: RemediationOptions = Field(default_factory=RemediationOptions)
    utility: UtilityBudget = Field(default_factory=UtilityBudget)
    report: ReportOptions = Field(default_factory=ReportOptions)

    _source: str = PrivateAttr(default="<built-in defaults>")
    _sha256: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        """The file the policy was read from (or a note that it was built in code)."""
        return self._source

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the policy file's bytes, for provenance."""
        return self._sha256

    @property
    def verify_prefix_tokens(self) -> int:
        """The second prefix length used to re-measure after remediation."""
        return self.remediation.verify.prefix_tokens or max(1, self.extraction.prefix_tokens // 2)

    def resolved(self) -> dict[str, Any]:
        """The policy with every default filled in, as plain JSON data."""
        return self.model_dump(mode="json", by_alias=True)


def field_paths(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every field of the schema as a dotted path (`remediation.args.lambda`), for docs."""
    model = model or Policy
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.serialization_alias or info.alias or name}"
        paths.append(path)
        inner = _model_in(info.annotation)
        if inner is not None:
            paths.extend(field_paths(inner, f"{path}[]." if inner is Rule else f"{path}."))
    return paths


# ---------------------------------------------------------------- loading


def load_policy(source: str | Path, overrides: Mapping[str, Any] | None = None) -> Policy:
    """Read and validate a policy file, or a built-in one by name (`default`, `strict`, `demo`).

    `overrides` maps dotted keys (``"thresholds.unseen"``) to values applied before
    validation, for options a command line supplies. Raises PolicyError.
    """
    path = _locate(source)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limits.MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy ({exc.strerror})") from None
    if len(raw) > limits.MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: larger than {limits.MAX_POLICY_BYTES >> 10} KB: not a policy")
    text = _decode(path, raw)
    data, lines = _parse_yaml(path, text)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    policy = _validate(path, data, lines)
    policy = _resolve_paths(policy, path.parent)
    policy._source = str(path)
    policy._sha256 = hashlib.sha256(raw).hexdigest()
    return policy


def _locate(source: str | Path) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    if isinstance(source, str) and "/" not in source and not path.suffix:
        builtin = builtin_policy(source)
        if builtin is not None:
            return builtin
        names = ", ".join(builtin_policy_names())
        raise PolicyError(f"{source}: no such policy file or built-in policy (built-in: {names})")
    raise PolicyError(f"{path}: no such policy file")


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(f"{path}:{line}: not valid UTF-8") from None


LineMap = dict[tuple[str | int, ...], int]


def _parse_yaml(path: Path, text: str) -> tuple[dict[str, Any], LineMap]:
    """The YAML data and, for every mapping key and list item, its 1-based line."""
    check_yaml_text(path, text)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        check_yaml_bounds(path, node)  # before anything expands its aliases
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PolicyError(f"{path}:{line}: not valid YAML ({problem})") from None
    except RecursionError:
        raise PolicyError(
            f"{path}: nested more than {limits.MAX_POLICY_DEPTH} levels deep: not a policy"
        ) from None
    if node is None:
        raise PolicyError(f"{path}:1: the policy is empty (see policies/default.yaml)")
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        line = node.start_mark.line + 1
        raise PolicyError(f"{path}:{line}: a policy is a YAML mapping of sections (rules: ...)")
    lines: LineMap = {(): node.start_mark.line + 1}
    _index_lines(path, node, (), lines)
    return data, lines


def _index_lines(path: Path, node: yaml.Node, loc: tuple[str | int, ...], lines: LineMap) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise PolicyError(f"{path}:{line}: {_dotted((*loc, key))}: duplicate key")
            seen.add(key)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _index_lines(path, value_node, (*loc, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _index_lines(path, item, (*loc, index), lines)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    target = data
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    if target.get(last) is None:
        target[last] = value


def _validate(path: Path, data: dict[str, Any], lines: LineMap) -> Policy:
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise _policy_error(path, exc, lines) from None
    problem = _consistency_problem(policy)
    if problem is not None:
        loc, message = problem
        raise PolicyError(f"{path}:{_line_of(loc, lines)}: {_dotted(loc)}: {message}")
    return policy


def _consistency_problem(policy: Policy) -> tuple[tuple[str | int, ...], str] | None:
    """Checks across sections, as (field location, message), or None."""
    th = policy.thresholds
    if th.needs_calibration and not th.unseen:
        key = "ma" if th.ma == "auto" else "el_10"
        return ("thresholds", key), "`auto` needs thresholds.unseen: code the model never saw"
    ids = [rule.name for rule in policy.rules]
    for index, rule in enumerate(policy.rules):
        spec = METRICS[rule.metric]
        if spec.unit == "fraction" and rule.limit > 1:
            return ("rules", index, "limit"), "must be ≤ 1 for a fraction metric (1% is 0.01)"
        if rule.metric == "extracted_sampled" and not policy.extraction.sampled.enabled:
            return ("rules", index, "metric"), "needs extraction.sampled.enabled: true"
        if rule.name in ids[:index]:
            return ("rules", index, "id"), f"rule name {rule.name!r} is used twice"
    return policy_problem(policy)  # names that match nothing, budgets that cannot be checked


def _resolve_paths(policy: Policy, base: Path) -> Policy:
    def resolve(value: str | None) -> str | None:
        return None if value is None else str((base / Path(value).expanduser()).resolve())

    return policy.model_copy(
        update={
            "scan": policy.scan.model_copy(update={"baseline": resolve(policy.scan.baseline)}),
            "thresholds": policy.thresholds.model_copy(
                update={"unseen": resolve(policy.thresholds.unseen)}
            ),
            "remediation": policy.remediation.model_copy(
                update={"retain": resolve(policy.remediation.retain)}
            ),
            "utility": policy.utility.model_copy(
                update={"heldout": resolve(policy.utility.heldout)}
            ),
        }
    )


# ---------------------------------------------------------------- error messages


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(loc: Sequence[str | int], lines: LineMap) -> int:
    """The line of the deepest part of `loc` that the YAML file has."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return 1


def _policy_error(path: Path, exc: ValidationError, lines: LineMap) -> PolicyError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _clean_loc(first["loc"])
    others = {_clean_loc(e["loc"]) for e in errors} - {loc}  # a union reports each branch
    more = f" (and {len(others)} more)" if others else ""
    message = _message(first, loc)
    return PolicyError(f"{path}:{_line_of(loc, lines)}: {_dotted(loc)}: {message}{more}")


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch labels (`float`, `literal['auto']`) from a location."""
    return tuple(p for p in loc if isinstance(p, int) or not _is_branch_label(p))


def _is_branch_label(part: str) -> bool:
    return part in {"float", "int", "str", "bool", "list[str]", "none"} or part.startswith(
        ("literal[", "function-", "constrained-")
    )


_TYPE_NAMES = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


_BOUNDS = {
    "greater_than_equal": ("≥", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("≤", "le"),
    "less_than": ("<", "lt"),
}


def _message(error: Any, loc: tuple[str | int, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        return f"unknown key (valid: {', '.join(valid)})" if valid else "unknown key"
    if kind in _TYPE_NAMES:
        found = error.get("input")
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if _numeric_text(found) else ""
        return f"must be {_TYPE_NAMES[kind]}, not {_describe(found)}{hint}"
    if kind in _BOUNDS:
        sign, key = _BOUNDS[kind]
        return f"must be {sign} {_number(ctx.get(key))}"
    simple = {
        "missing": "required field is missing",
        "value_error": str(ctx.get("error", error["msg"])),
        "literal_error": f"must be one of {ctx.get('expected')}",
        "finite_number": "must be a finite number (not .inf or .nan)",
    }
    return simple.get(kind, str(error["msg"]))


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _numeric_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    return type(value).__name__.replace("NoneType", "empty")


def _valid_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the model at `loc` accepts (aliases where set)."""
    model: Any = Policy
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        field = fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [f.serialization_alias or f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `Rule`, `list[Rule]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
