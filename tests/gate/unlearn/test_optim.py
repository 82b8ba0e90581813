"""AdamW with bfloat16 moments: close to torch's AdamW, half its state, resumable."""

from __future__ import annotations

import pytest
import torch

from gate.unlearn.optim import (
    AUTO_BF16_PARAMS,
    BF16AdamW,
    make_optimizer,
    states_dtype,
)


def _train(optimizer_for: type[torch.optim.Optimizer] | str, steps: int = 20) -> torch.Tensor:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(16, 8))
    target = torch.randn(16, 8)
    states = "bfloat16" if optimizer_for == "bf16" else "float32"
    optimizer = make_optimizer([weight], lr=1e-2, weight_decay=0.1, states=states)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.autograd.backward(((weight - target) ** 2).sum())
        optimizer.step()
    return weight.detach()


def test_it_follows_torchs_adamw_within_the_rounding_of_its_moments() -> None:
    start = _train("bf16", steps=0)
    ours, torchs = _train("bf16"), _train("fp32")
    moved = (torchs - start).abs().mean()
    assert moved > 0.05  # the weights did move
    assert (ours - torchs).abs().max() < 0.02 * moved  # the same path, within 2% (0.4% here)
    assert not torch.equal(ours, torchs)  # and it is not torch's optimizer under a name


def test_the_first_step_is_torchs_exactly_in_float32() -> None:
    # one step: the update uses the unrounded moments
    assert torch.equal(_train("bf16", steps=1), _train("fp32", steps=1))


def test_its_moments_are_bfloat16_and_its_state_survives_a_round_trip() -> None:
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = BF16AdamW([weight], lr=0.1, weight_decay=0.0)
    weight.grad = torch.full((4,), 0.5)
    optimizer.step()
    state = optimizer.state[weight]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16
    again = BF16AdamW([torch.nn.Parameter(weight.detach().clone())], lr=0.1)
    again.load_state_dict(optimizer.state_dict())
    assert float(next(iter(again.state.values()))["step"]) == 1.0


@pytest.mark.parametrize(
    ("setting", "count", "expected"),
    [
        ("auto", AUTO_BF16_PARAMS - 1, "float32"),
        ("auto", AUTO_BF16_PARAMS, "bfloat16"),
        ("float32", AUTO_BF16_PARAMS * 2, "float32"),
        ("bfloat16", 10, "bfloat16"),
    ],
)
def test_auto_keeps_bfloat16_moments_from_the_size_where_they_matter(
    setting: str, count: int, expected: str
) -> None:
    params = [torch.nn.Parameter(torch.empty(count, device="meta"))]
    frozen = [torch.nn.Parameter(torch.empty(count, device="meta"), requires_grad=False)]
    assert states_dtype(setting, params + frozen) == expected
