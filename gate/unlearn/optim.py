"""The loop's optimizer: AdamW, its two moments in float32 or in bfloat16.

AdamW keeps two moments per trained weight. In float32 they are 8 bytes a weight, twice
the weights themselves: on a 135M model 1.08 GB of the erase's 2.15 GB of weights,
gradients and states, and on a 7B model 56 GB. Kept in bfloat16 (`BF16AdamW`) they
take half that. The update itself is computed in float32: a weight's moments are read
into float32, updated with its gradient, rounded back to bfloat16 for the next step, and
this step's update uses the unrounded values. The rounding changes a moment by at most
2^-9 of itself (bfloat16 keeps 8 significant bits), far below what the rate and the
gradient's own noise change between steps; float32 weights and gradients are kept.

`optimizer_states: auto` (the default) takes bfloat16 for models of at least
`AUTO_BF16_PARAMS` trainable weights, where the states are the largest thing the erase
holds, and float32 below, where they are a few megabytes and saving them buys nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

BETAS = (0.9, 0.98)  # the reference's
AUTO_BF16_PARAMS = 20_000_000  # trainable weights from which `auto` keeps bf16 moments


def states_dtype(setting: str, params: Iterable[torch.nn.Parameter]) -> str:
    """The moments' dtype a run uses: the setting, `auto` resolved by the model's size."""
    if setting != "auto":
        return setting
    count = sum(p.numel() for p in params if p.requires_grad)
    return "bfloat16" if count >= AUTO_BF16_PARAMS else "float32"


def make_optimizer(
    params: list[torch.nn.Parameter], *, lr: float, weight_decay: float, states: str
) -> torch.optim.Optimizer:
    """AdamW over `params` with the loop's betas, its moments in `states` (a resolved
    `states_dtype`: float32 or bfloat16)."""
    if states == "bfloat16":
        return BF16AdamW(params, lr=lr, betas=BETAS, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=BETAS, weight_decay=weight_decay)


class BF16AdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments, no amsgrad) with both
    moments stored in bfloat16 and the update computed in float32."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        betas: tuple[float, float] = BETAS,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad.float(), group)
        return loss

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.bfloat16)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        m = state["exp_avg"].float().mul_(beta1).add_(grad, alpha=1 - beta1)
        v = state["exp_avg_sq"].float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        state["exp_avg"].copy_(m)
        state["exp_avg_sq"].copy_(v)
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        denom = v.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
        p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**step))
