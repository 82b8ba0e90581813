"""LoRA (peft): unlearn by training low-rank adapters on a frozen base model.

Every method runs unchanged on the adapted model; only the adapters (a few MB) get
gradients and AdamW states, so training needs about the memory of inference plus the
activations. Two consequences:

- **p0 for free.** LoRA's B matrices start at zero, so the adapted model starts as the
  original one, and the frozen base with the adapters switched off
  (``model.disable_adapter()``) *is* p0 at every step, exactly: no cached log-probs and
  no second copy of the model (`BaseReference`). It costs one extra forward pass per
  batch without gradients.
- **The output is a merged model.** After training, the adapters are added into the
  base weights (in float32, on the CPU) and the result is saved like any model folder:
  it loads without peft. (The adapters alone are not written.)

Default target modules, per architecture: GPT-2 and StarCoder ``c_attn``, ``c_proj``,
``c_fc`` (attention and MLP); Llama-style models (Llama, Mistral, Qwen, Gemma, ...)
``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``,
``down_proj``; any other architecture every linear layer but the output head.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from audit.errors import InputError
from gate.unlearn.reference import LiveReference

INSTALL_HINT = "pip install 'codeeraser[lora]'"
_GPT2_STYLE = ("c_attn", "c_proj", "c_fc")
_LLAMA_STYLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": _GPT2_STYLE,
    "gpt_bigcode": _GPT2_STYLE,
    **{
        name: _LLAMA_STYLE
        for name in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3")
    },
}


def default_targets(model_type: str) -> tuple[str, ...] | str:
    """The modules to adapt for an architecture; "all-linear" when we know none."""
    return DEFAULT_TARGETS.get(model_type, "all-linear")


def add_adapters(
    model: torch.nn.Module, *, rank: int, alpha: float, targets: Sequence[str] = ()
) -> torch.nn.Module:
    """`model` with fresh LoRA adapters (B = 0: it still computes the original function);
    the base weights are frozen."""
    peft = _peft()
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", ""))
    chosen: list[str] | str = list(targets) if targets else _as_list(default_targets(model_type))
    settings = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,  # the loop runs without dropout
        target_modules=chosen,
        bias="none",
        fan_in_fan_out=model_type == "gpt2",  # GPT-2 stores its linear layers transposed
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():
            # peft 0.21 asks transformers 5.2x `is_gradient_checkpointing`, which transformers
            # deprecated in favour of `is_activation_checkpointing`: their matter, not the user's.
            warnings.filterwarnings(
                "ignore",
                message="`is_gradient_checkpointing` is deprecated",
                category=FutureWarning,
            )
            adapted: torch.nn.Module = peft.get_peft_model(model, settings)
    except ValueError as exc:
        first = str(exc).splitlines()[0][:200]
        raise InputError(f"LoRA target modules {chosen!r} do not fit this model: {first}") from None
    return adapted


def _as_list(targets: tuple[str, ...] | str) -> list[str] | str:
    return targets if isinstance(targets, str) else list(targets)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The base model with the adapters added into its weights, in float32 on the CPU
    (a bfloat16 base would round small adapter updates away); save casts it back."""

    model = model.to("cpu", torch.float32)
    merge = getattr(model, "merge_and_unload", None)
    if not callable(merge):
        return model
    result: torch.nn.Module = merge()
    return result


class BaseReference(LiveReference):
    """p0 as the base model with its adapters switched off (exact; holds no memory)."""

    kind = "base"
    nbytes = 0

    def __init__(self, model: torch.nn.Module) -> None:
        if not hasattr(model, "disable_adapter"):
            raise InputError("the base-model KL reference needs a LoRA model (--lora)")
        self.model = model

    def _as_p0(self) -> contextlib.AbstractContextManager[object]:
        context: contextlib.AbstractContextManager[object] = self.model.disable_adapter()  # type: ignore[operator]
        return context


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise InputError(f"--lora needs the peft package ({INSTALL_HINT})") from None
    return peft
