"""The unlearning settings: one typed schema for the policy, the command line and the loop.

Every setting is one field of `UnlearnArgs`, with its type, range, default and help.
Three surfaces are made from it, so a new setting is one field here:

- a policy's ``remediation.args`` section is an `UnlearnArgs` (`gate.policy`);
- ``codeeraser erase`` has one option per field (`gate.commands.options.options_from`):
  ``--<policy key>`` with ``_`` as ``-``, or the field's own ``flag``;
- the unlearning loop's `UnlearnConfig` is `UnlearnArgs` plus the method.

A setting's policy key is its field name, or the name it is written under
(``lambda`` for `lam`, ``max_epochs`` for `epochs`, ``kl_reference`` for `reference`);
both are accepted. Checks across settings (the base-model reference needs LoRA) live
here too, so a policy and a command line fail the same way. This module imports
neither torch nor the loop: ``codeeraser erase --help`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from audit.corpus import CorpusSpec
from audit.errors import InputError
from gate import limits

Method = Literal["codeeraser", "ga", "cu"]  # registered in gate.unlearn.methods
METHOD_NAMES: tuple[str, ...] = get_args(Method)
Schedule = Literal["alternating", "joint"]
AscendOn = Literal["predicted", "all"]
RefKind = Literal["auto", "cached", "frozen", "base"]
CacheMode = Literal["auto", "full", "topk"]
MixedPrecision = Literal["no", "bf16", "fp16"]
StatesDtype = Literal["auto", "float32", "bfloat16"]
Checkpointing = Literal["auto", "on", "off"]

DEFAULT_WINDOW_TOKENS = 512  # forget window length (paper)
DEFAULT_RETAIN_TOKENS = 128  # retain window length (paper)
DEFAULT_RETAIN_WINDOWS = 64  # retain windows kept (cycled through, k at a time)
DEFAULT_TRAIN_BATCH_TOKENS = 16384  # padded tokens per micro-batch: 32 windows of 512
DEFAULT_TRAIN_BATCH_MB = 256  # activations per micro-batch: a 135M model on a 2-core runner
DEFAULT_TOPK = 64  # tokens kept per position by the top-k cache
DEFAULT_BUDGET_MB = 512  # the most memory `auto` spends on an exact cache


def _known_method(value: object) -> object:
    if isinstance(value, str) and value not in METHOD_NAMES:
        raise PydanticCustomError(
            "unknown_method",
            "unknown method '{name}' (valid: {valid})",
            {"name": value, "valid": ", ".join(METHOD_NAMES)},
        )
    return value


MethodName = Annotated[Method, BeforeValidator(_known_method)]


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


Names = Annotated[tuple[str, ...], BeforeValidator(_as_tuple)]


def setting(
    default: Any,
    text: str,
    *,
    key: str | None = None,
    also: tuple[str, ...] = (),
    flag: str | None = None,
    metavar: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    bookkeeping: bool = False,
) -> Any:
    """A field of the schema: `text` for --help and the docs; `key`: the policy key when
    it is not the field name (`also`: further accepted keys); `flag`: the option when it
    is not ``--<key>``; `ge`, `gt`, `le`: its bounds (`gate.limits`); `bookkeeping`: the
    setting does not change the result (a resumed run may change it)."""
    extra: dict[str, str | bool] = {
        name: value
        for name, value in (("flag", flag), ("metavar", metavar), ("bookkeeping", bookkeeping))
        if value
    }
    names = (key, *also) if key else also
    options: dict[str, Any] = {"description": text, "ge": ge, "gt": gt, "le": le}
    if names:
        options |= {"serialization_alias": key, "validation_alias": AliasChoices(*names)}
    if extra:
        options["json_schema_extra"] = extra
    return Field(default, **options)


class UnlearnArgs(BaseModel):
    """Every unlearning setting but the method; defaults are the paper's (billion-parameter
    models). A policy's ``remediation.args``."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = setting(
        3e-6,
        "AdamW learning rate: a number (constant), or auto: sized by a short probe on "
        "the model at hand, lowered when the retain KL drifts and raised when forgetting "
        "stalls (docs/policy.md, 'lr: auto').",
        metavar="LR|auto",
    )
    auto_kl: float = setting(
        0.005,
        "lr auto: the retain KL (nats per token) the probe's rate may reach after "
        "auto_probe_steps steps.",
        gt=0,
    )
    auto_kl_max: float = setting(
        0.02,
        "lr auto: the retain KL over which the loop lowers the rate and keeps no weights.",
        gt=0,
    )
    auto_ppl_max: float | None = setting(
        None,
        "lr auto: the held-out perplexity increase (0.02: +2%) since the erase started "
        "over which the loop lowers the rate and keeps no weights; null: the retain KL "
        "(auto_kl_max) steers. The gate sets it from utility.max_perplexity_increase.",
        gt=0,
    )
    heldout_tokens: int = setting(
        4096,
        "Held-out tokens whose perplexity is checked after every epoch (0: none).",
        ge=0,
        le=limits.MAX_TOKENS,
    )
    auto_probe_steps: int = setting(
        2, "lr auto: steps per rate tried by the probe.", ge=1, le=limits.MAX_EPOCHS
    )
    auto_probe_windows: int = setting(
        4, "lr auto: forget windows the probe steps on.", ge=1, le=limits.MAX_BATCH_SIZE
    )
    alpha: float = setting(1.0, "α: weight of the retain KL.", ge=0)
    lam: float = setting(0.1, "λ: weight of the KL terms.", key="lambda", also=("kl_weight",), ge=0)
    gamma: float = setting(
        0.1, "γ: weight of the descent on the code around a secret (codeeraser).", ge=0
    )
    batch_size: int = setting(
        32, "k: forget windows (and retain windows) per step.", ge=1, le=limits.MAX_BATCH_SIZE
    )
    epochs: int = setting(
        100,
        "Most epochs (passes over the secrets still to forget).",
        key="max_epochs",
        flag="--epochs",
        ge=1,
        le=limits.MAX_EPOCHS,
    )
    patience: int = setting(
        5,
        "Stop after this many epochs without a lower leak (0: never).",
        ge=0,
        le=limits.MAX_EPOCHS,
    )
    window_tokens: int = setting(
        DEFAULT_WINDOW_TOKENS,
        "Forget window length (cut to the model's context).",
        ge=2,
        le=limits.MAX_TOKENS,
    )
    retain_tokens: int = setting(
        DEFAULT_RETAIN_TOKENS,
        "Retain window length (cut to the model's context).",
        ge=2,
        le=limits.MAX_TOKENS,
    )
    retain_windows: int = setting(
        DEFAULT_RETAIN_WINDOWS,
        "Retain windows drawn from the clean code.",
        ge=1,
        le=limits.MAX_WINDOWS,
    )
    ascend_on: AscendOn = setting(
        "predicted",
        "Secret tokens ascended on (codeeraser): the ones the model still predicts "
        "greedily, or all of them (the paper; costs more utility).",
    )
    schedule: Schedule = setting(
        "alternating",
        "alternating: an update on the forget batch, then one on the retain batch (the "
        "reference's); joint: one update from both losses.",
    )
    reference: RefKind = setting(
        "auto",
        "Original model's log-probs: cached once, a frozen model copy (the reference's "
        "way), or the base model with the LoRA adapters off (exact, no memory; needs "
        "lora). auto: base with lora, else cached.",
        key="kl_reference",
    )
    kl_cache: CacheMode = setting(
        "auto",
        "Cached log-probs: full vocabulary (exact), top-k + a tail bucket, or auto (full "
        "when it fits kl_cache_mb).",
    )
    kl_topk: int = setting(
        DEFAULT_TOPK, "Tokens kept per position by the top-k cache.", ge=1, le=limits.MAX_TOP_K
    )
    kl_cache_mb: int = setting(
        DEFAULT_BUDGET_MB,
        "Memory an exact cache may use before auto switches to top-k.",
        ge=0,
        le=limits.MAX_CACHE_MB,
    )
    max_grad_norm: float = setting(1.0, "Gradient clipping (0: off).", ge=0)
    weight_decay: float = setting(0.0, "AdamW weight decay (the reference's: 0).", ge=0)
    optimizer_states: StatesDtype = setting(
        "auto",
        "dtype of AdamW's two moments: float32, or bfloat16 (half the memory, the update "
        "still computed in float32); auto: bfloat16 from 20M trainable weights, where the "
        "states are the largest thing the erase holds, else float32.",
    )
    train_batch_tokens: int = setting(
        DEFAULT_TRAIN_BATCH_TOKENS,
        "Padded tokens per forward/backward micro-batch: a step's k windows are sorted by "
        "length and cut to fit, gradients accumulate, one update per step (0: no cut).",
        ge=0,
        le=limits.MAX_BATCH_TOKENS,
    )
    train_batch_mb: int = setting(
        DEFAULT_TRAIN_BATCH_MB,
        "Memory a micro-batch's activations may keep for the backward pass (MB): measured "
        "per token when the run starts, micro-batches are cut to fit it (at least one "
        "window) and train_batch_tokens; the output layer's logits take a sixteenth of "
        "it, a chunk of positions at a time. Raise it on a large GPU (0: tokens only).",
        ge=0,
        le=limits.MAX_CACHE_MB,
    )
    gradient_checkpointing: Checkpointing = setting(
        "auto",
        "Recompute activations in the backward pass (less memory, about a third more "
        "time): on, off, or auto: on when one window's activations are over "
        "train_batch_mb (the cut cannot go below one window), as measured when the run "
        "starts. true/false in a policy mean on/off.",
    )
    mixed_precision: MixedPrecision = setting(
        "no",
        "Autocast forward passes to bf16/fp16 with float32 master weights (through "
        "Accelerate: pip install 'codeeraser[dist]').",
    )
    lora: bool = setting(
        False,
        "Train LoRA adapters on the frozen model instead of every weight (pip install "
        "'codeeraser[lora]'); the output is the merged model.",
    )
    lora_rank: int = setting(16, "LoRA rank r.", ge=1, le=limits.MAX_RANK)
    lora_alpha: float = setting(32.0, "LoRA alpha (the adapters' scale is alpha / r).", gt=0)
    lora_targets: Names = setting(
        (),
        "Module name to adapt (repeatable). Default per architecture: GPT-2 c_attn, "
        "c_proj, c_fc; Llama-style q/k/v/o_proj, gate/up/down_proj; else every linear layer.",
        flag="--lora-target",
        metavar="NAME",
    )
    seed: int = setting(0, "Seed of the batch order and the retain sample.")
    # Bookkeeping: how the run is kept safe, not what it computes.
    checkpoint_every: int = setting(
        1,
        "Checkpoint every N epochs (0: only when stopped by Ctrl-C or SIGTERM).",
        ge=0,
        le=limits.MAX_EPOCHS,
        bookkeeping=True,
    )
    checkpoint_minutes: float = setting(
        0.0,
        "Also checkpoint after the step that ends this many minutes since the last "
        "checkpoint, mid-epoch too (0: off).",
        ge=0,
        le=limits.MAX_EPOCHS * 24 * 60,
        bookkeeping=True,
    )

    def result_settings(self) -> dict[str, Any]:
        """The settings the result depends on (all but the bookkeeping ones), by name."""
        fields = type(self).model_fields
        kept = {n for n, f in fields.items() if not _extra(f.json_schema_extra, "bookkeeping")}
        return self.model_dump(include=kept)

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        """A policy's true/false (the setting was a switch) as on/off."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _base_needs_lora(self) -> UnlearnArgs:
        if self.reference == "base" and not self.lora:
            raise ValueError("the base-model KL reference needs LoRA (lora)")
        return self


class UnlearnConfig(UnlearnArgs):
    """The loop's settings: the method and its `UnlearnArgs`. Built in code, a bad value
    is an InputError naming the setting."""

    method: MethodName = setting(
        "codeeraser",
        "codeeraser: ascent on the secret tokens only, descent on the code around them, "
        "KL to the original; cu: ascent on whole windows with KL; ga: plain gradient ascent.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _input_errors(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise InputError(describe(exc)) from None

    @classmethod
    def of(cls, method: str, args: UnlearnArgs | dict[str, Any]) -> UnlearnConfig:
        """The config of a policy's ``remediation.method`` and ``remediation.args`` (a
        mapping may use the policy keys: ``lambda``, ``max_epochs``)."""
        values = args.model_dump() if isinstance(args, UnlearnArgs) else dict(args)
        return cls.model_validate({**values, "method": method})

    @property
    def rate(self) -> float:
        """The learning rate in force (`auto` is resolved before the loop runs)."""
        if self.lr == "auto":
            raise ValueError("lr auto was not resolved by the probe")
        return self.lr

    @property
    def kl_reference(self) -> RefKind:
        """The reference in force: `auto` resolved (base under LoRA, else cached)."""
        if self.reference == "auto":
            return "base" if self.lora else "cached"
        return self.reference

    def args(self) -> UnlearnArgs:
        """The settings without the method."""
        return UnlearnArgs.model_validate(self.model_dump(exclude={"method"}))


def _extra(extra: object, key: str) -> object:
    return extra.get(key) if isinstance(extra, dict) else None


@dataclass(frozen=True)
class EraseOptions:
    """Everything about an erase run besides the model, data and findings."""

    config: UnlearnConfig = field(default_factory=UnlearnConfig)
    device: str = "auto"
    dtype: str = "auto"
    prefix_tokens: int = 128  # the attacker's prompt, as in `measure`
    also_prefix_tokens: int = 0  # a second prompt length the loop measures too (0: none)
    batch_tokens: int = 16384  # padded tokens per measuring batch
    retain: CorpusSpec | None = None  # clean code; default: corpus samples with no finding
    heldout: CorpusSpec | None = None  # held-out code for perplexity before and after
    heldout_findings: tuple[Path, ...] = ()  # its samples named here are left out
    humaneval: int = 0  # HumanEval problems for pass@1 before and after (0: off)
    force: bool = False  # replace an existing output folder
    resume: bool = False  # continue from the checkpoint of an interrupted run, if any


def describe(exc: ValidationError) -> str:
    """One line for the first problem: the setting and what is wrong with it."""
    errors = exc.errors(include_url=False)
    error = errors[0]
    name = _field_name(error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown unlearning argument {name!r}"
    # a setting of several kinds (lr: a number or auto) fails once per kind
    same = (
        [e for e in errors if _field_name(e["loc"]) == name] if len(error["loc"]) > 1 else [error]
    )
    message = " or ".join(dict.fromkeys(_message(e) for e in same))
    return f"{name}: {message}" if name else message


def _field_name(loc: tuple[int | str, ...]) -> str:
    """A location without the union member names pydantic adds (`constrained-float`)."""
    return ".".join(str(p) for p in loc if isinstance(p, int) or str(p).isidentifier())


def _message(error: Any) -> str:
    text = str(error["msg"]).removeprefix("Value error, ")
    return text.replace("Input should be", "must be")
