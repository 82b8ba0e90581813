"""Unlearning methods: one class per method, each overriding one loss, found by name.

Every method sees the same inputs (a `ForgetView` of a forget batch, a `RetainView`
of a retain batch) and returns a `Loss` to *minimize*. Minimizing −CE is gradient
ascent on CE: the model becomes worse at predicting those tokens. The maths
(design §5; S = secret positions still to forget, C = the other real positions that
hold no secret, A = all real positions; every mean is over positions, pads excluded):

==============  =====================================================  ==============
method          loss on a forget batch                                 on a retain batch
==============  =====================================================  ==============
``ga``          −mean_A CE                                             none
``cu``          −mean_A CE − λ·KL_A                                    λ·α·KL_A
``codeeraser``  −mean_S CE + γ·mean_C CE − λ·KL_S                      λ·α·KL_A
==============  =====================================================  ==============

with KL_X = mean over X of KL(p0‖pθ), p0 the original model. On a forget batch the
−λ·KL term rewards moving *away* from p0 where the model should forget (it is a
divergence bonus, as in the reference implementation); on a retain batch +λ·α·KL keeps
the model close to p0 on clean code. CodeEraser's +γ·CE on C keeps the code around a
secret predictable while the secret itself is pushed out.

Which secret positions make up S is the loop's choice (`UnlearnConfig.ascend_on`):
the secret tokens of the findings still to forget ("all", the paper), or only those of
them the model still predicts greedily ("predicted", the default): −CE is unbounded,
and a token already pushed out would otherwise keep taking the ascent's step size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

from audit.errors import InputError
from gate.unlearn.losses import TokenStats, masked_mean, masked_values_mean

if TYPE_CHECKING:
    from torch import Tensor

KLPositions = Literal["none", "all", "secret"]


@dataclass(frozen=True)
class Hyper:
    """Loss weights (reference defaults)."""

    alpha: float = 1.0  # weight of the retain KL relative to the forget KL
    lam: float = 0.1  # λ: weight of the KL terms
    gamma: float = 0.1  # γ: weight of the descent on the context tokens (codeeraser)


@dataclass(frozen=True)
class ForgetView:
    """One forget batch as the loss sees it; masks are label-aligned (B, L).

    `stats` hold pθ reduced to each label position (`gate.unlearn.losses.TokenStats`):
    the NLL at every real token, the KL to p0 at the method's `forget_kl` positions (a
    superset of S for codeeraser), None when the method needs no p0."""

    stats: TokenStats
    valid: Tensor  # A: real tokens
    secret: Tensor  # S: secret tokens still to forget
    context: Tensor  # C: real tokens that are no secret's


@dataclass(frozen=True)
class RetainView:
    """One retain batch; `stats.kl` holds the KL to p0 at every real position."""

    stats: TokenStats
    valid: Tensor


@dataclass(frozen=True)
class Loss:
    """A scalar to minimize and its named parts (detached floats, for progress output)."""

    value: Tensor
    parts: dict[str, float] = field(default_factory=dict)


def _parts(**values: Tensor) -> dict[str, float]:
    return {name: float(value.detach()) for name, value in values.items()}


class UnlearningMethod(ABC):
    """Base class: a forget loss, and optionally a retain loss."""

    name: ClassVar[str]
    forget_kl: ClassVar[KLPositions] = "none"  # where forget losses need p0
    retain_kl: ClassVar[bool] = False  # whether retain losses need p0 (and a retain set)

    def __init__(self, hyper: Hyper | None = None) -> None:
        self.hyper = hyper or Hyper()

    @abstractmethod
    def forget_loss(self, view: ForgetView) -> Loss:
        """The loss on a forget batch."""

    def retain_loss(self, view: RetainView) -> Loss | None:
        """The loss on a retain batch; None: the method does not use a retain set."""
        return None


METHODS: dict[str, type[UnlearningMethod]] = {}
_M = TypeVar("_M", bound=type[UnlearningMethod])


def register(cls: _M) -> _M:
    """Class decorator: make a method available by its `name`."""
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[UnlearningMethod]:
    """The method class called `name`; an unknown name lists the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        valid = ", ".join(sorted(METHODS))
        raise InputError(f"unknown unlearning method {name!r} (valid: {valid})") from None


def _kl(stats: TokenStats, mask: Tensor, method: str) -> Tensor:
    """Mean KL(p0‖pθ) over the positions of `mask`."""
    if stats.kl is None:
        raise ValueError(f"the {method} loss needs p0's log-probs and got none")
    return masked_values_mean(stats.kl, mask)


@register
class GradientAscent(UnlearningMethod):
    """Vanilla gradient ascent: L_forget = −mean_A CE; no retain loss."""

    name = "ga"

    def forget_loss(self, view: ForgetView) -> Loss:
        ce = masked_mean(view.stats.nll, view.valid)
        return Loss(-ce, _parts(ce_all=ce))


class _KLConstrained(UnlearningMethod):
    """Methods that keep pθ close to p0 on clean code: L_retain = λ·α·KL_A."""

    retain_kl = True

    def retain_loss(self, view: RetainView) -> Loss | None:
        kl = _kl(view.stats, view.valid, self.name)
        return Loss(self.hyper.lam * self.hyper.alpha * kl, _parts(kl_retain=kl))


@register
class ConstraintUnlearning(_KLConstrained):
    """Constraint-based unlearning: L_forget = −mean_A CE − λ·KL_A."""

    name = "cu"
    forget_kl = "all"

    def forget_loss(self, view: ForgetView) -> Loss:
        ce = masked_mean(view.stats.nll, view.valid)
        kl = _kl(view.stats, view.valid, self.name)
        return Loss(-ce - self.hyper.lam * kl, _parts(ce_all=ce, kl_all=kl))


@register
class CodeEraser(_KLConstrained):
    """CodeEraser: L_forget = −mean_S CE + γ·mean_C CE − λ·KL_S."""

    name = "codeeraser"
    forget_kl = "secret"

    def forget_loss(self, view: ForgetView) -> Loss:
        ce_secret = masked_mean(view.stats.nll, view.secret)
        ce_context = masked_mean(view.stats.nll, view.context)
        kl = _kl(view.stats, view.secret, self.name)
        value = -ce_secret + self.hyper.gamma * ce_context - self.hyper.lam * kl
        return Loss(value, _parts(ce_secret=ce_secret, ce_context=ce_context, kl_secret=kl))
