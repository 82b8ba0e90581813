"""Every name in a policy must be able to match: a property of the loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import detectors
from audit.errors import PolicyError
from gate.policy import load_policy
from gate.policy_check import detector_types, enabled_types

TYPES = sorted(set().union(*detector_types().values()))
NAMES = sorted(detector_types())
MUTATED = [t.lower() for t in TYPES[:5]] + [t + "s" for t in TYPES[:5]] + ["", " ", "Password"]


def _policy(switches: dict[str, bool], rules: list[list[str] | None]) -> str:
    body = [
        {
            "metric": "extracted_greedy",
            "limit": 0,
            **({"secret_types": t} if t is not None else {}),
            "id": f"r{i}",
        }
        for i, t in enumerate(rules)
    ]
    return yaml.safe_dump({"scan": {"detectors": switches}, "rules": body})


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    switches=st.dictionaries(
        st.sampled_from([*NAMES, "NoSuchDetector"]), st.booleans(), max_size=12
    ),
    rules=st.lists(
        st.none() | st.lists(st.sampled_from(TYPES + MUTATED), min_size=1, max_size=3),
        min_size=1,
        max_size=4,
    ),
)
def test_an_accepted_policy_has_no_rule_that_matches_nothing(
    tmp_path: Path, switches: dict[str, bool], rules: list[list[str] | None]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(_policy(switches, rules))
    try:
        policy = load_policy(path)
    except PolicyError:
        return  # refused: the loader's messages are tested in test_policy.py
    enabled = enabled_types(policy.scan.detectors)
    assert enabled  # at least one detector is on
    for rule in policy.rules:
        assert rule.secret_types is None or set(rule.secret_types) <= enabled


def test_the_types_come_from_the_registry_at_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector registered after this module was written is known to the loader."""
    path = tmp_path / "policy.yaml"
    path.write_text(_policy({}, [["Quantum Key"]]))
    with pytest.raises(PolicyError, match="'Quantum Key' matches no secret type"):
        load_policy(path)

    class QuantumKeyDetector(detectors.Detector):
        name = "QuantumKeyDetector"
        secret_type = "Quantum Key"
        keywords = ("qk-",)

    real = detectors._all_detectors()
    monkeypatch.setattr(detectors, "_all_detectors", lambda: (*real, QuantumKeyDetector()))
    assert load_policy(path).rules[0].secret_types == ["Quantum Key"]


def test_older_detector_names_are_accepted_and_switch_their_successors(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = _policy({"SlackDetector": False, "KeywordAssignmentDetector": False}, [None])
    path.write_text(text)
    policy = load_policy(path)
    off = {"SlackTokenDetector", "SlackWebhookDetector", "KeywordDetector", "XmlElementDetector"}
    selected = detectors.select_detectors(policy.scan.detectors)
    assert selected is not None
    assert not off & set(selected)
    assert "Slack Token" in enabled_types({"SlackDetector": True})
