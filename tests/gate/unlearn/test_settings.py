"""The one schema of the unlearning settings: policy keys, aliases, errors, bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audit.errors import InputError, PolicyError
from gate.policy import load_policy
from gate.unlearn.settings import METHOD_NAMES, UnlearnArgs, UnlearnConfig


def test_every_setting_has_help_text() -> None:
    fields = UnlearnConfig.model_fields
    assert not [name for name, info in fields.items() if not info.description]


def test_a_policy_sets_every_setting_under_its_policy_key(tmp_path: Path) -> None:
    changed = UnlearnArgs(
        lr=1e-3, lam=0.2, epochs=7, patience=0, kl_cache="topk", max_grad_norm=0.5,
        weight_decay=0.01, retain_windows=3, reference="frozen", lora_targets=("c_attn",),
        checkpoint_every=2,
    )  # fmt: skip
    args = changed.model_dump(mode="json", by_alias=True)
    assert {"lambda", "max_epochs", "kl_reference"} <= args.keys()
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"remediation": {"method": "cu", "args": args}}))
    policy = load_policy(path)
    assert policy.remediation.args == changed
    config = UnlearnConfig.of(policy.remediation.method, policy.remediation.args)
    assert (config.method, config.args()) == ("cu", changed)


def test_a_policy_and_the_code_refuse_the_same_values(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    for args, where in (({"patience": -1}, "patience"), ({"kl_reference": "base"}, "needs LoRA")):
        path.write_text(yaml.safe_dump({"remediation": {"args": args}}))
        with pytest.raises(PolicyError, match=where):
            load_policy(path)
        with pytest.raises(InputError, match=where):
            UnlearnConfig.of("codeeraser", args)


def test_old_policy_keys_still_name_their_settings() -> None:
    config = UnlearnConfig.of("ga", {"kl_weight": 0.3, "epochs": 2})
    assert (config.lam, config.epochs) == (0.3, 2)
    assert UnlearnConfig.of("ga", {"lam": 0.4}).lam == 0.4


def test_bookkeeping_settings_are_not_part_of_the_result() -> None:
    settings = UnlearnConfig(checkpoint_every=3).result_settings()
    assert "checkpoint_every" not in settings
    assert settings == UnlearnConfig(checkpoint_every=0).result_settings()
    assert {"lr", "method", "seed"} <= settings.keys()


def test_the_method_names_are_the_registered_methods() -> None:
    from gate.unlearn.methods import METHODS

    assert set(METHOD_NAMES) == set(METHODS)


@pytest.mark.parametrize(("given", "kept"), [(True, "on"), (False, "off"), ("auto", "auto")])
def test_a_policys_checkpointing_switch_still_reads_as_on_or_off(given: object, kept: str) -> None:
    args = UnlearnArgs.model_validate({"gradient_checkpointing": given})
    assert args.gradient_checkpointing == kept
    assert UnlearnArgs().gradient_checkpointing == "auto"
