"""Held-out perplexity during the erase: a small slice of the held-out code, checked
after every epoch, so that the loop sees the utility budget it spends while it spends
it (the retain KL, measured on training code, tracks it only loosely).

The slice is the first held-out texts up to `tokens` tokens (whole texts, at least
one), in the order given: the same slice every epoch and on resume. Its perplexity on
the weights the erase started from is the baseline (kept in the checkpoint, so that a
resumed run compares with the same figure).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from audit.utility import perplexity


def heldout_slice(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, tokens: int
) -> list[str]:
    """The first texts whose tokens add up to at least `tokens` (all when fewer)."""
    chosen: list[str] = []
    count = 0
    for text in texts:
        if count >= tokens:
            break
        chosen.append(text)
        count += len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return chosen


class HeldoutSlice:
    """Perplexity of the current weights on the slice, against `baseline`."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        baseline: float | None = None,
    ) -> None:
        self.model, self.tokenizer, self.texts = model, tokenizer, list(texts)
        self.baseline = baseline if baseline is not None else self.perplexity()

    def perplexity(self) -> float:
        return perplexity(self.model, self.tokenizer, self.texts).perplexity

    def change(self) -> float:
        """Relative increase since the baseline (−0.01: 1% lower)."""
        return self.perplexity() / self.baseline - 1.0
